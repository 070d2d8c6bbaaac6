/// Builds a graph op by op, inferring each result's type with the op's shape rule, so a builder
/// (such as TarFlow's) cannot emit an ill-typed graph. Constants take their types from the
/// tensor table given at `init`.
public final class GraphBuilder {
    public private(set) var graph: Graph
    let constantTypes: [String: TensorType]
    /// Fresh names are `prefix` + a counter, skipping names already taken.
    let prefix: String
    var counter = 0
    /// How many values bear each name, so a fresh name is found without scanning the values.
    var nameCounts: [String: Int] = [:]

    public init(name: String, constants: [String: TensorType]) {
        graph = Graph(name: name)
        constantTypes = constants
        prefix = "t"
    }

    /// Continues an existing graph (e.g. to add a loss on top of a forward pass). Fresh names
    /// continue the "t" numbering after the graph's values, or, with `freshNamePrefix`, count
    /// from 1 under that prefix (the gradient's "vjp1", "vjp2", …).
    public init(extending g: Graph, name: String? = nil, constants: [String: TensorType], freshNamePrefix: String? = nil) {
        graph = g
        if let name { graph.name = name }
        constantTypes = constants
        prefix = freshNamePrefix ?? "t"
        counter = freshNamePrefix == nil ? g.values.count : 0
        for v in g.values { nameCounts[v.name, default: 0] += 1 }
    }

    /// A graph input.
    public func input(_ name: String, _ type: TensorType) -> ValueID {
        let id = newValue(name, type)
        graph.inputs.append(id)
        return id
    }

    public func output(_ v: ValueID) { graph.outputs.append(v) }

    /// Gives a value a readable name (must be unique).
    public func rename(_ v: ValueID, _ name: String) {
        nameCounts[graph.values[v].name, default: 1] -= 1
        nameCounts[name, default: 0] += 1
        graph.values[v].name = name
    }

    public func type(_ v: ValueID) -> TensorType { graph.values[v].type }

    public func constant(_ tensor: String) throws(IRError) -> ValueID {
        guard let t = constantTypes[tensor] else { throw IRError(rule: "W6", "constant '\(tensor)' is not in the tensor table") }
        let id = newValue(nil, t)
        graph.nodes.append(Node(op: .constant(tensor: tensor), inputs: [], outputs: [id]))
        return id
    }

    @discardableResult
    public func apply(_ op: Op, _ inputs: ValueID..., name: String? = nil) throws(IRError) -> ValueID {
        try apply(op, inputs: inputs, name: name)
    }

    public func apply(_ op: Op, inputs: [ValueID], name: String? = nil) throws(IRError) -> ValueID {
        let t = try op.resultType(inputs.map { graph.values[$0].type })
        let id = newValue(name, t)
        graph.nodes.append(Node(op: op, inputs: inputs, outputs: [id]))
        return id
    }

    func newValue(_ name: String?, _ t: TensorType) -> ValueID {
        var n = name ?? { counter += 1; return prefix + String(counter) }()
        while name == nil && nameCounts[n, default: 0] > 0 {
            counter += 1
            n = prefix + String(counter)
        }
        nameCounts[n, default: 0] += 1
        graph.values.append(Value(name: n, type: t))
        return graph.values.count - 1
    }
}
