/// Element types. Values computed by a graph are `float32` or `int64`; `float16` and
/// `bfloat16` exist only as storage formats of constants, widened to `float32` on load.
/// `float64`, `uint8` and `int32` are host types of the file readers and the reference
/// interpreter only: no model file stores them (F5) and no graph computes with them (W9).
public enum DType: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case float32, float16, bfloat16, int64, float64, uint8, int32

    public var byteSize: Int {
        switch self {
        case .uint8: 1
        case .float16, .bfloat16: 2
        case .float32, .int32: 4
        case .float64, .int64: 8
        }
    }

    /// Whether a model file can store it (the four dtypes of `Spec/flowir.proto`).
    public var inModelFile: Bool {
        switch self {
        case .float32, .float16, .bfloat16, .int64: true
        case .float64, .uint8, .int32: false
        }
    }

    /// The type a constant of this storage type has inside a graph.
    public var computeType: DType {
        switch self {
        case .float32, .float16, .bfloat16, .float64: .float32
        case .int64, .uint8, .int32: .int64
        }
    }

    public var description: String {
        switch self {
        case .float32: "f32"
        case .float16: "f16"
        case .bfloat16: "bf16"
        case .int64: "i64"
        case .float64: "f64"
        case .uint8: "u8"
        case .int32: "i32"
        }
    }
}

/// One dimension: a fixed size or a symbol bound when the graph runs (the batch, `B`).
public enum Dim: Sendable, Hashable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    case fixed(Int)
    case symbol(String)

    /// The symbolic batch dimension every TarFlow graph uses.
    public static let batch = Dim.symbol("B")

    public init(integerLiteral value: Int) { self = .fixed(value) }

    public var fixedSize: Int? {
        if case .fixed(let n) = self { return n }
        return nil
    }

    public var description: String {
        switch self {
        case .fixed(let n): String(n)
        case .symbol(let s): s
        }
    }

    public func resolved(_ bindings: [String: Int]) -> Int? {
        switch self {
        case .fixed(let n): n
        case .symbol(let s): bindings[s]
        }
    }
}

/// The type of a value: element type and shape.
public struct TensorType: Sendable, Hashable, CustomStringConvertible {
    public var dtype: DType
    public var shape: [Dim]

    public init(_ dtype: DType, _ shape: [Dim]) {
        self.dtype = dtype
        self.shape = shape
    }

    public var rank: Int { shape.count }

    public var description: String {
        "\(dtype)[\(shape.map(\.description).joined(separator: ","))]"
    }

    /// Concrete sizes once every symbol is bound; nil if a symbol is unbound.
    public func concreteShape(_ bindings: [String: Int]) -> [Int]? {
        var out: [Int] = []
        out.reserveCapacity(shape.count)
        for d in shape {
            guard let n = d.resolved(bindings) else { return nil }
            out.append(n)
        }
        return out
    }
}

/// A value in a graph, by index into `Graph.values`.
public typealias ValueID = Int

/// The one checked product of sizes: the element count of a concrete shape, or nil when a
/// size is negative or a partial product (taken left to right) overflows or passes `limit`.
/// Size bounds (W11, F5) pass their byte limit so that a huge shape is refused, not wrapped.
@inlinable
public func elementCount<S: Sequence<Int>>(_ shape: S, limit: Int = .max) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o || p > limit { return nil }
        n = p
    }
    return n
}
