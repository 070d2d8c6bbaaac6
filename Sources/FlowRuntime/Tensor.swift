import FlowIR

/// The runtime's tensors are FlowIR's one host tensor type; the name stays for callers.
public typealias Tensor = FlowIR.Tensor

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
