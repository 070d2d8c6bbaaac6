#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes of one tensor: owned, or a window of a memory-mapped model file kept alive by `owner`.
public final class TensorBytes: @unchecked Sendable {
    public let pointer: UnsafeRawPointer
    public let count: Int
    let owner: AnyObject?
    let owned: UnsafeMutableRawPointer?

    /// Copies `bytes` into 64-byte-aligned memory owned by this object.
    public init(copying bytes: UnsafeRawBufferPointer) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        if let base = bytes.baseAddress, bytes.count > 0 { p.copyMemory(from: base, byteCount: bytes.count) }
        pointer = UnsafeRawPointer(p)
        count = bytes.count
        owner = nil
        owned = p
        isMapped = false
    }

    /// Allocates `count` bytes (64-byte aligned) and lets `fill` write them in place: large
    /// generated tensors are made without an intermediate array.
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
        do { try fill(UnsafeMutableRawBufferPointer(start: p, count: count)) } catch {
            p.deallocate()
            throw error
        }
        pointer = UnsafeRawPointer(p)
        self.count = count
        owner = nil
        owned = p
        isMapped = false
    }

    public convenience init(_ bytes: [UInt8]) {
        self.init(copying: bytes.withUnsafeBytes { $0 })
    }

    public convenience init(floats: [Float]) {
        self.init(copying: floats.withUnsafeBytes { $0 })
    }

    init(window pointer: UnsafeRawPointer, count: Int, owner: AnyObject) {
        self.pointer = pointer
        self.count = count
        self.owner = owner
        owned = nil
        isMapped = owner is MappedFile
    }

    /// Whether these bytes are a window of a memory-mapped file (not a copy in memory).
    public let isMapped: Bool

    deinit { owned?.deallocate() }

    public var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
}

/// A constant of the tensor table.
public struct WeightTensor: Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var bytes: TensorBytes
    /// The order of the elements in `bytes` (row-major unless `tarflow compile` packed it).
    public var layout: TensorLayout

    public init(name: String, dtype: DType, shape: [Int], bytes: TensorBytes, layout: TensorLayout = .rowMajor) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
        self.layout = layout
    }

    /// A row-major copy of `tensor`'s elements; a dtype no model file stores is refused when
    /// the model is written (F5).
    public init(name: String, tensor: Tensor) {
        let bytes = 1.littleEndian == 1 ? tensor.withUnsafeBytes { TensorBytes(copying: $0) } : TensorBytes(tensor.littleEndianBytes())
        self.init(name: name, dtype: tensor.dtype, shape: tensor.shape, bytes: bytes)
    }

    /// The elements as a host tensor, in row-major order whatever the stored layout.
    public func tensor() -> Tensor {
        if layout != .rowMajor { return inLayout(.rowMajor).tensor() }
        return Tensor(shape: shape, dtype: dtype, decoding: bytes.buffer)
    }

    /// The type a `constant` op reading this tensor has.
    public var graphType: TensorType { TensorType(dtype.computeType, shape.map { .fixed($0) }) }

    /// Values widened to Float (float16 and bfloat16 are converted; int64 is converted too), in
    /// row-major order whatever the stored layout.
    public func floats() -> [Float] {
        if layout != .rowMajor { return inLayout(.rowMajor).floats() }
        return dtype.floats(fromLittleEndian: bytes.buffer)
    }

    public func int64s() -> [Int64] { tensor().int64s }
}

/// A metadata value.
public enum MetadataValue: Sendable, Hashable, CustomStringConvertible {
    case string(String), int(Int64), double(Double), bool(Bool)

    public var description: String {
        switch self {
        case .string(let s): "\"\(s)\""
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .bool(let b): String(b)
        }
    }

    public var intValue: Int? { if case .int(let i) = self { Int(i) } else { nil } }
    public var doubleValue: Double? {
        switch self {
        case .double(let d): d
        case .int(let i): Double(i)
        default: nil
        }
    }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
}

/// What a model file holds: graphs, the tensor table with its bytes, and metadata.
public struct Model: Sendable {
    public var graphs: [Graph]
    public var tensors: [WeightTensor]
    public var metadata: [String: MetadataValue]
    /// Functions compiled ahead of time (`tarflow compile`); empty for a plain model file.
    public var compiled: [CompiledFunction] = []

    public init(graphs: [Graph], tensors: [WeightTensor], metadata: [String: MetadataValue]) {
        self.graphs = graphs
        self.tensors = tensors
        self.metadata = metadata
    }

    public func graph(named name: String) -> Graph? { graphs.first { $0.name == name } }

    public func tensor(named name: String) -> WeightTensor? { tensors.first { $0.name == name } }

    /// The tensor table as graph types, for the verifier and builders.
    public var constantTypes: [String: TensorType] {
        Dictionary(tensors.map { ($0.name, $0.graphType) }, uniquingKeysWith: { a, _ in a })
    }

    /// Runs the verifier on every graph against the tensor table, then checks the compiled
    /// functions' structure and that their source graphs are unchanged (F11, F12).
    public func verify() throws(IRError) { _ = try verified() }
}
