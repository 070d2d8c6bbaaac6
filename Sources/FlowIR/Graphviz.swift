/// Graphviz (`dot`) text of graphs, for `tarflow inspect --dot`: one box per node (op, its
/// attributes and result type), one edge per value read. Constants are left out as nodes, but
/// an op reading one lists its tensor names, so weight-heavy graphs stay readable.
public enum Graphviz {
    /// One `digraph` holding each graph as a cluster.
    public static func dot(_ graphs: [Graph], title: String = "flowir") -> String {
        var s = "digraph \(quote(title)) {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n"
        for (gi, g) in graphs.enumerated() {
            s += "  subgraph cluster_\(gi) {\n    label=\(quote(g.name));\n"
            let producers = g.producers()
            let isConstant: [Bool] = g.values.indices.map { v in
                if let p = producers[v], case .constant = g.nodes[p].op { return true }
                return false
            }
            func id(_ v: ValueID) -> String { "g\(gi)v\(v)" }
            let outputs = Set(g.outputs)
            for v in g.inputs {
                s += "    \(id(v)) [shape=ellipse, label=\(quote("\(g.values[v].name)\n\(g.values[v].type)"))];\n"
            }
            for n in g.nodes {
                if case .constant = n.op { continue }
                let out = n.outputs[0]
                let attrs = Printer.attributes(n.op)
                var label = n.op.name + (attrs.isEmpty ? "" : "[\(attrs)]")
                let consts = n.inputs.filter { isConstant[$0] }.compactMap { v -> String? in
                    guard let p = producers[v], case .constant(let t) = g.nodes[p].op else { return nil }
                    return t
                }
                if !consts.isEmpty { label += "\n" + consts.joined(separator: "\n") }
                label += "\n%\(g.values[out].name) : \(g.values[out].type)"
                let style = outputs.contains(out) ? ", peripheries=2" : ""
                s += "    \(id(out)) [label=\(quote(label))\(style)];\n"
                for v in n.inputs where !isConstant[v] { s += "    \(id(v)) -> \(id(out));\n" }
            }
            s += "  }\n"
        }
        return s + "}\n"
    }

    /// A double-quoted dot string; newlines become `\n`.
    static func quote(_ t: String) -> String {
        var r = "\""
        for c in t {
            switch c {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            default: r.append(c)
            }
        }
        return r + "\""
    }
}
