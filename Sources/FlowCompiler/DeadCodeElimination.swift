import FlowIR

/// Removes nodes whose results no graph output needs, and the values only they defined,
/// renumbering the rest. A builder can then emit freely and keep only what is used.
public struct DeadCodeElimination: CompilerPass {
    public var name: String { "dead-code-elimination" }
    public init() {}

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        var live = [Bool](repeating: false, count: graph.values.count)
        for o in graph.outputs { live[o] = true }
        var keep = [Bool](repeating: false, count: graph.nodes.count)
        for i in graph.nodes.indices.reversed() where graph.nodes[i].outputs.contains(where: { live[$0] }) {
            keep[i] = true
            for v in graph.nodes[i].inputs { live[v] = true }
        }
        for v in graph.inputs { live[v] = true }
        let removedNodes = keep.filter { !$0 }.count
        let removedValues = live.filter { !$0 }.count
        guard removedNodes > 0 || removedValues > 0 else { return false }
        var remap = [Int](repeating: -1, count: graph.values.count)
        var values: [Value] = []
        for (i, v) in graph.values.enumerated() where live[i] {
            remap[i] = values.count
            values.append(v)
        }
        graph.nodes = graph.nodes.indices.filter { keep[$0] }.map { i in
            let n = graph.nodes[i]
            return Node(op: n.op, inputs: n.inputs.map { remap[$0] }, outputs: n.outputs.map { remap[$0] })
        }
        graph.values = values
        graph.inputs = graph.inputs.map { remap[$0] }
        graph.outputs = graph.outputs.map { remap[$0] }
        graph.state = graph.state.map { StateBinding(input: remap[$0.input], output: remap[$0.output]) }
        return true
    }
}
