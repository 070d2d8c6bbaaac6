import FlowIR

/// A host tensor handed to or returned by the runtime: row-major, float32 or int64.
public struct Tensor: Sendable, Equatable {
    public enum Storage: Sendable, Equatable {
        case float32([Float])
        case int64([Int64])
    }

    public var shape: [Int]
    public var storage: Storage

    public init(shape: [Int], floats: [Float]) {
        precondition(elementCount(shape) == floats.count, "shape \(shape) does not match \(floats.count) elements")
        self.shape = shape
        storage = .float32(floats)
    }

    public init(shape: [Int], int64s: [Int64]) {
        precondition(elementCount(shape) == int64s.count, "shape \(shape) does not match \(int64s.count) elements")
        self.shape = shape
        storage = .int64(int64s)
    }

    public var dtype: DType {
        switch storage {
        case .float32: .float32
        case .int64: .int64
        }
    }

    public var count: Int {
        switch storage {
        case .float32(let f): f.count
        case .int64(let i): i.count
        }
    }

    /// Elements as Float (int64 converted).
    public var floats: [Float] {
        switch storage {
        case .float32(let f): f
        case .int64(let i): i.map { Float($0) }
        }
    }

    public var int64s: [Int64] {
        switch storage {
        case .float32(let f): f.map { Int64($0) }
        case .int64(let i): i
        }
    }
}

/// A failure while running a plan: bad inputs, or data the kernels refuse (e.g. an index out of range).
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
