import Foundation
import FlowIR
import ZIPFoundation

/// Reads the zip archive `torch.save` writes (PyTorch >= 1.6):
/// `<prefix>/data.pkl` (the pickled state_dict), `<prefix>/data/<key>` (one raw storage per
/// key), `<prefix>/byteorder`, `<prefix>/version`. The prefix is the archive name chosen at
/// save time, so it is discovered from where `data.pkl` sits.
enum CheckpointTorchZip {
    /// A tensor may be larger than its storage only through zero strides (expanded views);
    /// cap that blow-up so a tiny hostile file cannot request an enormous allocation.
    static let maxExpandedElements = 1 << 24
    /// Bytes a storage may hold beyond the last element its tensors reach.
    static let maxUnusedStorageBytes = 1 << 20
    /// Upper bound for `data.pkl` itself.
    static let maxPickleBytes = 1 << 30

    static func read(url: URL, fileSize: Int, key: String? = nil, progress: ((Int, Int) -> Void)? = nil,
                     check: (([CheckpointTensorInfo]) throws -> Void)? = nil) throws -> [CheckpointTensor] {
        let path = url.path
        let archive: Archive
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw TarFlowError.checkpoint(.truncated, file: path,
                                  "not a readable zip archive (\(error)); the end-of-archive directory is missing or damaged",
                                  hint: "the file is truncated or corrupted; download or save it again")
        }
        let reader = EntryReader(archive: archive, file: path, fileSize: fileSize)

        // Index entries once (Archive's subscript is a linear scan).
        var entries: [String: Entry] = [:]
        var pickles: [String] = []
        for entry in archive where entry.type == .file {
            let name = entry.path
            guard entries[name] == nil else {
                throw TarFlowError.checkpoint(.malformedArchive, file: path, subject: name,
                                      "the archive holds two entries with this name",
                                      hint: "the file is corrupted or was tampered with")
            }
            entries[name] = entry
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 2, parts[1] == "data.pkl", !parts[0].isEmpty { pickles.append(String(parts[0])) }
        }
        guard pickles.count == 1, let prefix = pickles.first else {
            throw TarFlowError.checkpoint(.malformedArchive, file: path,
                                  pickles.isEmpty ? "the zip has no <name>/data.pkl entry, so it is not a torch.save archive"
                                                  : "the zip has several data.pkl entries (\(pickles.sorted().joined(separator: ", ")))",
                                  hint: "pass the file written by torch.save(model.state_dict(), path)")
        }

        if let entry = entries["\(prefix)/byteorder"] {
            let bytes = try reader.read(entry, name: "\(prefix)/byteorder", expected: nil, cap: 16)
            let order = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if order == "big" {
                throw TarFlowError.checkpoint(.bigEndian, file: path, subject: "\(prefix)/byteorder",
                                      "the checkpoint was saved on a big-endian machine",
                                      hint: "load and re-save it on a little-endian machine, or convert it to safetensors")
            }
            guard order == "little" else {
                throw TarFlowError.checkpoint(.malformedArchive, file: path, subject: "\(prefix)/byteorder",
                                      "unexpected byte order '\(order.prefix(16))'", hint: "expected 'little'")
            }
        }  // No record: written before PyTorch recorded it, which implies little-endian.

        guard let pickleEntry = entries["\(prefix)/data.pkl"] else {
            throw TarFlowError.checkpoint(.malformedArchive, file: path, "data.pkl disappeared from the index")
        }
        let pickle = try reader.read(pickleEntry, name: "\(prefix)/data.pkl", expected: nil, cap: maxPickleBytes)
        return try assemble(pickle: pickle, file: path, key: key, progress: progress, check: check) { key, nbytes, name in
            let entryName = "\(prefix)/data/\(key)"
            guard let entry = entries[entryName] else {
                throw TarFlowError.checkpoint(.malformedArchive, file: path, subject: name,
                                      "its storage entry \(entryName) is missing from the archive",
                                      hint: "the file is truncated or corrupted")
            }
            return try reader.read(entry, name: entryName, expected: nbytes, cap: Int.max)
        }
    }

    /// The tensors of a state_dict pickle, each storage's bytes supplied once by
    /// `storage(key, byteCount, firstTensorName)` (which must return exactly `byteCount` bytes).
    /// `check` sees every tensor's declared dtype and shape before any storage is loaded.
    static func assemble(pickle: [UInt8], file path: String, key: String? = nil, progress: ((Int, Int) -> Void)? = nil,
                         check: (([CheckpointTensorInfo]) throws -> Void)? = nil,
                         storage load: (String, Int, String) throws -> [UInt8]) throws -> [CheckpointTensor] {
        let refs = try CheckpointUnpickler.load(pickle, file: path, key: key)

        // Storages are read once, shared by every view into them, and dropped after last use.
        var remainingUses: [String: Int] = [:]
        var dtypes: [String: StorageInfo] = [:]
        for (name, ref) in refs {
            remainingUses[ref.storage.key, default: 0] += 1
            if let seen = dtypes[ref.storage.key] {
                guard seen.dtype == ref.storage.dtype, seen.numel == ref.storage.numel else {
                    throw TarFlowError.checkpoint(.malformedTensor, file: path, subject: name,
                                          "storage '\(ref.storage.key)' is declared both as \(seen.numel) x \(seen.dtype.rawValue) and as \(ref.storage.numel) x \(ref.storage.dtype.rawValue)",
                                          hint: "the checkpoint is corrupted")
                }
            } else {
                dtypes[ref.storage.key] = StorageInfo(dtype: ref.storage.dtype, numel: ref.storage.numel)
            }
        }

        // A storage may be larger than its views need (torch saves a sliced tensor's whole
        // storage), but not by more than `maxUnusedStorageBytes`: checked before any storage is
        // read, so a small file cannot declare gigabytes of deflated zeros that no tensor uses.
        var reach: [String: Int] = [:]
        for (name, ref) in refs {
            var last = ref.offset
            for (d, st) in zip(ref.shape, ref.stride) where d > 0 {
                guard let span = CheckpointMath.multiply(d - 1, st), let next = CheckpointMath.add(last, span) else {
                    throw TarFlowError.checkpoint(.malformedTensor, file: path, subject: name, "offset/stride arithmetic overflows")
                }
                last = next
            }
            let used = ref.shape.contains(0) ? 0 : last + 1
            reach[ref.storage.key] = max(reach[ref.storage.key] ?? 0, used)
        }
        for (key, info) in dtypes {
            let needed = reach[key] ?? 0, es = info.dtype.byteSize
            guard let unused = CheckpointMath.multiply(max(info.numel - needed, 0), es), unused <= maxUnusedStorageBytes else {
                throw TarFlowError.checkpoint(.limitExceeded, file: path, subject: key,
                                      "storage '\(key)' declares \(info.numel) elements but its tensors use \(needed)",
                                      hint: "the checkpoint is damaged or hostile; save the tensors with .clone() (their own storages)")
            }
        }

        try check?(refs.map { CheckpointTensorInfo(name: $0.name, dtype: $0.tensor.storage.dtype, shape: $0.tensor.shape) })

        var cache: [String: [UInt8]] = [:]
        progress?(0, refs.count)
        var tensors: [CheckpointTensor] = []
        tensors.reserveCapacity(refs.count)
        for (name, ref) in refs {
            let key = ref.storage.key
            let es = ref.storage.dtype.byteSize
            var storage: [UInt8]
            if let cached = cache.removeValue(forKey: key) {
                storage = cached
            } else {
                guard let nbytes = CheckpointMath.multiply(ref.storage.numel, es) else {
                    throw TarFlowError.checkpoint(.malformedTensor, file: path, subject: name, "storage byte size overflows")
                }
                storage = try load(key, nbytes, name)
                guard storage.count == nbytes else {
                    throw TarFlowError.checkpoint(.malformedArchive, file: path, subject: name,
                                          "storage '\(key)' holds \(storage.count) bytes but the pickle declares \(nbytes)",
                                          hint: "the checkpoint is corrupted")
                }
            }
            let uses = (remainingUses[key] ?? 1) - 1
            remainingUses[key] = uses
            let data = try materialize(storage: &storage, lastUse: uses == 0, ref: ref, name: name, file: path)
            if uses > 0 { cache[key] = storage }
            tensors.append(CheckpointTensor(name: name, tensor: data.withUnsafeBytes { Tensor(shape: ref.shape, dtype: ref.storage.dtype, decoding: $0) }))
            progress?(tensors.count, refs.count)
        }
        return tensors
    }

    private struct StorageInfo {
        var dtype: DType
        var numel: Int
    }

    /// Copies the (possibly strided, offset or shared) view into contiguous row-major bytes.
    /// The whole storage is handed over without copying when the view is exactly it.
    static func materialize(storage: inout [UInt8], lastUse: Bool, ref: CheckpointUnpickler.TensorRef,
                            name: String, file: String) throws -> [UInt8] {
        let es = ref.storage.dtype.byteSize
        let shape = ref.shape
        let stride = ref.stride
        guard let count = elementCount(shape), let outBytes = CheckpointMath.multiply(count, es) else {
            throw TarFlowError.checkpoint(.malformedTensor, file: file, subject: name, "element count of \(shape) overflows")
        }
        if count == 0 { return [] }
        let storageElements = storage.count / es
        // Highest element index reached, re-checked against the bytes actually read.
        var last = ref.offset
        for (d, s) in zip(shape, stride) {
            guard let span = CheckpointMath.multiply(d - 1, s), let next = CheckpointMath.add(last, span) else {
                throw TarFlowError.checkpoint(.malformedTensor, file: file, subject: name, "offset/stride arithmetic overflows")
            }
            last = next
        }
        guard ref.offset >= 0, last < storageElements else {
            throw TarFlowError.checkpoint(.malformedTensor, file: file, subject: name,
                                  "view (offset \(ref.offset), size \(shape), stride \(stride)) reaches element \(last) but storage '\(ref.storage.key)' holds \(storageElements)",
                                  hint: "the checkpoint is corrupted")
        }
        guard count <= storageElements || count <= maxExpandedElements else {
            throw TarFlowError.checkpoint(.limitExceeded, file: file, subject: name,
                                  "expanded view of \(count) elements from a storage of \(storageElements) exceeds the \(maxExpandedElements)-element limit",
                                  hint: "save the tensor with .contiguous() first")
        }

        // Row-major contiguity ignores dimensions of size 1, whose stride is arbitrary.
        var contiguous = true
        var expected = 1
        for i in stride.indices.reversed() where shape[i] != 1 {
            if stride[i] != expected { contiguous = false; break }
            expected *= shape[i]
        }
        if contiguous {
            let start = ref.offset * es
            if lastUse, start == 0, outBytes == storage.count {
                let whole = storage
                storage = []
                return whole
            }
            return Array(storage[start..<(start + outBytes)])
        }

        var out = [UInt8](repeating: 0, count: outBytes)
        let rank = shape.count
        let innerSize = shape[rank - 1]
        let innerStride = stride[rank - 1] * es
        storage.withUnsafeBytes { (src: UnsafeRawBufferPointer) in
            out.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) in
                guard let srcBase = src.baseAddress, let dstBase = dst.baseAddress else { return }
                var index = [Int](repeating: 0, count: rank)
                var written = 0
                while written < outBytes {
                    var element = ref.offset
                    for d in 0..<(rank - 1) { element += index[d] * stride[d] }
                    let from = srcBase + element * es
                    let to = dstBase + written
                    if innerStride == es {
                        to.copyMemory(from: from, byteCount: innerSize * es)
                    } else {
                        for j in 0..<innerSize {
                            (to + j * es).copyMemory(from: from + j * innerStride, byteCount: es)
                        }
                    }
                    written += innerSize * es
                    // Advance the outer multi-index (odometer over all but the last dimension).
                    var d = rank - 2
                    while d >= 0 {
                        index[d] += 1
                        if index[d] < shape[d] { break }
                        index[d] = 0
                        d -= 1
                    }
                }
            }
        }
        return out
    }

    /// Extracts entries with sizes checked against the file before reading and the CRC-32
    /// checked after, so a damaged archive fails with a message instead of garbage weights.
    private struct EntryReader {
        let archive: Archive
        let file: String
        let fileSize: Int

        func read(_ entry: Entry, name: String, expected: Int?, cap: Int) throws -> [UInt8] {
            let claimed = entry.uncompressedSize
            let stored = entry.compressedSize
            guard claimed <= UInt64(Int.max), stored <= UInt64(fileSize) else {
                throw TarFlowError.checkpoint(.truncated, file: file, subject: name,
                                      "entry claims \(stored) stored bytes but the file has \(fileSize)",
                                      hint: "the file is truncated or corrupted")
            }
            let size = Int(claimed)
            if let expected, size != expected {
                throw TarFlowError.checkpoint(.malformedArchive, file: file, subject: name,
                                      "entry holds \(size) bytes but the pickle declares \(expected)",
                                      hint: "the checkpoint is corrupted")
            }
            guard size <= cap else {
                throw TarFlowError.checkpoint(.limitExceeded, file: file, subject: name,
                                      "entry of \(size) bytes exceeds the \(cap)-byte limit")
            }
            if entry.isCompressed {
                // Deflate expands at most ~1032:1; anything claiming more is not a real entry.
                guard size / 1100 <= Int(stored) else {
                    throw TarFlowError.checkpoint(.malformedArchive, file: file, subject: name,
                                          "entry claims \(size) bytes from \(stored) compressed bytes",
                                          hint: "the archive is corrupted")
                }
            } else if size != Int(stored) {
                throw TarFlowError.checkpoint(.malformedArchive, file: file, subject: name,
                                      "stored entry has compressed size \(stored) but size \(size)",
                                      hint: "the archive is corrupted")
            }
            var out = [UInt8]()
            out.reserveCapacity(entry.isCompressed ? min(size, Int(stored) * 4) : size)
            var overflow = false
            let crc: CRC32
            do {
                crc = try archive.extract(entry, bufferSize: 1 << 20) { chunk in
                    if out.count + chunk.count > size {
                        overflow = true
                        throw CocoaError(.fileReadCorruptFile)
                    }
                    out.append(contentsOf: chunk)
                }
            } catch {
                throw TarFlowError.checkpoint(overflow ? .malformedArchive : .truncated, file: file, subject: name,
                                      overflow ? "entry decompresses to more than its declared \(size) bytes"
                                               : "cannot extract entry (\(error))",
                                      hint: "the file is truncated or corrupted; download or save it again")
            }
            guard out.count == size else {
                throw TarFlowError.checkpoint(.truncated, file: file, subject: name,
                                      "entry yielded \(out.count) of \(size) bytes",
                                      hint: "the file is truncated or corrupted; download or save it again")
            }
            guard crc == entry.checksum else {
                throw TarFlowError.checkpoint(.malformedArchive, file: file, subject: name,
                                      String(format: "CRC-32 mismatch (computed %08x, recorded %08x)", crc, entry.checksum),
                                      hint: "the file is corrupted; download or save it again")
            }
            return out
        }
    }
}
