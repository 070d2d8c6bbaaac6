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
    public enum Kind: String, Sendable {
        /// The caller's inputs do not fit the graph (missing, extra, wrong dtype or shape).
        case invalidInput
        /// A value read at run time (a gather index, a write position) is out of range.
        case indexOutOfRange
        /// A constant or weight the plan needs is missing from the model, or has another shape.
        case missingConstant
        /// More memory than this process may use (`Executor.memoryLimit`), or than the arena holds.
        case memoryLimit
        /// A graph or weight this runtime does not run (symbolic load-time shape, i64 weight, ...).
        case unsupported
        /// A batch split that cannot be made (unbound symbol, wrong number of arenas).
        case invalidSplit
    }

    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
