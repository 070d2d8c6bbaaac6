import Foundation

/// A graph the verifier accepted (rules W1–W11, and W6 against `constants` when given). Only
/// `Verifier.verified` makes one, so code that takes a `VerifiedGraph` checks nothing again:
/// a graph is verified once, where it comes in (a file, a caller's graph, a builder's output).
public struct VerifiedGraph: Sendable {
    public let graph: Graph
    /// The tensor table it was checked against (nil: constants were not checked).
    public let constants: [String: TensorType]?

    fileprivate init(_ graph: Graph, constants: [String: TensorType]?) {
        self.graph = graph
        self.constants = constants
    }

    public var name: String { graph.name }
}

extension Verifier {
    /// Verifies `g` and returns it as a `VerifiedGraph`; the error is `verify`'s.
    public static func verified(_ g: Graph, constants: [String: TensorType]? = nil) throws(IRError) -> VerifiedGraph {
        try verify(g, constants: constants)
        return VerifiedGraph(g, constants: constants)
    }
}

/// A compiled function whose optimized graph passed the verifier (rule F11's "well-formed";
/// its memory plans are FlowCompiler's to check, rules F13–F16).
public struct VerifiedCompiledFunction: Sendable {
    public let function: CompiledFunction
    public let graph: VerifiedGraph

    public var name: String { function.name }
}

extension CompiledFunction {
    /// This function with its graph verified against `constants`; errors name the function.
    public func verified(constants: [String: TensorType]) throws(IRError) -> VerifiedCompiledFunction {
        do {
            return VerifiedCompiledFunction(function: self, graph: try Verifier.verified(graph, constants: constants))
        } catch { throw error.located("compiled function '\(name)'") }
    }
}

/// A model that passed `Model.verify` (every graph against the tensor table, rules F7, F11,
/// F12): what `ModelFile.read` returns inside and what a writer needs no check for.
@dynamicMemberLookup
public struct VerifiedModel: Sendable {
    public private(set) var model: Model
    /// `model.graphs`, verified, in the same order.
    public let verifiedGraphs: [VerifiedGraph]
    /// `model.compiled`, verified, in the same order.
    public let verifiedCompiled: [VerifiedCompiledFunction]

    fileprivate init(_ model: Model, graphs: [VerifiedGraph], compiled: [VerifiedCompiledFunction]) {
        self.model = model
        verifiedGraphs = graphs
        verifiedCompiled = compiled
    }

    public subscript<T>(dynamicMember path: KeyPath<Model, T>) -> T { model[keyPath: path] }

    /// Metadata may change: no graph rule reads it.
    public var metadata: [String: MetadataValue] {
        get { model.metadata }
        set { model.metadata = newValue }
    }

    public func graph(named name: String) -> VerifiedGraph? { verifiedGraphs.first { $0.name == name } }

    public func tensor(named name: String) -> WeightTensor? { model.tensor(named: name) }

    public func compiledFunction(named name: String) -> CompiledFunction? { model.compiledFunction(named: name) }

    /// `Model.storingLinearWeights` keeps every graph valid: a constant has the same graph type
    /// (f32) whatever its storage dtype (rule W6), and compiled functions are dropped.
    public func storingLinearWeights(as dtype: DType) throws(IRError) -> VerifiedModel {
        VerifiedModel(try model.storingLinearWeights(as: dtype), graphs: verifiedGraphs, compiled: [])
    }

    /// `Model.packingLinearWeights` keeps every graph and compiled function valid: a layout
    /// changes neither a constant's type nor a source digest (F12).
    public func packingLinearWeights() -> VerifiedModel {
        VerifiedModel(model.packingLinearWeights(), graphs: verifiedGraphs, compiled: verifiedCompiled)
    }

    /// This model with `compiled` as its compiled functions, which are checked (F11, F12 and
    /// their graphs); the model's own graphs are unchanged, so they are not checked again.
    public func replacingCompiled(with compiled: [CompiledFunction]) throws(IRError) -> VerifiedModel {
        var m = model
        m.compiled = compiled
        return VerifiedModel(m, graphs: verifiedGraphs, compiled: try m.verifyCompiled(constants: m.constantTypes))
    }
}

extension Model {
    /// Runs the verifier on every graph against the tensor table, then checks the compiled
    /// functions' structure and that their source graphs are unchanged (F11, F12).
    public func verified() throws(IRError) -> VerifiedModel {
        let c = constantTypes
        var seen = Set<String>()
        var verifiedGraphs: [VerifiedGraph] = []
        for g in graphs {
            if !seen.insert(g.name).inserted { throw IRError(rule: "F7", "graph name '\(g.name)' is used twice") }
            verifiedGraphs.append(try Verifier.verified(g, constants: c))
        }
        return VerifiedModel(self, graphs: verifiedGraphs, compiled: try verifyCompiled(constants: c))
    }
}

extension ModelFile {
    /// `read(contentsOf:)`, as the verified model the reader checked.
    public static func readVerified(contentsOf url: URL, compiledFunctions: CompiledFunctions = .keep) throws -> VerifiedModel {
        let file: MappedFile
        do { file = try MappedFile(path: url.path, what: "the model file \(url.path)") } catch { throw FileAccessError.modelFile(error) }
        do {
            return try decode(file.buffer, owner: file, compiledFunctions: compiledFunctions)
        } catch let e as IRError {
            throw e.located(url.path)
        }
    }

    /// Writes a verified model atomically; only the tensor table (F5) is checked, by `encode`.
    public static func write(_ model: VerifiedModel, to url: URL) throws {
        try FileIO.writeAtomically(to: url) { sink in try encode(model.model, to: sink) }
    }

    /// The exact bytes of a verified model's file (see `encode(_: Model)`).
    public static func encode(_ model: VerifiedModel) throws -> [UInt8] { try encode(model.model) }
}
