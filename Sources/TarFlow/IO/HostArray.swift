import Foundation
import FlowIR

/// Element types that the file formats of this module can carry (`.npy`, IDX, safetensors).
public enum HostElement: String, Sendable, CaseIterable {
    case float32, float64, uint8, int32, int64

    /// Size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .uint8: return 1
        case .float32, .int32: return 4
        case .float64, .int64: return 8
        }
    }
}

/// A dense, row-major (C order) array in host memory: the exchange type of every reader and
/// writer in `IO/`, deliberately independent of the runtime's tensor type so that file formats
/// never depend on the execution engine.
public struct HostArray: Sendable {
    public var shape: [Int]
    public var storage: Storage

    public enum Storage: Sendable {
        case float32([Float])
        case float64([Double])
        case uint8([UInt8])
        case int32([Int32])
        case int64([Int64])
    }

    /// - Precondition: `storage` holds exactly `product(shape)` elements; readers validate this
    ///   against the file before constructing, so a mismatch here is a programmer error.
    public init(shape: [Int], storage: Storage) {
        precondition(elementCount(shape) == storage.count,
                     "HostArray: shape \(shape) does not match \(storage.count) elements")
        self.shape = shape
        self.storage = storage
    }

    public init(shape: [Int], floats: [Float]) { self.init(shape: shape, storage: .float32(floats)) }
    public init(shape: [Int], doubles: [Double]) { self.init(shape: shape, storage: .float64(doubles)) }
    public init(shape: [Int], bytes: [UInt8]) { self.init(shape: shape, storage: .uint8(bytes)) }
    public init(shape: [Int], int32s: [Int32]) { self.init(shape: shape, storage: .int32(int32s)) }
    public init(shape: [Int], int64s: [Int64]) { self.init(shape: shape, storage: .int64(int64s)) }

    /// Number of stored elements.
    public var count: Int { storage.count }

    public var element: HostElement { storage.element }

    /// Size of the element data in bytes.
    public var byteCount: Int { storage.count * storage.element.byteSize }

    /// The values converted to `Float` (integers and doubles are rounded to nearest).
    public func asFloats() -> [Float] {
        switch storage {
        case .float32(let v): return v
        case .float64(let v): return v.map { Float($0) }
        case .uint8(let v): return v.map { Float($0) }
        case .int32(let v): return v.map { Float($0) }
        case .int64(let v): return v.map { Float($0) }
        }
    }

    /// The values converted to `Double` (int64 beyond 2^53 is rounded).
    public func asDoubles() -> [Double] {
        switch storage {
        case .float32(let v): return v.map { Double($0) }
        case .float64(let v): return v
        case .uint8(let v): return v.map { Double($0) }
        case .int32(let v): return v.map { Double($0) }
        case .int64(let v): return v.map { Double($0) }
        }
    }

    /// The values as `Int64`, e.g. class labels. Floating-point values are accepted only when
    /// every one is an exact integer in range, so that a label file never silently truncates.
    public func asInt64s() throws -> [Int64] {
        switch storage {
        case .int64(let v): return v
        case .int32(let v): return v.map { Int64($0) }
        case .uint8(let v): return v.map { Int64($0) }
        case .float32(let v): return try HostArray.exactIntegers(v.lazy.map { Double($0) }, element: .float32)
        case .float64(let v): return try HostArray.exactIntegers(v, element: .float64)
        }
    }

    private static func exactIntegers<S: Sequence>(_ values: S, element: HostElement) throws -> [Int64]
    where S.Element == Double {
        var result: [Int64] = []
        for (index, value) in values.enumerated() {
            guard let exact = Int64(exactly: value) else {
                throw TarFlowError.hostArray(.notAnInteger(element: element, index: index, value: value))
            }
            result.append(exact)
        }
        return result
    }
}

extension HostArray.Storage {
    public var count: Int {
        switch self {
        case .float32(let v): return v.count
        case .float64(let v): return v.count
        case .uint8(let v): return v.count
        case .int32(let v): return v.count
        case .int64(let v): return v.count
        }
    }

    public var element: HostElement {
        switch self {
        case .float32: return .float32
        case .float64: return .float64
        case .uint8: return .uint8
        case .int32: return .int32
        case .int64: return .int64
        }
    }
}

extension TarFlowError {
    /// Failures of `HostArray` conversions.
    public enum HostArrayFailure: Sendable, Equatable, CustomStringConvertible {
        case notAnInteger(element: HostElement, index: Int, value: Double)

        public var description: String {
            switch self {
            case let .notAnInteger(element, index, value):
                return "expected integer values but \(element) element \(index) is \(value); "
                    + "store labels as an integer dtype or as exact whole numbers"
            }
        }
    }
}

// MARK: - Raw byte conversion shared by the binary formats

extension HostArray {
    static var hostIsBigEndian: Bool { 1.bigEndian == 1 }

    /// The element data as bytes in little-endian order (the order of `.npy` '<' and safetensors).
    func littleEndianBytes() -> [UInt8] {
        switch storage {
        case .float32(let v): return HostArray.bytes(of: v.map { $0.bitPattern.littleEndian })
        case .float64(let v): return HostArray.bytes(of: v.map { $0.bitPattern.littleEndian })
        case .uint8(let v): return v
        case .int32(let v): return HostArray.bytes(of: v.map { $0.littleEndian })
        case .int64(let v): return HostArray.bytes(of: v.map { $0.littleEndian })
        }
    }

    private static func bytes<T>(of values: [T]) -> [UInt8] {
        values.withUnsafeBytes { Array($0) }
    }

    /// Decodes `count` elements from `bytes` (which must hold exactly `count * element.byteSize`
    /// bytes; callers validate this against the file first).
    static func decode(_ bytes: UnsafeRawBufferPointer, element: HostElement, count: Int,
                       bigEndian: Bool) -> Storage {
        precondition(bytes.count == count * element.byteSize, "HostArray.decode: byte count mismatch")
        switch element {
        case .uint8:
            return .uint8(Array(bytes))
        case .float32:
            let bits: [UInt32] = loadIntegers(bytes, count: count, bigEndian: bigEndian)
            return .float32(bits.map(Float.init(bitPattern:)))
        case .float64:
            let bits: [UInt64] = loadIntegers(bytes, count: count, bigEndian: bigEndian)
            return .float64(bits.map(Double.init(bitPattern:)))
        case .int32:
            return .int32(loadIntegers(bytes, count: count, bigEndian: bigEndian))
        case .int64:
            return .int64(loadIntegers(bytes, count: count, bigEndian: bigEndian))
        }
    }

    /// Copies unaligned fixed-width integers out of a byte buffer, converting from the file's
    /// byte order to the host's.
    static func loadIntegers<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, count: Int,
                                                   bigEndian: Bool) -> [T] {
        let size = MemoryLayout<T>.size
        precondition(bytes.count >= count * size, "HostArray.loadIntegers: buffer too short")
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
