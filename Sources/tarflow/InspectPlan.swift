import Foundation
import FlowCompiler
import FlowIR
import TarFlow

/// `tarflow inspect --plan` for compiled functions: each stored function's steps and, per
/// stored binding, every buffer's place in the arena; then one summary line per plan.
enum PlanReport {
    static func step(_ s: ExecutionPlan.Step, _ g: Graph) -> String {
        let attrs = Printer.attributes(s.op)
        let outs = s.outputs.map { "%" + g.values[$0].name }.joined(separator: ",")
        let ins = s.inputs.map { "%" + g.values[$0].name }.joined(separator: ", ")
        let type = s.outputs.map { g.values[$0].type.description }.joined(separator: ", ")
        return "\(outs) = \(s.op.name)\(attrs.isEmpty ? "" : "[\(attrs)]")(\(ins)) : \(type)"
    }

    /// Bytes of the state inputs (KV caches) under a binding.
    static func stateBytes(_ g: Graph, _ bindings: [String: Int]) -> Int {
        g.state.reduce(0) { acc, st in
            let t = g.values[st.input].type
            let n = t.concreteShape(bindings).flatMap { elementCount($0) } ?? 0
            return acc + n * t.dtype.byteSize
        }
    }

    /// A summary row: two left-aligned columns, then right-aligned numbers.
    static func row(_ c: [String]) -> String {
        let widths = [10, 8, 7, 8, 14, 14, 14]
        return "  " + c.enumerated().map { i, t in
            let pad = String(repeating: " ", count: max(0, widths[min(i, widths.count - 1)] - t.count))
            return i < 2 ? t + pad : pad + t
        }.joined(separator: " ")
    }

    static func mib(_ b: Int) -> String { String(format: "%.2f MiB", Double(b) / 1_048_576) }

    static func binding(_ b: [String: Int]) -> String { b.keys.sorted().map { "\($0)=\(b[$0] ?? 0)" }.joined(separator: ",") }

    /// Prints every compiled function of `m` (verified as a loader would) and a summary.
    static func printCompiled(_ m: Model) throws {
        guard !m.compiled.isEmpty else {
            print("\ncompiled functions: none (graphs are compiled when loaded; `tarflow compile` stores them)")
            return
        }
        let constants = m.constantTypes
        var summary: [String] = []
        for f in m.compiled {
            let loaded = try Compiler.load(f, constants: constants)
            let p = loaded.plan, g = p.graph
            let same = (try? AheadOfTime.matchesRecompilation(f, of: m)).map { $0 ? "identical" : "differs" } ?? "cannot recompile"
            print()
            print("compiled function '\(f.name)' (from graph '\(f.source)', digest \(SHA256.hex(f.sourceDigest).prefix(16))…, verified; recompiling now gives: \(same))")
            print("  passes: \(f.passes.isEmpty ? "none" : f.passes.joined(separator: ", "))")
            print("  \(g.values.count) values, \(p.loadSteps.count) load-time steps, \(p.steps.count) run steps:")
            for (i, s) in p.steps.enumerated() { print(String(format: "  %5d  ", i) + step(s, g)) }
            for sp in f.plans {
                guard let mp = loaded.memoryPlans[sp.bindings] else { continue }
                let kv = stateBytes(g, sp.bindings)
                let saved = mp.naiveBytes > 0 ? 100 * (1 - Double(mp.arenaBytes) / Double(mp.naiveBytes)) : 0
                print("  plan \(binding(sp.bindings)): arena \(mp.arenaBytes) bytes (\(mib(mp.arenaBytes))), one buffer per value \(mp.naiveBytes) bytes "
                    + "(\(String(format: "%.0f", saved))% saved), \(mp.sizes.count) buffers" + (g.state.isEmpty ? "" : ", KV cache \(kv) bytes (\(mib(kv)), in the arena)"))
                var members = [[String]](repeating: [], count: mp.sizes.count)
                for (v, b) in mp.buffer.enumerated() { if let b { members[b].append("%" + g.values[v].name) } }
                print("    buffer        offset          size  live               values")
                for b in mp.offsets.indices.sorted(by: { mp.offsets[$0] != mp.offsets[$1] ? mp.offsets[$0] < mp.offsets[$1] : $0 < $1 }) {
                    let lt = mp.lifetimes[b]
                    let live = (lt.lowerBound < 0 ? "input" : "\(lt.lowerBound)") + "…" + (lt.upperBound >= p.steps.count ? "end" : "\(lt.upperBound)")
                    print(String(format: "    %6d  %12d  %12d  ", b, mp.offsets[b], mp.sizes[b]) + live.padding(toLength: 17, withPad: " ", startingAt: 0)
                        + "  " + members[b].joined(separator: " "))
                }
                summary.append(row([f.name, binding(sp.bindings), "\(p.steps.count)", "\(mp.sizes.count)", "\(mp.arenaBytes)", "\(mp.naiveBytes)", "\(kv)"]))
            }
        }
        print()
        print("compiled functions: \(m.compiled.count), plans: \(summary.count) (bytes)")
        print(row(["function", "binding", "steps", "buffers", "arena", "naive", "kv-cache"]))
        for line in summary { print(line) }
    }

    /// The graphs a loader would run, as Graphviz: compiled functions' optimized graphs, and for
    /// graphs with none, the graph as compiled now.
    static func writeDot(_ m: Model, to path: String) throws {
        var graphs = m.compiled.map(\.graph)
        for g in m.graphs where m.compiledFunction(named: g.name) == nil {
            graphs.append(try Compiler.compile(g, constants: m.constantTypes).graph)
        }
        try FileIO.writeAtomically(Array(Graphviz.dot(graphs).utf8), to: URL(fileURLWithPath: path))
    }
}
