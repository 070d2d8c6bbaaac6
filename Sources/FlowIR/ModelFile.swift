import Foundation
import SwiftProtobuf
#if canImport(Glibc)
import Glibc
#endif

/// Reads and writes the model file format of Spec/ModelFile.md:
/// magic, version, flags, header length, protobuf `ModelHeader`, 64-byte-aligned tensor data.
/// Reading maps the file and hands out windows of the mapping, so weights are never copied.
public enum ModelFile {
    public static let magic: [UInt8] = Array("TFLOWMDL".utf8)
    public static let formatVersion: UInt32 = 1
    public static let alignment = 64
    static let prefixSize = 24
    /// Prefix flag: some tensor has a layout other than row-major (`TensorInfo.layout`), so a
    /// reader that does not know layouts refuses the file (F2) instead of misreading weights.
    public static let flagTensorLayouts: UInt32 = 0x1

    // MARK: Reading

    /// What a reader does with a file's compiled functions (`tarflow compile`).
    public enum CompiledFunctions: Sendable {
        /// Decode them and check rules F11 and F12 (a stale one is refused).
        case keep
        /// Ignore them, e.g. to recompile a file whose compiled functions are stale.
        case drop
    }

    public static func read(contentsOf url: URL, compiledFunctions: CompiledFunctions = .keep) throws -> Model {
        try readVerified(contentsOf: url, compiledFunctions: compiledFunctions).model
    }

    /// Decodes a whole model file held in memory (copied; used by tests and fuzzers).
    public static func decode(_ bytes: [UInt8], compiledFunctions: CompiledFunctions = .keep) throws -> Model {
        let holder = TensorBytes(bytes)
        return try decode(holder.buffer, owner: holder, compiledFunctions: compiledFunctions).model
    }

    static func decode(_ buf: UnsafeRawBufferPointer, owner: AnyObject, compiledFunctions: CompiledFunctions = .keep) throws -> VerifiedModel {
        guard buf.count >= prefixSize else { throw IRError(rule: "F1", "file is \(buf.count) bytes, too short for a model file") }
        guard Array(buf[0..<8]) == magic else { throw IRError(rule: "F1", "not a model file (bad magic); convert a checkpoint with `tarflow convert`") }
        let version = buf.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == formatVersion else {
            throw IRError(rule: "F2", "format version \(version) is not supported (this build reads version \(formatVersion)); use a matching tarflow")
        }
        let flags = buf.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian
        guard flags & ~flagTensorLayouts == 0 else {
            throw IRError(rule: "F2", "flags 0x\(String(flags, radix: 16)) are not supported (format version \(formatVersion) defines only 0x1, tensor layouts); use a matching tarflow")
        }
        let headerLength = buf.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(buf.count - prefixSize) else {
            throw IRError(rule: "F3", "header length \(headerLength) runs past the end of the \(buf.count)-byte file (truncated?)")
        }
        let n = Int(headerLength)
        let header: Flowir_ModelHeader
        do {
            header = try Flowir_ModelHeader(serializedBytes: Array(buf[prefixSize..<(prefixSize + n)]))
        } catch {
            throw IRError(rule: "F3", "header is not a valid ModelHeader protobuf: \(error)")
        }
        guard header.formatVersion == formatVersion else {
            throw IRError(rule: "F2", "header says format version \(header.formatVersion), file prefix says \(formatVersion)")
        }
        let dataOffset = align(prefixSize + n)
        guard dataOffset <= buf.count || header.tensors.isEmpty else {
            throw IRError(rule: "F4", "data section starts past the end of the file (truncated?)")
        }
        let dataSize = max(0, buf.count - dataOffset)
        guard let base = buf.baseAddress else { throw IRError(rule: "F1", "file is empty") }

        // Tensor table: validate every entry before touching its bytes.
        var tensors: [WeightTensor] = []
        var names = Set<String>()
        var extents: [(Int, Int, String)] = []
        for info in header.tensors {
            let where_ = "tensor '\(info.name)'"
            guard !info.name.isEmpty, names.insert(info.name).inserted else {
                throw IRError(rule: "F5", "tensor name '\(info.name)' is empty or used twice")
            }
            guard let dtype = DType(proto: info.dtype) else { throw IRError(rule: "F5", "\(where_): unknown dtype \(info.dtype.rawValue)") }
            guard let layout = TensorLayout(proto: info.layout) else {
                throw IRError(rule: "F5", "\(where_): unknown layout \(info.layout.rawValue); the file may come from a newer tarflow")
            }
            guard let bytes = tableByteCount(info.shape, dtype) else {
                throw IRError(rule: "F5", "\(where_): invalid shape \(info.shape) (rank <= \(Verifier.maxRank), dims 0...\(Verifier.maxDim), at most \(Verifier.maxValueBytes) bytes)")
            }
            if let why = layout.refusal(dtype, info.shape.map { Int($0) }) { throw IRError(rule: "F5", "\(where_): \(why)") }
            guard let bytes = storedByteCount(info.shape.map { Int($0) }, dtype, layout, logical: bytes) else {
                throw IRError(rule: "F5", "\(where_): shape \(info.shape) in layout \(layout) needs more than \(Verifier.maxValueBytes) bytes")
            }
            guard info.byteSize == UInt64(bytes) else {
                throw IRError(rule: "F5", "\(where_): byte_size \(info.byteSize) but shape \(info.shape) of \(dtype)\(layout == .rowMajor ? "" : " in layout \(layout)") needs \(bytes)")
            }
            guard info.offset % UInt64(alignment) == 0 else { throw IRError(rule: "F6", "\(where_): offset \(info.offset) is not a multiple of 64") }
            guard info.offset <= UInt64(dataSize), UInt64(bytes) <= UInt64(dataSize) - info.offset else {
                // The offset comes from the file: its end may not fit in 64 bits.
                let (end, overflow) = info.offset.addingReportingOverflow(UInt64(bytes))
                let endText = overflow ? "\(info.offset) + \(bytes)" : "\(end)"
                throw IRError(rule: "F4", "\(where_): bytes \(info.offset)..<\(endText) lie outside the \(dataSize)-byte data section (truncated?)")
            }
            let off = Int(info.offset)
            extents.append((off, bytes, info.name))
            tensors.append(WeightTensor(
                name: info.name, dtype: dtype, shape: info.shape.map { Int($0) },
                bytes: TensorBytes(window: base + dataOffset + off, count: bytes, owner: owner), layout: layout))
        }
        let packed = tensors.first { $0.layout != .rowMajor }
        if let t = packed, flags & flagTensorLayouts == 0 {
            throw IRError(rule: "F2", "tensor '\(t.name)' has layout \(t.layout) but the prefix lacks flag 0x1 (tensor layouts)")
        }
        if packed == nil, flags & flagTensorLayouts != 0 {
            throw IRError(rule: "F2", "the prefix has flag 0x1 (tensor layouts) but every tensor is row-major")
        }
        extents.sort { $0.0 < $1.0 }
        for i in extents.indices.dropFirst() where extents[i - 1].0 + extents[i - 1].1 > extents[i].0 {
            throw IRError(rule: "F8", "tensors '\(extents[i - 1].2)' and '\(extents[i].2)' overlap")
        }

        var metadata: [String: MetadataValue] = [:]
        var previousKey: String? = nil
        for m in header.metadata {
            // Sorted and unique, as writers emit them: a repeated key would be ambiguous.
            if let p = previousKey, !(p < m.key) {
                throw IRError(rule: "F9", p == m.key ? "metadata '\(m.key)' appears twice" : "metadata keys are not sorted ('\(m.key)' after '\(p)')")
            }
            previousKey = m.key
            switch m.value {
            case .stringValue(let s): metadata[m.key] = .string(s)
            case .intValue(let i): metadata[m.key] = .int(i)
            case .doubleValue(let d): metadata[m.key] = .double(d)
            case .boolValue(let b): metadata[m.key] = .bool(b)
            case nil: throw IRError(rule: "F9", "metadata '\(m.key)' has no value")
            }
        }
        let graphs = try header.graphs.map { (g) throws(IRError) -> Graph in try Graph(proto: g) }
        var model = Model(graphs: graphs, tensors: tensors, metadata: metadata)
        if compiledFunctions == .keep {
            model.compiled = try header.compiled.map { (f) throws(IRError) -> CompiledFunction in try CompiledFunction(proto: f) }
        }
        return try model.verified()
    }

    // MARK: Writing

    /// Byte size of a tensor-table entry (rule F5), or nil if the shape is invalid or too large.
    static func tableByteCount(_ shape: [Int64], _ dtype: DType) -> Int? {
        guard shape.count <= Verifier.maxRank, shape.allSatisfy({ $0 >= 0 && $0 <= Int64(Verifier.maxDim) }) else { return nil }
        return elementCount([dtype.byteSize] + shape.map { Int($0) }, limit: Verifier.maxValueBytes)
    }

    /// Bytes stored for a tensor of `logical` row-major bytes in `layout` (F5; the layout
    /// already accepted by `refusal`), or nil past the F5 size bound.
    static func storedByteCount(_ shape: [Int], _ dtype: DType, _ layout: TensorLayout, logical: Int) -> Int? {
        guard layout != .rowMajor else { return logical }
        guard let e = layout.storedElements(shape), case let (b, o) = e.multipliedReportingOverflow(by: dtype.byteSize),
              !o, b <= Verifier.maxValueBytes else { return nil }
        return b
    }

    /// Rule F5 for a model built in memory: what a reader would check about the tensor table.
    static func checkTensorTable(_ model: Model) throws(IRError) {
        var names = Set<String>()
        for t in model.tensors {
            guard !t.name.isEmpty, names.insert(t.name).inserted else {
                throw IRError(rule: "F5", "tensor name '\(t.name)' is empty or used twice")
            }
            guard t.dtype.inModelFile else {
                throw IRError(rule: "F5", "tensor '\(t.name)': dtype \(t.dtype) is not one of the four a model file stores (f32, f16, bf16, i64)")
            }
            guard let logical = tableByteCount(t.shape.map { Int64($0) }, t.dtype) else {
                throw IRError(rule: "F5", "tensor '\(t.name)': invalid shape \(t.shape)")
            }
            if let why = t.layout.refusal(t.dtype, t.shape) { throw IRError(rule: "F5", "tensor '\(t.name)': \(why)") }
            guard let bytes = storedByteCount(t.shape, t.dtype, t.layout, logical: logical) else {
                throw IRError(rule: "F5", "tensor '\(t.name)': invalid shape \(t.shape) in layout \(t.layout)")
            }
            guard t.bytes.count == bytes else {
                throw IRError(rule: "F5", "tensor '\(t.name)': holds \(t.bytes.count) bytes but shape \(t.shape) of \(t.dtype)\(t.layout == .rowMajor ? "" : " in layout \(t.layout)") needs \(bytes)")
            }
        }
    }

    /// The exact bytes of a model file. Deterministic: equal models give equal bytes.
    /// Refuses a tensor table a reader would refuse (F5).
    public static func encode(_ model: Model) throws -> [UInt8] {
        var out = [UInt8]()
        try encode(model) { out += $0 }
        return out
    }

    /// The bytes of a model file, in order, as a few large pieces (prefix and header, then each
    /// tensor and its padding), so a writer can stream gigabytes of weights without a copy.
    public static func encode(_ model: Model, to emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        try checkTensorTable(model)
        var header = Flowir_ModelHeader()
        header.formatVersion = formatVersion
        header.graphs = model.graphs.map { $0.proto }
        var offset = 0
        for t in model.tensors {
            var info = Flowir_TensorInfo()
            info.name = t.name
            info.dtype = t.dtype.proto
            info.shape = t.shape.map { Int64($0) }
            info.offset = UInt64(offset)
            info.byteSize = UInt64(t.bytes.count)
            info.layout = t.layout.proto
            header.tensors.append(info)
            offset = align(offset + t.bytes.count)
        }
        header.metadata = model.metadata.keys.sorted().map { key in
            var m = Flowir_Metadata()
            m.key = key
            switch model.metadata[key] {
            case .string(let s)?: m.stringValue = s
            case .int(let i)?: m.intValue = i
            case .double(let d)?: m.doubleValue = d
            case .bool(let b)?: m.boolValue = b
            case nil: break
            }
            return m
        }
        header.compiled = model.compiled.map(\.proto)
        let headerBytes: [UInt8] = try header.serializedBytes()
        let dataOffset = align(prefixSize + headerBytes.count)
        var out = [UInt8]()
        out.reserveCapacity(dataOffset)
        out += magic
        withUnsafeBytes(of: formatVersion.littleEndian) { out += $0 }
        let flags = model.tensors.contains { $0.layout != .rowMajor } ? flagTensorLayouts : 0
        withUnsafeBytes(of: flags.littleEndian) { out += $0 }
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out += $0 }
        out += headerBytes
        out += [UInt8](repeating: 0, count: dataOffset - out.count)
        try out.withUnsafeBytes { try emit($0) }
        let zeros = [UInt8](repeating: 0, count: alignment)
        for t in model.tensors {
            try emit(t.bytes.buffer)
            let pad = align(t.bytes.count) - t.bytes.count
            if pad > 0 { try zeros.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<pad])) } }
        }
    }

    /// Writes atomically: a failed write leaves an existing file untouched. Refuses a model a
    /// reader would refuse (F5, F7, W1–W11).
    public static func write(_ model: Model, to url: URL) throws {
        try checkTensorTable(model)
        try model.verify()
        try FileIO.writeAtomically(to: url) { sink in try encode(model, to: sink) }
    }

    @inline(__always) static func align(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }
}

/// File helpers shared by every writer in the project; their failures are `FileAccessError`s.
public enum FileIO {
    /// Writes to a temporary file in the destination's folder, syncs, then renames over the
    /// destination, so readers never see a half-written file and a failure changes nothing.
    public static func writeAtomically(_ bytes: [UInt8], to url: URL) throws {
        try writeAtomically(to: url) { sink in try bytes.withUnsafeBytes { try sink($0) } }
    }

    /// The streaming form: `body` hands the file's bytes, in order, to the sink it is given.
    public static func writeAtomically(to url: URL, _ body: (_ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let dir = url.deletingLastPathComponent().path
        let tmpl = (dir.isEmpty ? "." : dir) + "/.\(url.lastPathComponent).tmp-XXXXXX"
        // Registered so that SIGINT/SIGTERM remove it too (TemporaryFiles).
        let (fd, tmp, slot) = TemporaryFiles.create(template: tmpl)
        guard fd >= 0 else { throw FileAccessError.cannotCreateTemporary(path: url.path, directory: dir, errno: errno) }
        var ok = false
        defer {
            if !ok { unlink(tmp) }
            TemporaryFiles.unregister(slot)
        }
        var closed = false
        defer { if !closed { close(fd) } }
        try body { raw in
            var written = 0
            while written < raw.count, let base = raw.baseAddress {
                let r = Glibc.write(fd, base + written, min(raw.count - written, 1 << 30))
                if r < 0 {
                    if errno == EINTR { continue }
                    throw FileAccessError.writeFailed(path: url.path, errno: errno)
                }
                written += r
            }
        }
        if fsync(fd) != 0 { throw FileAccessError.writeFailed(path: url.path, errno: errno) }
        fchmod(fd, 0o644)
        closed = true
        close(fd)
        guard rename(tmp, url.path) == 0 else { throw FileAccessError.cannotRename(path: url.path, errno: errno) }
        ok = true
        // Make the rename itself durable.
        let dirFD = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }
}
