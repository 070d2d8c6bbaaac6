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
            throw TarFlowError.checkpoint(.notAZipArchive(.init(error)), file: path)
        }
        let reader = EntryReader(archive: archive, file: path, fileSize: fileSize)

        // Index entries once (Archive's subscript is a linear scan).
        var entries: [String: Entry] = [:]
        var pickles: [String] = []
        for entry in archive where entry.type == .file {
            let name = entry.path
            guard entries[name] == nil else {
                throw TarFlowError.checkpoint(.duplicateEntry, file: path, subject: name)
            }
            entries[name] = entry
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 2, parts[1] == "data.pkl", !parts[0].isEmpty { pickles.append(String(parts[0])) }
        }
        guard pickles.count == 1, let prefix = pickles.first else {
            throw TarFlowError.checkpoint(.pickleEntries(prefixes: pickles), file: path)
        }

        if let entry = entries["\(prefix)/byteorder"] {
            let bytes = try reader.read(entry, name: "\(prefix)/byteorder", expected: nil, cap: 16)
            let order = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if order == "big" {
                throw TarFlowError.checkpoint(.bigEndian, file: path, subject: "\(prefix)/byteorder")
            }
            guard order == "little" else {
                throw TarFlowError.checkpoint(.unexpectedByteOrder(order), file: path, subject: "\(prefix)/byteorder")
            }
        }  // No record: written before PyTorch recorded it, which implies little-endian.

        guard let pickleEntry = entries["\(prefix)/data.pkl"] else {
            throw TarFlowError.checkpoint(.pickleEntryLost, file: path)
        }
        let pickle = try reader.read(pickleEntry, name: "\(prefix)/data.pkl", expected: nil, cap: maxPickleBytes)
        return try assemble(pickle: pickle, file: path, key: key, progress: progress, check: check) { key, nbytes, name in
            let entryName = "\(prefix)/data/\(key)"
            guard let entry = entries[entryName] else {
                throw TarFlowError.checkpoint(.storageEntryMissing(entry: entryName), file: path, subject: name)
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
                    throw TarFlowError.checkpoint(.storageConflict(storage: ref.storage.key, numel: seen.numel, dtype: seen.dtype, otherNumel: ref.storage.numel, otherDType: ref.storage.dtype), file: path, subject: name)
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
                    throw TarFlowError.checkpoint(.offsetStrideOverflow, file: path, subject: name)
                }
                last = next
            }
            let used = ref.shape.contains(0) ? 0 : last + 1
            reach[ref.storage.key] = max(reach[ref.storage.key] ?? 0, used)
        }
        for (key, info) in dtypes {
            let needed = reach[key] ?? 0, es = info.dtype.byteSize
            guard let unused = CheckpointMath.multiply(max(info.numel - needed, 0), es), unused <= maxUnusedStorageBytes else {
                throw TarFlowError.checkpoint(.unusedStorage(storage: key, numel: info.numel, used: needed), file: path, subject: key)
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
                    throw TarFlowError.checkpoint(.storageByteSizeOverflows, file: path, subject: name)
                }
                storage = try load(key, nbytes, name)
                guard storage.count == nbytes else {
                    throw TarFlowError.checkpoint(.storageBytes(storage: key, bytes: storage.count, declared: nbytes), file: path, subject: name)
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
            throw TarFlowError.checkpoint(.elementCountOverflows(shape: shape), file: file, subject: name)
        }
        if count == 0 { return [] }
        let storageElements = storage.count / es
        // Highest element index reached, re-checked against the bytes actually read.
        var last = ref.offset
        for (d, s) in zip(shape, stride) {
            guard let span = CheckpointMath.multiply(d - 1, s), let next = CheckpointMath.add(last, span) else {
                throw TarFlowError.checkpoint(.offsetStrideOverflow, file: file, subject: name)
            }
            last = next
        }
        guard ref.offset >= 0, last < storageElements else {
            throw TarFlowError.checkpoint(.viewOutsideStorage(offset: ref.offset, shape: shape, stride: stride, last: last, storage: ref.storage.key, elements: storageElements), file: file, subject: name)
        }
        guard count <= storageElements || count <= maxExpandedElements else {
            throw TarFlowError.checkpoint(.expandedViewTooLarge(elements: count, storageElements: storageElements, limit: maxExpandedElements), file: file, subject: name)
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
                throw TarFlowError.checkpoint(.entryLargerThanFile(stored: stored, fileSize: fileSize), file: file, subject: name)
            }
            let size = Int(claimed)
            if let expected, size != expected {
                throw TarFlowError.checkpoint(.entrySize(size: size, declared: expected), file: file, subject: name)
            }
            guard size <= cap else {
                throw TarFlowError.checkpoint(.entryTooLarge(size: size, limit: cap), file: file, subject: name)
            }
            if entry.isCompressed {
                // Deflate expands at most ~1032:1; anything claiming more is not a real entry.
                guard size / 1100 <= Int(stored) else {
                    throw TarFlowError.checkpoint(.entryRatio(size: size, stored: stored), file: file, subject: name)
                }
            } else if size != Int(stored) {
                throw TarFlowError.checkpoint(.storedEntrySizes(stored: stored, size: size), file: file, subject: name)
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
                throw TarFlowError.checkpoint(overflow ? .entryOverflows(size: size) : .cannotExtract(.init(error)), file: file, subject: name)
            }
            guard out.count == size else {
                throw TarFlowError.checkpoint(.entryShort(got: out.count, size: size), file: file, subject: name)
            }
            guard crc == entry.checksum else {
                throw TarFlowError.checkpoint(.crcMismatch(computed: crc, recorded: entry.checksum), file: file, subject: name)
            }
            return out
        }
    }
}

extension TarFlowError.CheckpointFailure.ZipRefusal {
    /// The refusal an error of ZIPFoundation (or of the system under it) stands for.
    init(_ error: any Error) {
        switch error {
        case Archive.ArchiveError.missingEndOfCentralDirectoryRecord: self = .noEndOfCentralDirectory
        case Archive.ArchiveError.invalidCRC32: self = .checksum
        case let e as POSIXError: self = .system(errno: e.code.rawValue)
        default: self = .other(name: "\(type(of: error)).\(error)")
        }
    }
}
