import FlowIR

/// A graph-to-graph transformation. It reports whether it changed the graph, so a pipeline
/// can log what happened and skip re-verification when nothing did.
public protocol CompilerPass: Sendable {
    var name: String { get }
    func run(_ graph: inout Graph, context: PassContext) throws -> Bool
}

/// What passes may read besides the graph.
public struct PassContext: Sendable {
    /// The tensor table's types (name → type in the graph).
    public var constants: [String: TensorType]

    public init(constants: [String: TensorType]) { self.constants = constants }
}

/// Runs passes in order. In debug builds (or with `verifyEachPass`) the verifier runs after
/// every pass that changed the graph, and its error names the pass that broke the graph.
public struct PassPipeline: Sendable {
    public var passes: [any CompilerPass]
    public var verifyEachPass: Bool

    public init(_ passes: [any CompilerPass], verifyEachPass: Bool = _isDebugAssertConfiguration()) {
        self.passes = passes
        self.verifyEachPass = verifyEachPass
    }

    /// Names of the passes that changed the graph, in order.
    @discardableResult
    public func run(_ graph: inout Graph, context: PassContext) throws -> [String] {
        var changed: [String] = []
        for p in passes {
            if try p.run(&graph, context: context) {
                changed.append(p.name)
                if verifyEachPass {
                    do { try Verifier.verify(graph, constants: context.constants) } catch {
                        throw CompilerError(.invalidPassOutput(pass: p.name, error))
                    }
                }
            }
        }
        return changed
    }
}

/// A failure inside the compiler (a bug, or a graph the compiler cannot handle). `kind` says
/// which; `rule` is the graph rule (W…) broken, when the failure is one.
public struct CompilerError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, with the graph, value, pass and the verifier's error as data; the
    /// message is worded once, in `Failure.description`.
    public var failure: Failure
    public var kind: Kind { failure.kind }
    /// The graph rule broken (from the verifier's `IRError`, or Spec/IR.md §6 for a batch-row
    /// refusal), if any.
    public var rule: String? { failure.rule }
    public var description: String { failure.description }

    public init(_ failure: Failure) { self.failure = failure }

    public enum Failure: Sendable, Equatable, CustomStringConvertible {
        /// The graph handed to the compiler breaks a rule.
        case invalidInput(IRError)
        /// Pass `pass` left a graph that breaks a rule (`verifyEachPass`).
        case invalidPassOutput(pass: String, IRError)
        case missingConstant(String)
        /// The shape rule of op `op` refused its operands.
        case shapeInference(op: String, IRError)
        case unboundSymbol(value: String, type: TensorType, bindings: [String: Int])
        case tooLarge(graph: String, bindings: [String: Int])
        /// `BatchRows.check`: at `location`, `detail` (the op and operands) breaks `rule`.
        case rowsNotIndependent(BatchRows.Rule, symbol: String, location: String, detail: String)
        /// `Differentiate` refused or failed.
        case differentiate(DifferentiateFailure)

        public var kind: Kind {
            switch self {
            case .invalidInput: .invalidInput
            case .invalidPassOutput: .invalidOutput
            case .missingConstant: .missingConstant
            case .shapeInference: .shapeInference
            case .unboundSymbol: .unboundSymbol
            case .tooLarge: .tooLarge
            case .rowsNotIndependent: .rowsNotIndependent
            case .differentiate(let d): d.kind
            }
        }

        public var rule: String? {
            switch self {
            case .invalidInput(let e), .invalidPassOutput(_, let e), .shapeInference(_, let e): e.rule
            case .rowsNotIndependent(let r, _, _, _): r.rawValue
            case .differentiate(let d): d.rule
            case .missingConstant, .unboundSymbol, .tooLarge: nil
            }
        }

        public var description: String {
            switch self {
            case let .invalidInput(e): "input graph is invalid: \(e)"
            case let .invalidPassOutput(pass, e): "pass '\(pass)' produced an invalid graph: \(e)"
            case let .missingConstant(name): "constant '\(name)' is not in the tensor table"
            case let .shapeInference(op, e): "shape inference failed at \(op): \(e)"
            case let .unboundSymbol(value, type, bindings): "value '\(value)' has an unbound symbol in \(type) (bound: \(bindings))"
            case let .tooLarge(graph, bindings): "the buffers of graph '\(graph)' for \(bindings) overflow the address space"
            case let .rowsNotIndependent(rule, symbol, location, detail):
                "\(location): \(detail) [rule \(rule.rawValue), see Spec/IR.md §6]; the rows of \(symbol) are not independent, "
                    + "so the batch cannot be split: run the graph whole (Executor.run or bind)"
            case let .differentiate(d): "differentiate: \(d)"
            }
        }
    }

    /// What `Differentiate` refused (kind `invalidRequest` or `noDerivative`) or got wrong.
    public enum DifferentiateFailure: Sendable, Equatable, CustomStringConvertible {
        case invalidInput(IRError)
        case notAnOutput(String, graph: String)
        case outputNotScalar(String, type: TensorType)
        case notAnInput(String, graph: String)
        case inputNotFloat(String, type: TensorType)
        case listedTwice(String)
        case gradientNameTaken(input: String, graph: String)
        /// A vector-Jacobian rule of op `op` (node `node` -> `value`) built an invalid node.
        case ruleFailed(op: String, node: Int, value: String, IRError)
        /// No rule for `what` (node `node` -> `value`), because `why`.
        case noDerivative(what: String, node: Int, value: String, why: String)
        case buildFailed(IRError)
        case invalidResult(IRError)

        public var kind: Kind {
            switch self {
            case .invalidInput: .invalidInput
            case .notAnOutput, .outputNotScalar, .notAnInput, .inputNotFloat, .listedTwice, .gradientNameTaken: .invalidRequest
            case .ruleFailed, .buildFailed, .invalidResult: .invalidOutput
            case .noDerivative: .noDerivative
            }
        }

        public var rule: String? {
            switch self {
            case .invalidInput(let e), .ruleFailed(_, _, _, let e), .buildFailed(let e), .invalidResult(let e): e.rule
            case .notAnOutput, .outputNotScalar, .notAnInput, .inputNotFloat, .listedTwice, .gradientNameTaken, .noDerivative: nil
            }
        }

        public var description: String {
            switch self {
            case let .invalidInput(e): "the input graph is invalid: \(e)"
            case let .notAnOutput(name, graph): "'\(name)' is not an output of graph '\(graph)'"
            case let .outputNotScalar(name, type):
                "output '\(name)' must be a float32 scalar of shape [] or [1], is \(type); reduce it first (e.g. reduce_sum)"
            case let .notAnInput(name, graph): "'\(name)' is not an input of graph '\(graph)'"
            case let .inputNotFloat(name, type): "input '\(name)' is \(type); only float32 inputs have gradients"
            case let .listedTwice(name): "input '\(name)' is listed twice in wrt"
            case let .gradientNameTaken(input, graph): "graph '\(graph)' already has a value named 'grad.\(input)'"
            case let .ruleFailed(op, node, value, e):
                "internal error in the vector-Jacobian rule of \(op) (node \(node) -> %\(value)): \(e)"
            case let .noDerivative(what, node, value, why): "no vector-Jacobian rule for \(what) (node \(node) -> %\(value)): \(why)"
            case let .buildFailed(e): "internal error while building the gradient: \(e)"
            case let .invalidResult(e): "produced an invalid graph (a bug in a vector-Jacobian rule): \(e)"
            }
        }
    }

    public enum Kind: String, Sendable {
        /// The graph handed to the compiler (or to `Differentiate`) breaks a graph rule.
        case invalidInput
        /// A pass or a vector-Jacobian rule produced a graph that breaks a rule: a compiler bug.
        case invalidOutput
        /// A constant the graph reads is not in the tensor table.
        case missingConstant
        /// An op's result type could not be inferred from its operands.
        case shapeInference
        /// A value's shape names a symbol the bindings leave unbound.
        case unboundSymbol
        /// The buffers for these bindings do not fit the address space.
        case tooLarge
        /// `Differentiate` was asked for something it does not do (not an output, not f32, ...).
        case invalidRequest
        /// An op has no derivative here.
        case noDerivative
        /// The rows of the batch symbol are not independent, so the batch cannot be split
        /// (`BatchRows.check`); `rule` is the rule of Spec/IR.md §6 broken (`batchRowRule`).
        case rowsNotIndependent
    }
}
