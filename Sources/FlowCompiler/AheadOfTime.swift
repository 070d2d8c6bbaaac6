import FlowIR

/// A compiled function ready for an executor: its execution plan and its stored memory plans,
/// checked against the graph.
public struct LoadedFunction: Sendable {
    public var plan: ExecutionPlan
    /// Verified memory plans by binding (e.g. `["B": 16]`); other bindings are planned on demand.
    public var memoryPlans: [[String: Int]: MemoryPlan]
}

extension Compiler {
    /// Compiles `graph` as `compile` does and plans its memory for each binding: the form
    /// `tarflow compile` stores in a model file (`Model.compiled`). `source` names the model
    /// graph it comes from (the graph itself, or the one it was derived from) and
    /// `sourceDigest` is `Model.sourceDigest(of: source)`.
    public static func compileAhead(_ graph: VerifiedGraph, source: String, sourceDigest: [UInt8],
                                    bindings: [[String: Int]], options: Options = Options()) throws -> CompiledFunction {
        let plan = try compile(graph, options: options)
        var plans: [CompiledFunction.Plan] = []
        var seen = Set<[String: Int]>()
        for b in bindings where seen.insert(b).inserted {
            plans.append(try MemoryPlanner.plan(plan, bindings: b).stored(bindings: b))
        }
        return CompiledFunction(name: graph.name, source: source, sourceDigest: sourceDigest, graph: plan.graph,
                                passes: plan.passLog, plans: plans)
    }

    /// The execution plan of a stored compiled function, without running the passes: its graph
    /// is verified (W rules) and scheduled, and every stored memory plan is checked against it
    /// (rules F13–F16). The source digest (F12) is the model's to check (`Model.verify`).
    /// A compiled function from outside: its graph is verified first (errors name the function).
    public static func load(_ f: CompiledFunction, constants: [String: TensorType]) throws(IRError) -> LoadedFunction {
        try load(try f.verified(constants: constants))
    }

    /// Its graph was verified where it came in (`ModelFile.read`, or
    /// `CompiledFunction.verified(constants:)` for one built in memory).
    public static func load(_ verified: VerifiedCompiledFunction) throws(IRError) -> LoadedFunction {
        let f = verified.function
        let loc = "compiled function '\(f.name)'"
        func at(_ e: IRError, _ w: String) -> IRError {
            var e = e
            e.location = e.location.isEmpty ? w : "\(w), \(e.location)"
            return e
        }
        let plan = schedule(f.graph, passLog: f.passes)
        var plans: [[String: Int]: MemoryPlan] = [:]
        for (i, p) in f.plans.enumerated() {
            let w = "\(loc), plan \(i) (\(p.bindings.keys.sorted().map { "\($0)=\(p.bindings[$0] ?? 0)" }.joined(separator: ",")))"
            guard plans[p.bindings] == nil else { throw IRError(rule: "F13", "a second plan for the same bindings", at: w) }
            do { plans[p.bindings] = try MemoryPlanner.verify(plan, p) } catch { throw at(error, w) }
        }
        return LoadedFunction(plan: plan, memoryPlans: plans)
    }
}
