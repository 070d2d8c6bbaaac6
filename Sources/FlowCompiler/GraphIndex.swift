import FlowIR

/// Who defines and who reads each value: what pattern-matching passes walk.
struct GraphIndex {
    let graph: Graph
    let producer: [Int?]
    let uses: [Int]
    let isOutput: [Bool]

    init(_ g: Graph) {
        graph = g
        producer = g.producers()
        var u = [Int](repeating: 0, count: g.values.count)
        for n in g.nodes { for i in n.inputs { u[i] += 1 } }
        uses = u
        var o = [Bool](repeating: false, count: g.values.count)
        for v in g.outputs { o[v] = true }
        isOutput = o
    }

    /// The node defining `v`, if its op matches.
    func def(_ v: ValueID) -> Node? { producer[v].map { graph.nodes[$0] } }

    /// True if `v` is read only once and is no graph output: safe to fold into its reader.
    func single(_ v: ValueID) -> Bool { uses[v] == 1 && !isOutput[v] }

    func shape(_ v: ValueID) -> [Dim] { graph.values[v].type.shape }
}

extension Graph {
    /// Replaces node `index` by `op` over `inputs`, keeping its output value (and so every reader).
    mutating func replaceNode(_ index: Int, op: Op, inputs: [ValueID]) {
        nodes[index] = Node(op: op, inputs: inputs, outputs: nodes[index].outputs)
    }
}
