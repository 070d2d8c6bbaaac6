import FlowIR

/// Graph → execution plan: verify, run the pass pipeline, split load-time work, record
/// liveness. Fusion and memory planning slot in as further passes.
public enum Compiler {
    public struct Options: Sendable {
        public var verifyEachPass: Bool = _isDebugAssertConfiguration()
        /// Run the fusion passes (off: the plan runs the primitive ops as written).
        public var fusion = true
        /// Keep KV-cache states in f16 (`HalfPrecisionState`; needs fusion).
        public var halfPrecisionState = false
        public init() {}
        public init(fusion: Bool, halfPrecisionState: Bool = false) {
            self.fusion = fusion
            self.halfPrecisionState = halfPrecisionState
        }
    }

    public static func defaultPasses(fusion: Bool = true, halfPrecisionState: Bool = false) -> [any CompilerPass] {
        var p: [any CompilerPass] = [DeadCodeElimination(), ShapeInference()]
        if fusion { p += [FuseAttention(), FuseAffineCoupling(), FuseLinearEpilogue(), DeadCodeElimination()] }
        if fusion && halfPrecisionState { p.append(HalfPrecisionState()) }
        return p
    }

    /// Compiles a graph from outside: verified here first (see `verifiedInput`).
    public static func compile(_ input: Graph, constants: [String: TensorType], options: Options = Options()) throws -> ExecutionPlan {
        try compile(try verifiedInput(input, constants: constants), options: options)
    }

    /// Compiles a graph the verifier accepted against the tensor table the passes will see.
    public static func compile(_ input: VerifiedGraph, options: Options = Options()) throws -> ExecutionPlan {
        var g = input.graph
        let log = try PassPipeline(defaultPasses(fusion: options.fusion, halfPrecisionState: options.halfPrecisionState), verifyEachPass: options.verifyEachPass)
            .run(&g, context: PassContext(constants: input.constants ?? [:]))
        return schedule(g, passLog: log)
    }

    /// The compiler's check of a graph it is handed: the verifier against `constants`, its
    /// error worded as the compiler's.
    public static func verifiedInput(_ input: Graph, constants: [String: TensorType]) throws -> VerifiedGraph {
        do { return try Verifier.verified(input, constants: constants) } catch {
            throw CompilerError(.invalidInput(error))
        }
    }

    /// The last, cheap part of `compile` on an already optimized graph: split off the load-time
    /// steps and record liveness. A stored compiled function (`tarflow compile`) is loaded
    /// through this alone, without the passes.
    public static func schedule(_ g: Graph, passLog: [String] = []) -> ExecutionPlan {
        // Values that depend on graph inputs (directly or transitively); the rest is load-time.
        var dynamic = [Bool](repeating: false, count: g.values.count)
        for v in g.inputs { dynamic[v] = true }
        var load: [ExecutionPlan.Step] = []
        var run: [ExecutionPlan.Step] = []
        for n in g.nodes {
            let step = ExecutionPlan.Step(op: n.op, inputs: n.inputs, outputs: n.outputs)
            var isDynamic = n.inputs.contains { dynamic[$0] }
            // A fill whose shape names a symbol can only run once the symbol is bound.
            if case .full(_, let shape) = n.op, shape.contains(where: { $0.fixedSize == nil }) { isDynamic = true }
            if case .constant = n.op { isDynamic = false }
            if isDynamic {
                for o in n.outputs { dynamic[o] = true }
                run.append(step)
            } else {
                load.append(step)
            }
        }
        var lastUse = [Int](repeating: -1, count: g.values.count)
        for (i, s) in run.enumerated() { for v in s.inputs { lastUse[v] = i } }
        return ExecutionPlan(graph: g, loadSteps: load, steps: run, lastUse: lastUse, passLog: passLog)
    }
}
