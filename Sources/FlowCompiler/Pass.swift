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
                        throw CompilerError(.invalidOutput, "pass '\(p.name)' produced an invalid graph: ", error)
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

    public var kind: Kind
    /// The graph rule broken (from the verifier's `IRError`), if any.
    public var rule: String?
    public var description: String

    public init(_ kind: Kind, _ description: String, rule: String? = nil) {
        self.kind = kind
        self.description = description
        self.rule = rule
    }

    /// A rule broken, worded `prefix` + the verifier's error.
    init(_ kind: Kind, _ prefix: String, _ error: IRError) {
        self.init(kind, prefix + "\(error)", rule: error.rule)
    }
}
