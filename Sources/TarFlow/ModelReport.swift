import Foundation
import FlowCompiler
import FlowIR

/// `tarflow inspect`: a model file as text, line by line through `out` (the caller prints;
/// names from the file may hold control characters, which the caller escapes).
public enum ModelReport {
    /// What to add to the one-screen summary.
    public struct Options: Sendable {
        /// Every metadata entry, the tensor table and the graphs.
        public var graphs = false
        /// The execution plans: stored ones with their memory plans, else as compiled now.
        public var plans = false
        /// Also write the graphs as a loader runs them (optimized) to this Graphviz file.
        public var dot: URL?
        public init(graphs: Bool = false, plans: Bool = false, dot: URL? = nil) {
            self.graphs = graphs
            self.plans = plans
            self.dot = dot
        }
    }

    /// Reads the model file at `url` (every graph verified, stored plans checked as a loader
    /// would) and reports it; `name` is how the first line calls the file.
    public static func inspect(contentsOf url: URL, name: String, options: Options, _ out: (String) -> Void) throws {
        let verified = try ModelFile.readVerified(contentsOf: url)
        let m = verified.model
        let size = ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue
        summary(m, path: name, fileBytes: size, options: options, out)
        if options.graphs {
            out("")
            out("metadata:")
            for (k, v) in m.metadata.sorted(by: { $0.key < $1.key }) { out("  \(k) = \(v)") }
            let total = m.tensors.reduce(0) { $0 + $1.bytes.count }
            out("tensors: \(m.tensors.count), \(total) bytes")
            for t in m.tensors {
                out("  \(t.name): \(t.dtype)[\(t.shape.map(String.init).joined(separator: ","))]" + (t.layout == .rowMajor ? "" : " \(t.layout)"))
            }
        }
        for vg in verified.verifiedGraphs {
            let g = vg.graph
            if options.graphs {
                out("")
                var text = Printer.print(g)
                if text.hasSuffix("\n") { text.removeLast() }
                out(text)
            }
            if options.plans && m.compiledFunction(named: g.name) == nil {
                let p = try Compiler.compile(vg)
                out("plan '\(g.name)': \(p.loadSteps.count) load-time steps, \(p.steps.count) run steps; passes changed: \(p.passLog.joined(separator: ", "))")
                for (i, s) in p.steps.enumerated() {
                    let outs = s.outputs.map { "%" + p.graph.values[$0].name }.joined(separator: ",")
                    out(String(format: "  %4d ", i) + "\(outs) = \(s.op.name)(\(s.inputs.map { "%" + p.graph.values[$0].name }.joined(separator: ", ")))")
                }
            }
        }
        if options.plans { try compiledPlans(verified, out) }
        if let dot = options.dot { try writeDot(verified, to: dot) }
    }

    /// 3228560 → "3,228,560".
    public static func grouped(_ n: Int) -> String {
        let s = String(n)
        return s.enumerated().map { i, c in (i > 0 && (s.count - i) % 3 == 0 ? "," : "") + String(c) }.joined()
    }

    /// Parameters, dtype, config, file size, graphs and stored functions with their batch sizes.
    static func summary(_ m: Model, path: String, fileBytes: Int?, options: Options, _ out: (String) -> Void) {
        out("\(path): " + (fileBytes.map { String(format: "%.1f MB", Double($0) / 1e6) + " (\(grouped($0)) bytes)" } ?? "size unknown"))
        if let c = try? TarFlowConfig(metadata: m.metadata) {
            let noise = m.metadata["tarflow.noise_std"].map { "\($0)" } ?? "unknown"
            out("config:     \(c.inChannels)x\(c.imgSize)x\(c.imgSize), patch \(c.patchSize) (\(c.numPatches) tokens of \(c.patchDim)), \(c.channels) channels, "
                + "\(c.numBlocks) blocks x \(c.layersPerBlock) layers, \(c.numHeads) heads, \(c.numClasses) classes, nvp=\(c.nvp), noise_std=\(noise)")
        } else {
            out("config:     none (not a TarFlow model file)")
        }
        var counts: [String: (tensors: Int, elements: Int)] = [:]
        for t in m.tensors {
            let n = elementCount(t.shape) ?? 0
            counts["\(t.dtype)", default: (0, 0)].tensors += 1
            counts["\(t.dtype)", default: (0, 0)].elements += n
        }
        let params = counts.values.reduce(0) { $0 + $1.elements }
        let bytes = m.tensors.reduce(0) { $0 + $1.bytes.count }
        out("parameters: \(grouped(params)) in \(m.tensors.count) tensors, \(String(format: "%.1f MB", Double(bytes) / 1e6))")
        out("dtype:      " + counts.sorted { $0.value.elements > $1.value.elements }
            .map { "\($0.key) (\($0.value.tensors) tensor\($0.value.tensors == 1 ? "" : "s"))" }.joined(separator: ", "))
        let packed = m.tensors.filter { $0.layout == .panels32 }.count
        out("layout:     " + (packed == 0 ? "row-major (linear weights are packed when loaded; tarflow compile stores them packed)"
                                : "\(packed) linear weight\(packed == 1 ? "" : "s") stored packed (panels32, read where they lie)"))
        out("graphs:     " + (m.graphs.isEmpty ? "none" : m.graphs.map { "\($0.name) (\($0.nodes.count) nodes)" }.joined(separator: ", ")))
        if m.compiled.isEmpty {
            out("compiled:   none (tarflow compile stores optimized graphs and memory plans)")
        } else {
            let fs = m.compiled.map { f -> String in
                let sizes = f.plans.map { $0.bindings.sorted { $0.key < $1.key }.map { "\($0.value)" }.joined(separator: "/") }
                return "\(f.name) (batch \(sizes.isEmpty ? "none" : sizes.joined(separator: ",")))"
            }
            out("compiled:   " + fs.joined(separator: ", ") + (options.plans ? "" : "; --plan shows them"))
        }
        if let src = m.metadata["source.file"] { out("source:     \(src)") }
        if !options.graphs { out("(--graphs: metadata, tensor table and graphs)") }
    }

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
    static func compiledPlans(_ m: VerifiedModel, _ out: (String) -> Void) throws {
        guard !m.compiled.isEmpty else {
            out("\ncompiled functions: none (graphs are compiled when loaded; `tarflow compile` stores them)")
            return
        }
        var summary: [String] = []
        for vf in m.verifiedCompiled {
            let f = vf.function
            let loaded = try Compiler.load(vf)
            let p = loaded.plan, g = p.graph
            let same = (try? AheadOfTime.matchesRecompilation(f, of: m)).map { $0 ? "identical" : "differs" } ?? "cannot recompile"
            out("")
            out("compiled function '\(f.name)' (from graph '\(f.source)', digest \(SHA256.hex(f.sourceDigest).prefix(16))…, verified; recompiling now gives: \(same))")
            out("  passes: \(f.passes.isEmpty ? "none" : f.passes.joined(separator: ", "))")
            out("  \(g.values.count) values, \(p.loadSteps.count) load-time steps, \(p.steps.count) run steps:")
            for (i, s) in p.steps.enumerated() { out(String(format: "  %5d  ", i) + step(s, g)) }
            for sp in f.plans {
                guard let mp = loaded.memoryPlans[sp.bindings] else { continue }
                let kv = stateBytes(g, sp.bindings)
                let saved = mp.naiveBytes > 0 ? 100 * (1 - Double(mp.arenaBytes) / Double(mp.naiveBytes)) : 0
                out("  plan \(binding(sp.bindings)): arena \(mp.arenaBytes) bytes (\(mib(mp.arenaBytes))), one buffer per value \(mp.naiveBytes) bytes "
                    + "(\(String(format: "%.0f", saved))% saved), \(mp.sizes.count) buffers" + (g.state.isEmpty ? "" : ", KV cache \(kv) bytes (\(mib(kv)), in the arena)"))
                var members = [[String]](repeating: [], count: mp.sizes.count)
                for (v, b) in mp.buffer.enumerated() { if let b { members[b].append("%" + g.values[v].name) } }
                out("    buffer        offset          size  live               values")
                for b in mp.offsets.indices.sorted(by: { mp.offsets[$0] != mp.offsets[$1] ? mp.offsets[$0] < mp.offsets[$1] : $0 < $1 }) {
                    let lt = mp.lifetimes[b]
                    let live = (lt.lowerBound < 0 ? "input" : "\(lt.lowerBound)") + "…" + (lt.upperBound >= p.steps.count ? "end" : "\(lt.upperBound)")
                    out(String(format: "    %6d  %12d  %12d  ", b, mp.offsets[b], mp.sizes[b]) + live.padding(toLength: 17, withPad: " ", startingAt: 0)
                        + "  " + members[b].joined(separator: " "))
                }
                summary.append(row([f.name, binding(sp.bindings), "\(p.steps.count)", "\(mp.sizes.count)", "\(mp.arenaBytes)", "\(mp.naiveBytes)", "\(kv)"]))
            }
        }
        out("")
        out("compiled functions: \(m.compiled.count), plans: \(summary.count) (bytes)")
        out(row(["function", "binding", "steps", "buffers", "arena", "naive", "kv-cache"]))
        for line in summary { out(line) }
    }

    /// The graphs a loader would run, as Graphviz: compiled functions' optimized graphs, and for
    /// graphs with none, the graph as compiled now.
    static func writeDot(_ m: VerifiedModel, to url: URL) throws {
        var graphs = m.compiled.map(\.graph)
        for g in m.verifiedGraphs where m.compiledFunction(named: g.name) == nil {
            graphs.append(try Compiler.compile(g).graph)
        }
        try FileIO.writeAtomically(Array(Graphviz.dot(graphs).utf8), to: url)
    }
}
