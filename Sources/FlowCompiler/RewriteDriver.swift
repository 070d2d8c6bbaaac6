import FlowIR

/// A fusion pattern: at node `i` it may fold what the node reads into one op that replaces
/// the node and keeps its output value. It reads the graph only through the index.
protocol NodeRewrite {
    func rewrite(at i: Int, _ index: GraphIndex) -> (op: Op, inputs: [ValueID])?
}

/// The one driver of the fusion passes: a single forward sweep over the nodes with one
/// index, updated in place after each rewrite. A pattern looks back a bounded distance from
/// the node it replaces, so a pass costs O(nodes + operands) (rebuilding the index after each
/// rewrite, as every pass once did, made it quadratic).
///
/// Rewriting node `i` changes only node `i` and the use counts of what it reads, exactly what
/// a rebuilt index would show, so the result is the same as a rebuild after each rewrite.
enum RewriteDriver {
    /// What a sweep did.
    struct Stats: Equatable {
        var visits = 0
        var rewrites = 0
        var indexBuilds = 0
        /// Use-count changes made after rewrites (linear: at most two per operand).
        var useUpdates = 0
        var changed: Bool { rewrites > 0 }
    }

    static func sweep(_ pattern: some NodeRewrite, _ graph: inout Graph) -> Stats {
        var stats = Stats()
        var index = GraphIndex(graph)
        stats.indexBuilds += 1
        for i in graph.nodes.indices {
            stats.visits += 1
            guard let (op, inputs) = pattern.rewrite(at: i, index) else { continue }
            index.replace(i, op: op, inputs: inputs)
            stats.rewrites += 1
        }
        stats.useUpdates = index.useUpdates
        if stats.changed { graph = index.graph }
        return stats
    }
}
