import FlowIR

/// Who defines and who reads each value: what pattern-matching passes walk. It owns the graph
/// being rewritten, so `replace` keeps the use counts current in O(arity) instead of a rebuild.
struct GraphIndex {
    private(set) var graph: Graph
    let producer: [Int?]
    private(set) var uses: [Int]
    /// Sum of the indices of the nodes reading each value (once per operand): while a value
    /// has one use, this is its reader, kept current by `replace` at O(1) per operand.
    private(set) var readerSum: [Int]
    let isOutput: [Bool]
    /// Use-count changes `replace` made (a test checks a sweep stays linear).
    private(set) var useUpdates = 0

    init(_ g: Graph) {
        graph = g
        producer = g.producers()
        var u = [Int](repeating: 0, count: g.values.count)
        var r = [Int](repeating: 0, count: g.values.count)
        for (ni, n) in g.nodes.enumerated() {
            for i in n.inputs {
                u[i] += 1
                r[i] += ni
            }
        }
        uses = u
        readerSum = r
        var o = [Bool](repeating: false, count: g.values.count)
        for v in g.outputs { o[v] = true }
        isOutput = o
    }

    /// The node defining `v`, if its op matches.
    func def(_ v: ValueID) -> Node? { producer[v].map { graph.nodes[$0] } }

    /// True if `v` is read only once and is no graph output: safe to fold into its reader.
    func single(_ v: ValueID) -> Bool { uses[v] == 1 && !isOutput[v] }

    /// The one node reading `v`, when `single(v)`.
    func soleReader(_ v: ValueID) -> Node? { single(v) ? graph.nodes[readerSum[v]] : nil }

    func shape(_ v: ValueID) -> [Dim] { graph.values[v].type.shape }

    /// Replaces node `index` by `op` over `inputs`, keeping its output value (and so every
    /// reader); producers and outputs are unchanged, the use counts follow.
    mutating func replace(_ index: Int, op: Op, inputs: [ValueID]) {
        for i in graph.nodes[index].inputs {
            uses[i] -= 1
            readerSum[i] -= index
        }
        for i in inputs {
            uses[i] += 1
            readerSum[i] += index
        }
        useUpdates += graph.nodes[index].inputs.count + inputs.count
        graph.nodes[index] = Node(op: op, inputs: inputs, outputs: graph.nodes[index].outputs)
    }
}
