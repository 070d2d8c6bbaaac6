import Foundation
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Public types

/// One named tensor of a state dict, materialized as a contiguous row-major `Tensor` so callers
/// never deal with strides, storage sharing or file layout.
public struct CheckpointTensor: Sendable {
    public var name: String
    public var tensor: Tensor

    public init(name: String, tensor: Tensor) {
        self.name = name
        self.tensor = tensor
    }
}

/// A tensor as the checkpoint declares it, before its bytes are read: what a caller needs to
/// refuse a file whose tensors it cannot use without inflating or reading their data.
public struct CheckpointTensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// Entry point: reads a PyTorch `torch.save(state_dict)` zip archive or a safetensors file.
public enum Checkpoint {
    /// Reads every tensor of the checkpoint's state dict at `url`, in file order (pickle dict
    /// order for `.pth`, header order for safetensors). The format is chosen by content, not
    /// extension. A `.pth` may be a training checkpoint: its state dict is found at the top level
    /// or under `model`, `state_dict`, `ema` or `model_ema` (`key` names the entry to use; more
    /// than one candidate without it is an error that lists them); its other entries (optimizer
    /// state, numbers, strings) are skipped unread. Name prefixes `module.`
    /// (DistributedDataParallel) and `_orig_mod.` (torch.compile) are stripped.
    /// `progress(done, total)` is called after each tensor is read. `check` sees every tensor's
    /// name (prefixes stripped), dtype and shape after the pickle or header is parsed and before
    /// any tensor data is read or inflated, so a caller that knows which shapes it can use
    /// refuses a hostile file (a 1 GiB tensor of deflated zeros) at the cost of its header.
    public static func read(contentsOf url: URL, key: String? = nil, progress: ((Int, Int) -> Void)? = nil,
                            check: (([CheckpointTensorInfo]) throws -> Void)? = nil) throws -> [CheckpointTensor] {
        let file = url.path
        let checkStripped = check.map { check in
            { (infos: [CheckpointTensorInfo]) throws in
                let names = try strippedNames(infos.map(\.name), file: file)
                try check(zip(infos, names).map { CheckpointTensorInfo(name: $1, dtype: $0.dtype, shape: $0.shape) })
            }
        }
        let tensors = try readAll(contentsOf: url, key: key, progress: progress, check: checkStripped)
        let names = try strippedNames(tensors.map(\.name), file: file)
        return zip(tensors, names).map { t, name in
            var t = t
            t.name = name
            return t
        }
    }

    /// Prefixes that wrappers add to every parameter name of the model they wrap.
    public static let wrapperPrefixes = ["module.", "_orig_mod."]

    /// Names without `wrapperPrefixes` (repeatedly: `_orig_mod.module.x` is `x`); two tensors
    /// that end up with the same name are refused.
    static func strippedNames(_ names: [String], file: String) throws -> [String] {
        var original: [String: String] = [:]
        return try names.map { full in
            var name = Substring(full)
            while let p = wrapperPrefixes.first(where: { name.hasPrefix($0) }) { name = name.dropFirst(p.count) }
            let stripped = String(name)
            if let other = original.updateValue(full, forKey: stripped) {
                throw TarFlowError.checkpoint(.sameNameWithoutPrefixes(first: other, second: full, stripped: stripped), file: file, subject: full)
            }
            return stripped
        }
    }

    static func readAll(contentsOf url: URL, key: String?, progress: ((Int, Int) -> Void)?,
                        check: (([CheckpointTensorInfo]) throws -> Void)?) throws -> [CheckpointTensor] {
        let path = url.path
        let file = try CheckpointFile(url: url)
        defer { file.close() }
        let head = try file.read(at: 0, count: min(9, file.size), what: "file header")
        if head.count >= 4, head[0] == 0x50, head[1] == 0x4B, head[2] == 0x03, head[3] == 0x04 {
            file.close()
            return try CheckpointTorchZip.read(url: url, fileSize: file.size, key: key, progress: progress, check: check)
        }
        if head.count == 9, head[8] == UInt8(ascii: "{") {
            if let key {
                throw TarFlowError.checkpoint(.keyForSafetensors, file: path, subject: "--key \(key)")
            }
            let tensors = try CheckpointSafetensors.read(file: file, check: check)
            progress?(tensors.count, tensors.count)
            return tensors
        }
        if head.count >= 2, head[0] == 0x80, head[1] <= 5 {
            throw TarFlowError.checkpoint(.barePickle, file: path)
        }
        throw TarFlowError.checkpoint(.unknownMagic(firstBytes: Array(head.prefix(8))), file: path)
    }
}

extension Checkpoint {
    /// Reads a state_dict from the `data.pkl` of a `torch.save` archive, with each storage's
    /// bytes supplied by `storage(key, byteCount)` (it must return exactly `byteCount` bytes).
    /// `read(contentsOf:)` does this with the archive's `data/<key>` entries; fuzzers and tests
    /// use it to drive the restricted unpickler without building a zip. `name` labels errors.
    public static func read(pickle: [UInt8], name: String = "data.pkl",
                            storage: (_ key: String, _ byteCount: Int) throws -> [UInt8]) throws -> [CheckpointTensor] {
        try CheckpointTorchZip.assemble(pickle: pickle, file: name) { key, nbytes, _ in try storage(key, nbytes) }
    }
}

// MARK: - File access shared by the readers

/// Positional reads with every range checked against the file length before allocating, and
/// failures worded as checkpoint errors (the file itself is FlowIR's `ReadOnlyFile`).
final class CheckpointFile {
    let path: String
    let size: Int
    private let file: ReadOnlyFile

    init(url: URL) throws {
        path = url.path
        // Only regular files: opening a FIFO would wait for a writer, a device may never end.
        do {
            file = try ReadOnlyFile(path: url.path)
        } catch .notRegularFile {
            throw TarFlowError.checkpoint(.notRegularFile, file: url.path)
        } catch {
            throw TarFlowError.checkpoint(.cannotOpen(error), file: url.path)
        }
        size = file.size
    }

    func close() { file.close() }

    /// Reads exactly `count` bytes at `offset`; `what` names the structure for the error.
    func read(at offset: Int, count: Int, what: String) throws -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw TarFlowError.checkpoint(.rangeOutsideFile(offset: offset, count: count, fileSize: size), file: path, subject: what)
        }
        if count == 0 { return [] }
        let out: [UInt8]
        do { out = try file.read(at: offset, count: count) } catch {
            throw TarFlowError.checkpoint(.readFailed(error), file: path, subject: what)
        }
        guard out.count == count else {
            throw TarFlowError.checkpoint(.shortRead(got: out.count, count: count, offset: offset), file: path, subject: what)
        }
        return out
    }
}

/// Overflow-checked helpers shared by the readers.
enum CheckpointMath {
    static func multiply(_ a: Int, _ b: Int) -> Int? {
        let (p, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : p
    }

    static func add(_ a: Int, _ b: Int) -> Int? {
        let (s, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : s
    }
}
