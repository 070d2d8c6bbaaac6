import FlowIR

/// The runtime's tensors are FlowIR's one host tensor type; the name stays for callers.
public typealias Tensor = FlowIR.Tensor

/// A failure while running a plan: bad inputs, or data the kernels refuse (e.g. an index out of range).
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, with the names and numbers as data; the message is worded once, in
    /// `Failure.description`.
    public var failure: Failure
    public var kind: Kind { failure.kind }
    public var description: String { failure.description }

    public init(_ failure: Failure) { self.failure = failure }

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

    public enum Failure: Sendable, Equatable, CustomStringConvertible {
        // invalidInput
        case missingInput(name: String, type: TensorType)
        case inputDType(name: String, expected: DType, got: DType)
        case inputShape(name: String, expected: TensorType, got: [Int])
        /// A batch split's input of another dtype or rank.
        case inputType(name: String, expected: TensorType, dtype: DType, shape: [Int])
        /// A batch split's input whose rows do not match `symbol` = `total`.
        case inputRows(name: String, expected: TensorType, symbol: String, total: Int, got: [Int])
        case symbolDisagrees(symbol: String, first: Int, second: Int, input: String)
        /// `inputs`, when given, lists the graph's inputs in the message.
        case notAnInput(name: String, graph: String, inputs: [String]?)
        case symbolOnlyInState(String)
        case referenceMissingInput(String)
        // indexOutOfRange
        case gatherIndex(Int64, rows: Int)
        case writePosition(Int, count: Int, extent: Int)
        case referenceGatherIndex(Double)
        case referenceWritePosition(Double)
        // missingConstant
        case missingConstant(String)
        case missingLinearWeight(name: String, n: Int, k: Int)
        case referenceMissingTensor(String)
        // memoryLimit
        case weightsTooLarge(limit: Int)
        case loadTimeValuesTooLarge(graph: String, limit: Int)
        case packedWeightsTooLarge(graph: String, limit: Int)
        case buffersTooLarge(graph: String, bindings: [String: Int], bytes: Int, limit: Int)
        case sharedArenaTooSmall(graph: String, bindings: [String: Int], bytes: Int, arena: Int)
        case sharedArenaTooLarge(bytes: Int, limit: Int)
        // unsupported
        case mixedKVDTypes
        case linearWeightDType(name: String, DType)
        case constantShapeOverflow(name: String, shape: [Int])
        case symbolicLoadTimeValue(String)
        // invalidSplit
        case splitSymbolUnbound(String)
        case splitArenaCount(parts: Int, arenas: Int)

        public var kind: Kind {
            switch self {
            case .missingInput, .inputDType, .inputShape, .inputType, .inputRows, .symbolDisagrees, .notAnInput,
                 .symbolOnlyInState, .referenceMissingInput: .invalidInput
            case .gatherIndex, .writePosition, .referenceGatherIndex, .referenceWritePosition: .indexOutOfRange
            case .missingConstant, .missingLinearWeight, .referenceMissingTensor: .missingConstant
            case .weightsTooLarge, .loadTimeValuesTooLarge, .packedWeightsTooLarge, .buffersTooLarge, .sharedArenaTooSmall,
                 .sharedArenaTooLarge: .memoryLimit
            case .mixedKVDTypes, .linearWeightDType, .constantShapeOverflow, .symbolicLoadTimeValue: .unsupported
            case .splitSymbolUnbound, .splitArenaCount: .invalidSplit
            }
        }

        public var description: String {
            switch self {
            case let .missingInput(name, type): "missing input '\(name)' (\(type))"
            case let .inputDType(name, expected, got): "input '\(name)' must be \(expected), is \(got)"
            case let .inputShape(name, expected, got): "input '\(name)' must have shape \(expected), has \(got)"
            case let .inputType(name, expected, dtype, shape): "input '\(name)' must be \(expected), is \(dtype)\(shape)"
            case let .inputRows(name, expected, symbol, total, got):
                "input '\(name)' must have shape \(expected) with \(symbol) = \(total), has \(got)"
            case let .symbolDisagrees(symbol, first, second, input): "symbol \(symbol) is \(first) in one input and \(second) in '\(input)'"
            case let .notAnInput(name, graph, inputs):
                "'\(name)' is not an input of graph '\(graph)'" + (inputs.map { " (inputs: \($0.joined(separator: ", ")))" } ?? "")
            case let .symbolOnlyInState(symbol): "symbol \(symbol) appears only in state inputs; bind it with bind(_:)"
            case let .referenceMissingInput(name): "reference: missing input '\(name)'"
            case let .gatherIndex(index, rows): "gather: index \(index) out of range for a table of \(rows) rows"
            case let .writePosition(p, count, extent): "write_slice: position \(p) + \(count) is outside 0..<\(extent)"
            case let .referenceGatherIndex(v): "reference: gather index \(v) out of range"
            case let .referenceWritePosition(p): "reference: write_slice position \(p) out of range"
            case let .missingConstant(name): "constant '\(name)' is missing from the model"
            case let .missingLinearWeight(name, n, k): "linear weight '\(name)' is missing or is not [\(n), \(k)]"
            case let .referenceMissingTensor(name): "reference: no tensor '\(name)'"
            case let .weightsTooLarge(limit): "the model's weights need more than the \(limit) bytes of memory this process may use"
            case let .loadTimeValuesTooLarge(graph, limit): "the load-time values of graph '\(graph)' need more than the \(limit) bytes of memory"
            case let .packedWeightsTooLarge(graph, limit): "the packed weights of graph '\(graph)' need more than the \(limit) bytes of memory"
            case let .buffersTooLarge(graph, bindings, bytes, limit):
                "graph '\(graph)' with \(bindings) needs \(bytes) bytes of buffers, more than the \(limit) bytes of memory; use a smaller batch"
            case let .sharedArenaTooSmall(graph, bindings, bytes, arena):
                "graph '\(graph)' with \(bindings) needs \(bytes) bytes of buffers; the shared arena has \(arena)"
            case let .sharedArenaTooLarge(bytes, limit): "a shared arena of \(bytes) bytes is more than the \(limit) bytes of memory"
            case .mixedKVDTypes: "attention: k and v must have the same dtype (both f32 or both f16)"
            case let .linearWeightDType(name, dtype): "linear weight '\(name)' is \(dtype)"
            case let .constantShapeOverflow(name, shape): "constant '\(name)': shape \(shape) overflows"
            case let .symbolicLoadTimeValue(name): "load-time value '\(name)' has a symbolic shape"
            case let .splitSymbolUnbound(symbol): "batch split: symbol \(symbol) must be bound to a positive size"
            case let .splitArenaCount(parts, arenas): "batch split: \(parts) parts need \(parts) arenas, have \(arenas)"
            }
        }
    }
}
