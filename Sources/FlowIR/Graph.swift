/// A value of a graph: a name (unique within the graph, used for inputs and outputs) and a type.
public struct Value: Sendable, Hashable {
    public var name: String
    public var type: TensorType

    public init(name: String, type: TensorType) {
        self.name = name
        self.type = type
    }
}

/// One op application.
public struct Node: Sendable, Hashable {
    public var op: Op
    public var inputs: [ValueID]
    public var outputs: [ValueID]

    public init(op: Op, inputs: [ValueID], outputs: [ValueID]) {
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
    }
}

/// A state kept by the runtime between calls: `output` is the new value of graph input
/// `input`, computed in place (rule W10). A KV cache is one.
public struct StateBinding: Sendable, Hashable {
    public var input: ValueID
    public var output: ValueID
    public init(input: ValueID, output: ValueID) {
        self.input = input
        self.output = output
    }
}

/// A function in SSA form: nodes in topological order, each value defined once.
public struct Graph: Sendable, Hashable {
    public var name: String
    public var values: [Value]
    public var nodes: [Node]
    public var inputs: [ValueID]
    public var outputs: [ValueID]
    /// Inputs whose new values (also graph outputs) the runtime keeps in place between calls.
    public var state: [StateBinding]

    public init(name: String, values: [Value] = [], nodes: [Node] = [], inputs: [ValueID] = [], outputs: [ValueID] = [],
                state: [StateBinding] = []) {
        self.name = name
        self.values = values
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.state = state
    }

    public func value(named name: String) -> ValueID? {
        values.firstIndex { $0.name == name }
    }

    /// Index of the node defining each value (nil for graph inputs and unused values).
    public func producers() -> [Int?] {
        var p = [Int?](repeating: nil, count: values.count)
        for (i, n) in nodes.enumerated() {
            for o in n.outputs where o >= 0 && o < values.count { p[o] = i }
        }
        return p
    }

    /// Number of node inputs plus graph outputs reading each value.
    public func useCounts() -> [Int] {
        var c = [Int](repeating: 0, count: values.count)
        for n in nodes { for i in n.inputs where i >= 0 && i < values.count { c[i] += 1 } }
        for o in outputs where o >= 0 && o < values.count { c[o] += 1 }
        return c
    }

    /// Names of the constants the graph reads.
    public var constantNames: [String] {
        nodes.compactMap { if case .constant(let t) = $0.op { return t } else { return nil } }
    }
}
