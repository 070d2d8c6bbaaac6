/// Builds a graph op by op, inferring each result's type with the op's shape rule, so a builder
/// (such as TarFlow's) cannot emit an ill-typed graph. Constants take their types from the
/// tensor table given at `init`.
public final class GraphBuilder {
    public private(set) var graph: Graph
    let constantTypes: [String: TensorType]
    var counter = 0

    public init(name: String, constants: [String: TensorType]) {
        graph = Graph(name: name)
        constantTypes = constants
    }

    /// Continues an existing graph (e.g. to add a loss on top of a forward pass).
    public init(extending g: Graph, name: String? = nil, constants: [String: TensorType]) {
        graph = g
        if let name { graph.name = name }
        constantTypes = constants
        counter = g.values.count
    }

    /// A graph input.
    public func input(_ name: String, _ type: TensorType) -> ValueID {
        let id = newValue(name, type)
        graph.inputs.append(id)
        return id
    }

    public func output(_ v: ValueID) { graph.outputs.append(v) }

    /// Gives a value a readable name (must be unique).
    public func rename(_ v: ValueID, _ name: String) { graph.values[v].name = name }

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
        var n = name ?? { counter += 1; return "t\(counter)" }()
        while name == nil && graph.values.contains(where: { $0.name == n }) {
            counter += 1
            n = "t\(counter)"
        }
        graph.values.append(Value(name: n, type: t))
        return graph.values.count - 1
    }
}
