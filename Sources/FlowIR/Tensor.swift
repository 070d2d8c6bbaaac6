#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A dense row-major tensor in host memory: the one type the runtime takes and returns, the
/// reference interpreter computes with, and every reader and writer (`.npy`, IDX, safetensors,
/// checkpoints, PNG and JPEG images) produces, so no layer translates between tensor types.
public struct Tensor: Sendable, Equatable {
    /// One case per `DType`; float16 and bfloat16 are kept as their bit patterns.
    public enum Storage: Sendable, Equatable {
        case float32([Float])
        case float16([UInt16])
        case bfloat16([UInt16])
        case float64([Double])
        case uint8([UInt8])
        case int32([Int32])
        case int64([Int64])
    }

    public var shape: [Int]
    public var storage: Storage

    /// - Precondition: `storage` holds exactly `elementCount(shape)` elements; readers check
    ///   this against the file first, so a mismatch here is a programmer error.
    public init(shape: [Int], storage: Storage) {
        precondition(elementCount(shape) == storage.count, "shape \(shape) does not match \(storage.count) elements")
        self.shape = shape
        self.storage = storage
    }

    public init(shape: [Int], floats: [Float]) { self.init(shape: shape, storage: .float32(floats)) }
    public init(shape: [Int], doubles: [Double]) { self.init(shape: shape, storage: .float64(doubles)) }
    public init(shape: [Int], bytes: [UInt8]) { self.init(shape: shape, storage: .uint8(bytes)) }
    public init(shape: [Int], int32s: [Int32]) { self.init(shape: shape, storage: .int32(int32s)) }
    public init(shape: [Int], int64s: [Int64]) { self.init(shape: shape, storage: .int64(int64s)) }

    /// Decodes `elementCount(shape)` elements of `dtype` from `raw`, which holds exactly their
    /// bytes in the given byte order (callers check the size against the file first).
    public init(shape: [Int], dtype: DType, decoding raw: UnsafeRawBufferPointer, bigEndian: Bool = false) {
        guard let n = elementCount(shape), raw.count == n * dtype.byteSize else {
            preconditionFailure("Tensor: \(raw.count) bytes do not hold shape \(shape) of \(dtype)")
        }
        let storage: Storage
        switch dtype {
        case .float32 where !bigEndian: storage = .float32(dtype.floats(fromLittleEndian: raw))
        case .float32: storage = .float32((Tensor.loadIntegers(raw, count: n, bigEndian: true) as [UInt32]).map(Float.init(bitPattern:)))
        case .float16: storage = .float16(Tensor.loadIntegers(raw, count: n, bigEndian: bigEndian))
        case .bfloat16: storage = .bfloat16(Tensor.loadIntegers(raw, count: n, bigEndian: bigEndian))
        case .float64: storage = .float64((Tensor.loadIntegers(raw, count: n, bigEndian: bigEndian) as [UInt64]).map(Double.init(bitPattern:)))
        case .uint8: storage = .uint8(Array(raw))
        case .int32: storage = .int32(Tensor.loadIntegers(raw, count: n, bigEndian: bigEndian))
        case .int64: storage = .int64(Tensor.loadIntegers(raw, count: n, bigEndian: bigEndian))
        }
        self.init(shape: shape, storage: storage)
    }

    public var dtype: DType {
        switch storage {
        case .float32: .float32
        case .float16: .float16
        case .bfloat16: .bfloat16
        case .float64: .float64
        case .uint8: .uint8
        case .int32: .int32
        case .int64: .int64
        }
    }

    /// Number of stored elements.
    public var count: Int { storage.count }

    /// Size of the element data in bytes.
    public var byteCount: Int { count * dtype.byteSize }

    /// The values as Float: half types widen exactly, the others round to nearest.
    public var floats: [Float] {
        switch storage {
        case .float32(let v): v
        case .float16(let v): v.map(Float.init(halfBits:))
        case .bfloat16(let v): v.map(Float.init(bfloat16Bits:))
        case .float64(let v): v.map { Float($0) }
        case .uint8(let v): v.map { Float($0) }
        case .int32(let v): v.map { Float($0) }
        case .int64(let v): v.map { Float($0) }
        }
    }

    /// The values as Int64, floating-point ones truncated toward zero and saturated (NaN is 0),
    /// so no value traps; `asInt64s()` is the checked form.
    public var int64s: [Int64] {
        switch storage {
        case .int64(let v): v
        case .int32(let v): v.map { Int64($0) }
        case .uint8(let v): v.map { Int64($0) }
        case .float64(let v): v.map(Tensor.saturating)
        case .float32, .float16, .bfloat16: floats.map { Tensor.saturating(Double($0)) }
        }
    }

    private static func saturating(_ v: Double) -> Int64 {
        if v.isNaN { return 0 }
        if v >= 0x1p63 { return .max }
        if v < -0x1p63 { return .min }
        return Int64(v)
    }

    /// The values as Double (int64 beyond 2^53 is rounded).
    public func asDoubles() -> [Double] {
        switch storage {
        case .float64(let v): v
        case .uint8(let v): v.map { Double($0) }
        case .int32(let v): v.map { Double($0) }
        case .int64(let v): v.map { Double($0) }
        case .float32, .float16, .bfloat16: floats.map { Double($0) }
        }
    }

    /// The values as Int64, e.g. class labels. Floating-point values are accepted only when
    /// every one is an exact integer in range, so that a label file never silently truncates.
    public func asInt64s() throws(TensorFailure) -> [Int64] {
        switch storage {
        case .int64, .int32, .uint8: return int64s
        case .float64(let v): return try Tensor.exactIntegers(v, dtype: dtype)
        case .float32, .float16, .bfloat16: return try Tensor.exactIntegers(floats.lazy.map { Double($0) }, dtype: dtype)
        }
    }

    private static func exactIntegers<S: Sequence>(_ values: S, dtype: DType) throws(TensorFailure) -> [Int64]
    where S.Element == Double {
        var result: [Int64] = []
        for (index, value) in values.enumerated() {
            guard let exact = Int64(exactly: value) else { throw .notAnInteger(dtype: dtype, index: index, value: value) }
            result.append(exact)
        }
        return result
    }

    /// The element bytes in host order, e.g. to copy into a runtime buffer.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .float32(let v): try v.withUnsafeBytes(body)
        case .float16(let v), .bfloat16(let v): try v.withUnsafeBytes(body)
        case .float64(let v): try v.withUnsafeBytes(body)
        case .uint8(let v): try v.withUnsafeBytes(body)
        case .int32(let v): try v.withUnsafeBytes(body)
        case .int64(let v): try v.withUnsafeBytes(body)
        }
    }

    /// The element bytes in little-endian order (`.npy` '<', safetensors, model files).
    public func littleEndianBytes() -> [UInt8] {
        if 1.littleEndian == 1 { return withUnsafeBytes { Array($0) } }
        func bytes<T: FixedWidthInteger>(_ v: [T]) -> [UInt8] { v.map { $0.littleEndian }.withUnsafeBytes { Array($0) } }
        switch storage {
        case .float32(let v): return bytes(v.map(\.bitPattern))
        case .float16(let v), .bfloat16(let v): return bytes(v)
        case .float64(let v): return bytes(v.map(\.bitPattern))
        case .uint8(let v): return v
        case .int32(let v): return bytes(v)
        case .int64(let v): return bytes(v)
        }
    }

    /// Copies `count` unaligned fixed-width integers out of `bytes`, from the given byte order
    /// to the host's.
    public static func loadIntegers<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, count: Int,
                                                          bigEndian: Bool) -> [T] {
        let size = MemoryLayout<T>.size
        precondition(bytes.count >= count * size, "Tensor.loadIntegers: buffer too short")
        return [T](unsafeUninitializedCapacity: count) { out, initialized in
            if count > 0, let base = out.baseAddress, let src = bytes.baseAddress {
                memcpy(base, src, count * size)
                for i in 0..<count {
                    out[i] = bigEndian ? T(bigEndian: out[i]) : T(littleEndian: out[i])
                }
            }
            initialized = count
        }
    }
}

extension Tensor.Storage {
    public var count: Int {
        switch self {
        case .float32(let v): v.count
        case .float16(let v), .bfloat16(let v): v.count
        case .float64(let v): v.count
        case .uint8(let v): v.count
        case .int32(let v): v.count
        case .int64(let v): v.count
        }
    }
}

/// A `Tensor` that does not convert as asked (labels that are not whole numbers).
public enum TensorFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case notAnInteger(dtype: DType, index: Int, value: Double)

    public var description: String {
        switch self {
        case let .notAnInteger(dtype, index, value):
            "expected integer values but \(dtype.rawValue) element \(index) is \(value); "
                + "store labels as an integer dtype or as exact whole numbers"
        }
    }
}
