import FlowIR

/// Keeps graph states in f16 where every reader can take it: a state updated by `write_slice`
/// whose new value only `attention` reads as keys or values (a KV cache). Halving the cache's
/// bytes halves what a decode step reads from it; the math stays f32 (IR.md, `write_slice`
/// and `attention`). Runs after fusion, which makes the `attention` readers; a state with any
/// other reader is left in f32.
public struct HalfPrecisionState: CompilerPass {
    public var name: String { "half-precision-state" }
    public init() {}

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        let index = GraphIndex(graph)
        var readers = [[(node: Int, operand: Int)]](repeating: [], count: graph.values.count)
        for (i, n) in graph.nodes.enumerated() { for (j, v) in n.inputs.enumerated() { readers[v].append((i, j)) } }
        var chains: [ValueID: [ValueID]] = [:]  // state output → its chain
        for s in graph.state where graph.values[s.input].type.dtype == .float32 {
            // The W10 chain input → write_slice → … → output, each link read only by the next.
            var chain = [s.input]
            var v = s.input
            while v != s.output {
                guard readers[v].count == 1, case .writeSlice = graph.nodes[readers[v][0].node].op, readers[v][0].operand == 0
                else { break }
                v = graph.nodes[readers[v][0].node].outputs[0]
                chain.append(v)
            }
            guard v == s.output, index.producer[s.output] != nil else { continue }
            // The new value: read only as attention's k or v.
            let ok = readers[s.output].allSatisfy { r in
                if case .attention = graph.nodes[r.node].op { return r.operand == 1 || r.operand == 2 }
                return false
            }
            if ok { chains[s.output] = chain }
        }
        // An attention reads k and v in one precision: both caches half, or neither.
        var settled = false
        while !settled {
            settled = true
            for n in graph.nodes {
                guard case .attention = n.op else { continue }
                let k = n.inputs[1], v = n.inputs[2]
                if (chains[k] == nil) != (chains[v] == nil) {
                    chains[k] = nil
                    chains[v] = nil
                    settled = false
                }
            }
        }
        for chain in chains.values {
            for c in chain { graph.values[c].type = TensorType(.float16, graph.values[c].type.shape) }
        }
        return !chains.isEmpty
    }
}
