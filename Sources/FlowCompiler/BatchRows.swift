import FlowIR

/// Whether a graph computes the rows of a batch symbol independently of each other, so the
/// batch can be cut into slices run as separate plans (`BatchSplitPlan`) with the same result.
///
/// An op-by-op dataflow: a value holds rows on the axis where its type has the symbol (rule
/// R1 keeps that to at most one axis), and every op reading such a value must carry each row
/// to the same row of its result without mixing rows (Spec/IR.md §6, rules R1–R7). Values
/// without the symbol are the same for every row (constants, per-run inputs). The check is
/// sound, not complete: an op it cannot prove row-preserving is refused.
public enum BatchRows {
    /// Checks that graph `g` (verified) keeps the rows of `symbol` independent and that its
    /// inputs and outputs hold them on their first axis, where a split cuts and joins them.
    public static func check(_ g: Graph, symbol: String) throws(CompilerError) {
        let dim = Dim.symbol(symbol)
        func axis(_ v: ValueID) -> Int? { g.values[v].type.shape.firstIndex(of: dim) }
        func where_(_ i: Int) -> String {
            let n = g.nodes[i]
            return "graph '\(g.name)', node \(i) (\(n.op.name) -> %\(g.values[n.outputs[0]].name))"
        }
        func placement(_ v: ValueID) -> Int {
            g.values[v].type.shape.reduce(0) { $0 + ($1 == dim ? 1 : 0) }
        }
        for v in g.inputs {
            let val = g.values[v]
            guard placement(v) <= 1, axis(v) ?? 0 == 0 else {
                throw refusal(.symbolPlacement, symbol: symbol, at: "graph '\(g.name)', input '\(val.name)'",
                              "has type \(val.type); a split cuts inputs along axis 0, so \(symbol) may only be their first dimension")
            }
        }
        for i in g.nodes.indices {
            let n = g.nodes[i]
            let y = n.outputs[0]
            if let kind = mixing(n, g, dim) {
                throw refusal(kind, symbol: symbol, at: where_(i), describe(kind, n, g))
            }
            guard placement(y) <= 1 else {
                throw refusal(.symbolPlacement, symbol: symbol, at: where_(i),
                              "its result \(g.values[y].type) has \(symbol) on more than one axis (rows paired with rows)")
            }
        }
        for v in g.outputs where axis(v) ?? 0 != 0 {
            throw refusal(.outputLayout, symbol: symbol, at: "graph '\(g.name)', output '\(g.values[v].name)'",
                          "has type \(g.values[v].type); a split joins outputs along axis 0, so their rows must be there")
        }
    }

    /// The rule node `n` breaks, if any: nil when every row of its row-holding operands
    /// reaches the same row of its result alone.
    static func mixing(_ n: Node, _ g: Graph, _ dim: Dim) -> Rule? {
        func axis(_ v: ValueID) -> Int? { g.values[v].type.shape.firstIndex(of: dim) }
        func rank(_ v: ValueID) -> Int { g.values[v].type.rank }
        func shape(_ v: ValueID) -> [Dim] { g.values[v].type.shape }
        let x = n.inputs
        let y = n.outputs[0]
        guard x.contains(where: { axis($0) != nil }) else { return nil }  // the same for every row
        let out = axis(y)
        let ry = rank(y)
        /// Operand `i` holds no rows (weights, biases, tables, positions must not).
        func shared(_ i: Int) -> Bool { axis(x[i]) == nil }
        /// Operand `i`'s rows, if any, land on the result's rows (broadcast aligns at the right).
        func aligned(_ i: Int) -> Bool { axis(x[i]).map { $0 + ry - rank(x[i]) == out } ?? true }
        switch n.op {
        case .constant, .full:
            return nil
        case .neg, .exp, .gelu, .sqrt, .log, .erf, .scale:
            return nil
        case .add, .sub, .mul, .div:
            return aligned(0) && aligned(1) ? nil : .operandsDisagree
        case .matmul(let ta, let tb):
            // Batch axes broadcast; of the matrix axes, op(A)'s rows and op(B)'s columns
            // survive, the contracted axis of each does not.
            let ra = rank(x[0]), rb = rank(x[1])
            if let a = axis(x[0]) {
                let target: Int
                if a < ra - 2 { target = a + ry - ra } else if a == (ta ? ra - 1 : ra - 2) { target = ry - 2 } else { return .contractsRows }
                guard target == out else { return .operandsDisagree }
            }
            if let b = axis(x[1]) {
                let target: Int
                if b < rb - 2 { target = b + ry - rb } else if b == (tb ? rb - 2 : rb - 1) { target = ry - 1 } else { return .contractsRows }
                guard target == out else { return .operandsDisagree }
            }
            return nil
        case .linear, .fusedLinear:
            guard let a = axis(x[0]) else { return .operandsDisagree }  // rows in the weight or bias only
            if a == rank(x[0]) - 1 { return .contractsRows }
            guard aligned(0), shared(1) else { return .operandsDisagree }
            if case .fusedLinear(_, let hasBias, let hasResidual) = n.op {
                if hasBias, !shared(2) { return .operandsDisagree }
                if hasResidual, !aligned(x.count - 1) { return .operandsDisagree }
            } else if x.count == 3, !shared(2) {
                return .operandsDisagree
            }
            return nil
        case .layerNorm:
            guard let a = axis(x[0]) else { return .operandsDisagree }
            if a == rank(x[0]) - 1 { return .reducesRows }
            return shared(1) && shared(2) ? nil : .operandsDisagree
        case .softmax(let s):
            return axis(x[0]) == s ? .reducesRows : nil
        case .causalMask:
            // Which entries it masks depends on their index along the last two axes.
            guard let a = axis(x[0]) else { return nil }
            return a >= rank(x[0]) - 2 ? .indexesRows : nil
        case .maskAfter:
            guard shared(1) else { return .operandsDisagree }
            return axis(x[0]) == rank(x[0]) - 1 ? .indexesRows : nil
        case .reshape:
            // Rows stay rows when the dims in front of the batch axis are the same (as dims,
            // or as fixed sizes with one product) before and after.
            guard let a = axis(x[0]), let p = out else { return .reshapesRows }
            let before = Array(shape(x[0])[..<a]), after = Array(shape(y)[..<p])
            if before == after { return nil }
            let pb = fixedProduct(before), pa = fixedProduct(after)
            return pb != nil && pb == pa ? nil : .reshapesRows
        case .transpose:
            return nil  // the result's type puts the rows where the permutation moves them
        case .slice(let s, _, _), .flip(let s), .pad(let s, _, _), .concat(let s):
            return x.contains { axis($0) == s } ? .indexesRows : nil
        case .gather:
            // Rows of the table are picked by index; rows of the indices pick shared rows.
            if axis(x[0]) == 0 { return .indexesRows }
            if let t = axis(x[0]) { return shared(1) && t - 1 + rank(x[1]) == out ? nil : .operandsDisagree }
            return nil
        case .writeSlice(let s):
            guard shared(2) else { return .operandsDisagree }
            if axis(x[0]) == s || axis(x[1]) == s { return .indexesRows }
            return aligned(0) && aligned(1) ? nil : .operandsDisagree
        case .reduceSum(let axes, let keep), .reduceMean(let axes, let keep):
            guard let a = axis(x[0]) else { return nil }
            if axes.contains(a) { return .reducesRows }
            return (keep ? a : a - axes.filter { $0 < a }.count) == out ? nil : .operandsDisagree
        case .attention(_, _, let mask, _, let rowScale):
            // Rows only on axis 0 of q, k, v (and the row scale): tokens and heads are mixed.
            let positional = mask == .afterPosition ? x.count - 1 : nil
            if let positional, !shared(positional) { return .operandsDisagree }
            let operands = rowScale ? 4 : 3
            for i in 0..<operands where axis(x[i]) != nil && axis(x[i]) != 0 { return .contractsRows }
            return out == 0 && axis(x[0]) == 0 ? nil : .contractsRows
        case .affineCoupling:
            // Shifts along axis 1 and splits the last axis: rows only on axis 0.
            return axis(x[0]) == 0 && (shared(1) || axis(x[1]) == 0) ? nil : .indexesRows
        }
    }

    static func fixedProduct(_ dims: [Dim]) -> Int? {
        var p = 1
        for d in dims {
            guard let n = d.fixedSize else { return nil }
            p *= n
        }
        return p
    }

    static func describe(_ kind: Rule, _ n: Node, _ g: Graph) -> String {
        let types = n.inputs.map { "\(g.values[$0].type)" }.joined(separator: ", ")
        let what: String = switch kind {
        case .symbolPlacement: "puts the batch symbol on more than one axis"
        case .reducesRows: "reduces over the axis that holds the rows"
        case .contractsRows: "sums over (or mixes) the axis that holds the rows"
        case .reshapesRows: "merges, splits or moves the axis that holds the rows"
        case .indexesRows: "indexes, shifts or masks along the axis that holds the rows"
        case .operandsDisagree: "reads operands whose rows do not line up (or a weight, bias, table or position that depends on the rows)"
        case .outputLayout: "returns rows off axis 0"
        }
        return "\(what) (operands \(types))"
    }
}

extension BatchRows {
    /// Rules R1–R7 of Spec/IR.md §6: the rule a graph whose rows are not independent breaks.
    public enum Rule: String, Sendable, Hashable, CaseIterable {
        case symbolPlacement = "R1"
        case reducesRows = "R2"
        case contractsRows = "R3"
        case reshapesRows = "R4"
        case indexesRows = "R5"
        case operandsDisagree = "R6"
        case outputLayout = "R7"
    }

    /// The error of `check`: kind `rowsNotIndependent`, the rule broken, at `location`.
    static func refusal(_ rule: Rule, symbol: String, at location: String, _ message: String) -> CompilerError {
        CompilerError(.rowsNotIndependent(rule, symbol: symbol, location: location, detail: message))
    }
}

extension CompilerError {
    /// The rule of Spec/IR.md §6 broken, for an error of kind `rowsNotIndependent`.
    public var batchRowRule: BatchRows.Rule? {
        kind == .rowsNotIndependent ? rule.flatMap(BatchRows.Rule.init(rawValue:)) : nil
    }
}
