import FlowIR

/// Re-derives every value's type from the graph inputs, the tensor table and each op's
/// shape rule. Passes that rewrite nodes rely on it to keep declared types honest; on a
/// freshly loaded graph it changes nothing (the verifier already checked the types).
public struct ShapeInference: CompilerPass {
    public var name: String { "shape-inference" }
    public init() {}

    public func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
        var changed = false
        for n in graph.nodes {
            let t: TensorType
            if case .constant(let name) = n.op {
                guard let ct = context.constants[name] else { throw CompilerError(.missingConstant(name)) }
                t = ct
            } else {
                do { t = try n.op.resultType(n.inputs.map { graph.values[$0].type }) } catch {
                    throw CompilerError(.shapeInference(op: n.op.name, error))
                }
            }
            for o in n.outputs where graph.values[o].type != t {
                graph.values[o].type = t
                changed = true
            }
        }
        return changed
    }

    /// Concrete shapes of every value once symbols are bound (e.g. B = 64).
    public static func concreteShapes(_ graph: Graph, bindings: [String: Int]) throws -> [[Int]] {
        try graph.values.map { v in
            guard let s = v.type.concreteShape(bindings) else {
                throw CompilerError(.unboundSymbol(value: v.name, type: v.type, bindings: bindings))
            }
            return s
        }
    }
}
