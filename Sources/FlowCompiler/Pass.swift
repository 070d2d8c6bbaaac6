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
                        throw CompilerError("pass '\(p.name)' produced an invalid graph: \(error)")
                    }
                }
            }
        }
        return changed
    }
}

/// A failure inside the compiler (a bug, or a graph the compiler cannot handle).
public struct CompilerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
