import FlowIR

/// The compiler's output: an ordered list of steps over the values of an optimized graph.
///
/// Steps whose inputs all derive from constants are split off as `loadSteps`: the runtime
/// evaluates them once when it loads the plan (e.g. a flipped position embedding or the mean
/// class embedding), so the run loop only does work that depends on the inputs.
public struct ExecutionPlan: Sendable {
    public struct Step: Sendable, Hashable {
        public var op: Op
        public var inputs: [ValueID]
        public var outputs: [ValueID]
    }

    public var graph: Graph
    public var loadSteps: [Step]
    public var steps: [Step]
    /// Last step index (into `steps`) reading each value; -1 if only load steps or outputs read it.
    public var lastUse: [Int]
    /// Passes that changed the graph, for `inspect`.
    public var passLog: [String]

    public var inputNames: [String] { graph.inputs.map { graph.values[$0].name } }
    public var outputNames: [String] { graph.outputs.map { graph.values[$0].name } }

    /// Multiply-adds ×2 of the run steps for the given bindings (for GFLOP/s figures).
    public func flops(bindings: [String: Int]) -> Double {
        guard let shapes = try? ShapeInference.concreteShapes(graph, bindings: bindings) else { return 0 }
        var f = 0.0
        for s in steps {
            switch s.op {
            case .linear, .fusedLinear:
                let out = shapes[s.outputs[0]]
                let k = shapes[s.inputs[1]][1]
                f += 2 * Double(elementCount(out) ?? 0) * Double(k)
            case .attention(let heads, _, let mask, _, _):
                // q·k and p·v over the keys each query row sees (causal: i + 1 + N − M of them).
                let q = shapes[s.inputs[0]], k = shapes[s.inputs[1]], out = shapes[s.outputs[0]]
                let m = q.count == 4 ? q[2] : q[1], n = k.count == 4 ? k[2] : k[1]
                let d = out[2] / max(heads, 1)
                var pairs = Double(m * n)
                if mask == .causal { pairs = Double((0..<m).reduce(0) { $0 + min(n, $1 + 1 + n - m) }) }
                f += 4 * Double(out[0] * heads) * pairs * Double(d)
            case .matmul(let ta, _):
                let a = shapes[s.inputs[0]]
                let k = ta ? a[a.count - 2] : a[a.count - 1]
                f += 2 * Double(elementCount(shapes[s.outputs[0]]) ?? 0) * Double(k)
            default:
                f += Double(elementCount(shapes[s.outputs[0]]) ?? 0)
            }
        }
        return f
    }
}
