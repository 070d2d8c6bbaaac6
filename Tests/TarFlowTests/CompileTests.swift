import Foundation
import FlowTestSupport
import XCTest
import FlowCompiler
@testable import FlowIR
import FlowRuntime
@testable import TarFlow

/// Ahead-of-time compilation (`tarflow compile`): a compiled model file gives exactly the
/// outputs of compiling at load time, and a stored plan that is unsafe or stale is refused
/// with the rule it breaks.
final class CompileTests: XCTestCase {
    /// A fixture model compiled for its batch size, written and read back as a file would be.
    func compiled(_ name: String, batches: [Int]? = nil, functions: [AheadOfTime.Function] = AheadOfTime.Function.allCases) throws -> TarFlowModel {
        let c = try Fixtures.load(name)
        let base = try Fixtures.model(name).model
        let m = try AheadOfTime.compile(base, functions: functions, batches: batches ?? [c.batch])
        let back = try ModelFile.decode(try ModelFile.encode(m))
        XCTAssertEqual(back.compiled, m.compiled, "\(name): compiled functions survive the file")
        return try TarFlowModel(model: back)
    }

    func bits(_ t: Tensor) -> [UInt32] { t.floats.map(\.bitPattern) }

    /// Forward, every sampling variant and the denoising gradient: bit for bit equal to the
    /// model compiled at load, at the stored batch size and at one that is not stored.
    func checkEqual(_ name: String) throws {
        let c = try Fixtures.load(name)
        let atLoad = try TarFlowModel(model: try Fixtures.model(name).model)
        // MNIST uses 4 of its 16 images (debug builds are slow). Plans are stored for that batch
        // (and twice it for decode steps); batch 2 is not stored, so it is planned at load.
        let rows = name == "mnist_trained" ? 4 : c.batch
        let ahead = try compiled(name, batches: [rows])
        for f in ["forward", "gradient"] + (0..<ahead.config.numBlocks).map({ "decode\($0)" }) {
            XCTAssertTrue(ahead.isPrecompiled(f), "\(name): \(f) comes from the file")
            XCTAssertFalse(atLoad.isPrecompiled(f))
        }
        let all = c.tensor("input.x")
        let per = all.count / c.batch
        func first(_ n: Int) -> Tensor { Tensor(shape: [n] + all.shape.dropFirst(), floats: Array(all.floats.prefix(n * per))) }
        for n in [rows, 2] {
            let images = first(n), labels = c.labels.map { Array($0.prefix(n)) }
            let a = try atLoad.forward(images: images, labels: labels), b = try ahead.forward(images: images, labels: labels)
            XCTAssertEqual(bits(a.z), bits(b.z), "\(name): z")
            XCTAssertEqual(a.logdets.map(\.bitPattern), b.logdets.map(\.bitPattern), "\(name): logdets")
            for (p, q) in zip(a.blocks, b.blocks) { XCTAssertEqual(bits(p), bits(q), "\(name): blocks") }
            let sigma = c.json["denoise_noise_std"] as? Double ?? 0.1
            let da = try atLoad.denoise(images: images, labels: labels, noiseStd: sigma)
            let db = try ahead.denoise(images: images, labels: labels, noiseStd: sigma)
            XCTAssertEqual(bits(da.gradient), bits(db.gradient), "\(name): denoise gradient")
            XCTAssertEqual(bits(da.images), bits(db.images), "\(name): denoised images")
        }
        // The compiled file stores its linear weights packed (panels32), and they are read where
        // they lie; the model compiled at load packs a copy of each.
        XCTAssertGreaterThan(ahead.weights.packedBytes, 0)
        XCTAssertEqual(ahead.weights.inPlaceBytes, ahead.weights.packedBytes, "\(name): every packed weight is read in place")
        XCTAssertEqual(atLoad.weights.inPlaceBytes, 0)
        XCTAssertEqual(atLoad.weights.packedBytes, ahead.weights.packedBytes)
        XCTAssertTrue(ahead.model.linearWeightNames.allSatisfy { ahead.model.tensor(named: $0)?.layout == .panels32 })
        // The stored plan, not a new one, is what the bound forward plan uses.
        let stored = try XCTUnwrap(ahead.model.compiledFunction(named: "forward")?.plan(for: ["B": rows]))
        XCTAssertEqual(try ahead.forwardPlan().bind(["B": rows]).memoryPlan.offsets, stored.offsets)

        let labels = c.labels.map { Array($0.prefix(rows).map { max($0, 0) }) }
        let noise = c.tensor("input.noise")
        let z = Tensor(shape: [rows] + noise.shape.dropFirst(), floats: Array(noise.floats.prefix(rows * noise.count / c.batch)))
        for v in c.json["sample"] as! [[String: Any]] {
            let opts = SamplingOptions(
                guidance: Float(v["guidance"] as? Double ?? 0), guide: GuidanceTarget(officialName: v["guide_what"] as? String ?? "ab")!,
                attentionTemperature: Float(v["attn_temp"] as? Double ?? 1), annealed: v["annealed_guidance"] as? Bool ?? false)
            let a = try atLoad.sample(noise: z, labels: labels, options: opts)
            let b = try ahead.sample(noise: z, labels: labels, options: opts)
            XCTAssertEqual(bits(a), bits(b), "\(name): samples with \(v)")
        }
    }

    func testTinyUncondEqualsCompileAtLoad() throws { try checkEqual("tiny_uncond") }

    /// Half-precision weights stored packed give bit for bit what packing them at load gives:
    /// f16 and bf16 widened are read in place; bf16 on native dot products or AMX tiles is
    /// repacked from the stored panels into that kernel's layout (every path this CPU has).
    func testPackedHalfPrecisionWeightsEqualPackingAtLoad() throws {
        let c = try Fixtures.load("cond_guided")
        let base = try Fixtures.model("cond_guided").model
        let x = c.tensor("input.x"), labels = c.labels
        let noise = c.tensor("input.noise")
        defer { unsetenv("TARFLOW_AMX"); unsetenv("TARFLOW_BF16DOT") }
        let paths: [(DType, String?, [String: String])] = [
            (.float16, nil, [:]), (.bfloat16, "amx", [:]), (.bfloat16, "dot", ["TARFLOW_AMX": "0"]), (.bfloat16, "widened", ["TARFLOW_BF16DOT": "0"]),
        ]
        var ran = 0
        for (dtype, path, env) in paths {
            unsetenv("TARFLOW_AMX"); unsetenv("TARFLOW_BF16DOT")
            for (k, v) in env { setenv(k, v, 1) }
            if let path, WeightStore.bf16Path != path { continue }  // not on this CPU
            ran += 1
            let half = try base.storingLinearWeights(as: dtype)
            let packedFile = try ModelFile.decode(try ModelFile.encode(try AheadOfTime.compile(half, functions: [.forward, .sample], batches: [c.batch])))
            let atLoad = try TarFlowModel(model: half), ahead = try TarFlowModel(model: packedFile)
            let name = "\(dtype)\(path.map { " (\($0))" } ?? "")"
            let a = try atLoad.forward(images: x, labels: labels), b = try ahead.forward(images: x, labels: labels)
            XCTAssertEqual(bits(a.z), bits(b.z), "\(name): z")
            XCTAssertEqual(a.logdets.map(\.bitPattern), b.logdets.map(\.bitPattern), "\(name): logdets")
            let opts = SamplingOptions(guidance: 2)
            let ys = labels.map { $0.map { max($0, 0) } }
            XCTAssertEqual(bits(try atLoad.sample(noise: noise, labels: ys, options: opts)), bits(try ahead.sample(noise: noise, labels: ys, options: opts)),
                           "\(name): samples")
            let widened = dtype == .float16 || path == "widened"
            XCTAssertEqual(ahead.weights.inPlaceBytes, widened ? ahead.weights.packedBytes : 0, "\(name): read in place only where the layout is the kernel's")
            XCTAssertGreaterThan(ahead.weights.packedBytes, 0)
        }
        XCTAssertGreaterThanOrEqual(ran, 2, "f16 and at least the widened bf16 path run everywhere")
    }
    func testCondGuidedEqualsCompileAtLoad() throws { try checkEqual("cond_guided") }
    func testVPPriorEqualsCompileAtLoad() throws { try checkEqual("vp_prior") }
    func testMNISTEqualsCompileAtLoad() throws { try checkEqual("mnist_trained") }

    /// What `tarflow compile` stores is exactly the compiler's output, and files are deterministic.
    func testCompiledFileIsTheCompilersOutputAndDeterministic() throws {
        let base = try Fixtures.model("cond_guided").model
        let m = try AheadOfTime.compile(base, batches: [4, 1])
        XCTAssertEqual(m.compiled.map(\.name), ["forward", "decode0", "decode1", "decode2", "gradient"])
        let f = try XCTUnwrap(m.compiledFunction(named: "forward"))
        let plan = try Compiler.compile(base.graph(named: "forward")!, constants: base.constantTypes)
        XCTAssertEqual(f.graph, plan.graph)
        XCTAssertEqual(f.passes, plan.passLog)
        XCTAssertEqual(f.plans.map(\.bindings), [["B": 1], ["B": 4]])
        XCTAssertEqual(f.plans[1], try MemoryPlanner.plan(plan, bindings: ["B": 4]).stored(bindings: ["B": 4]))
        // Decode steps also get plans for the guided batch (twice the images).
        XCTAssertEqual(m.compiledFunction(named: "decode1")?.plans.map(\.bindings), [["B": 1], ["B": 2], ["B": 4], ["B": 8]])
        XCTAssertEqual(m.compiledFunction(named: "gradient")?.source, "forward")
        XCTAssertTrue(f.graph.nodes.contains { if case .attention = $0.op { true } else { false } }, "fused ops are stored as ops")
        XCTAssertEqual(try ModelFile.encode(m), try ModelFile.encode(try AheadOfTime.compile(base, batches: [4, 1])))
        for g in m.compiled { XCTAssertTrue(try AheadOfTime.matchesRecompilation(g, of: m)) }
        // Only what was asked for.
        let fwd = try AheadOfTime.compile(base, functions: [.forward], batches: [2])
        XCTAssertEqual(fwd.compiled.map(\.name), ["forward"])
        let tm = try TarFlowModel(model: fwd)
        XCTAssertTrue(tm.isPrecompiled("forward"))
        XCTAssertFalse(tm.isPrecompiled("decode0"))
    }

    /// The digest's hand-written encoding equals SwiftProtobuf's on real graphs (every op the
    /// converter and the passes make, the gradient's included).
    func testDigestEncodingMatchesSwiftProtobufOnFixtureGraphs() throws {
        for name in ["cond_guided", "vp_prior"] {
            let m = try AheadOfTime.compile(try Fixtures.model(name).model, batches: [2])
            for g in m.graphs + m.compiled.map(\.graph) {
                XCTAssertEqual(CanonicalEncoding.graph(g.proto), try CanonicalEncoding.reference(g.proto), "\(name): \(g.name)")
            }
        }
    }

    // MARK: Refused plans

    func tiny() throws -> Model { try AheadOfTime.compile(try Fixtures.model("tiny_uncond").model, batches: [4]).model }

    /// Applies `edit` to the forward function's plan for B = 4 and expects `rule` when loading.
    func assertRefused(_ rule: String, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                       _ edit: (inout CompiledFunction.Plan, Graph, MemoryPlan) throws -> Void) throws {
        var m = try tiny()
        let i = try XCTUnwrap(m.compiled.firstIndex { $0.name == "forward" })
        let loaded = try Compiler.load(m.compiled[i], constants: m.constantTypes)
        let mp = try XCTUnwrap(loaded.memoryPlans[["B": 4]])
        try edit(&m.compiled[i].plans[0], m.compiled[i].graph, mp)
        // The file itself still reads (F11, F12 hold); the model load refuses the plan.
        let back = try ModelFile.decode(try ModelFile.encode(m))
        XCTAssertThrowsError(try TarFlowModel(model: back), what, file: file, line: line) { e in
            XCTAssertEqual((e as? IRError)?.rule, rule, "\(what): \(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains("compiled function 'forward', plan 0 (B=4"), "\(e)", file: file, line: line)
        }
    }

    func testOverlappingBuffersAreRefused() throws {
        try assertRefused("F16", "two live buffers at one offset") { p, _, mp in
            // The buffer at offset 0 is the largest; move another one live at the same time onto it.
            let a = try XCTUnwrap(p.offsets.firstIndex(of: 0))
            let b = try XCTUnwrap(p.offsets.indices.first { $0 != a && mp.lifetimes[$0].overlaps(mp.lifetimes[a]) && p.sizes[$0] > 0 })
            p.offsets[b] = 0
        }
        try assertRefused("F16", "a buffer sliding half over another") { p, _, mp in
            let a = try XCTUnwrap(p.offsets.firstIndex(of: 0))
            let b = try XCTUnwrap(p.offsets.indices.first {
                $0 != a && mp.lifetimes[$0].overlaps(mp.lifetimes[a]) && p.sizes[$0] >= 128 && p.sizes[$0] + 64 <= p.sizes[a]
            })
            p.offsets[b] = 64
        }
    }

    func testWrongSizesAndPlacementAreRefused() throws {
        try assertRefused("F15", "buffer smaller than its value") { p, _, _ in
            let b = try XCTUnwrap(p.sizes.indices.max { p.sizes[$0] < p.sizes[$1] })
            p.sizes[b] -= 64
        }
        try assertRefused("F15", "misaligned buffer") { p, _, _ in p.offsets[p.offsets.count - 1] += 4 }
        try assertRefused("F15", "buffer past the arena") { p, _, _ in p.arenaBytes -= 64 }
        try assertRefused("F15", "wrong naive total") { p, _, _ in p.naiveBytes += 64 }
        try assertRefused("F14", "run-time value without a buffer") { p, g, _ in
            let v = try XCTUnwrap(g.value(named: "z"))
            p.buffer[v] = nil
        }
        try assertRefused("F14", "load-time value with a buffer") { p, g, _ in
            let v = try XCTUnwrap(g.nodes.first { if case .constant = $0.op { true } else { false } }?.outputs[0])
            p.buffer[v] = 0
        }
        try assertRefused("F13", "a binding for another symbol") { p, _, _ in p.bindings = ["B": 4, "N": 2] }
    }

    /// A plan for the state of a decode step must keep the new cache where the next step reads it.
    func testStateMovedAwayIsRefused() throws {
        var m = try tiny()
        let i = try XCTUnwrap(m.compiled.firstIndex { $0.name == "decode0" })
        let g = m.compiled[i].graph
        let st = try XCTUnwrap(g.state.first)
        var p = m.compiled[i].plans[0]
        // Give the new cache a buffer of its own at the end of the arena.
        p.buffer[st.output] = p.sizes.count
        p.offsets.append(p.arenaBytes)
        let size = p.sizes[try XCTUnwrap(p.buffer[st.input] ?? nil)]
        p.sizes.append(size)
        p.arenaBytes += size
        XCTAssertLessThanOrEqual(p.arenaBytes, p.naiveBytes)
        m.compiled[i].plans[0] = p
        XCTAssertThrowsError(try Compiler.load(m.compiled[i], constants: m.constantTypes)) { e in
            XCTAssertEqual((e as? IRError)?.rule, "F16", "\(e)")
            XCTAssertTrue("\(e)".contains("next run would not see it"), "\(e)")
        }
    }

    /// A different but safe plan (every buffer 64 bytes higher) is accepted, used, and gives
    /// the same outputs.
    func testAnotherSafePlanIsAcceptedAndUsed() throws {
        var m = try tiny()
        let i = try XCTUnwrap(m.compiled.firstIndex { $0.name == "forward" })
        var p = m.compiled[i].plans[0]
        p.offsets = p.offsets.map { $0 + 64 }
        p.arenaBytes += 64
        m.compiled[i].plans[0] = p
        let tm = try TarFlowModel(model: try ModelFile.decode(try ModelFile.encode(m)))
        let bound = try tm.forwardPlan().bind(["B": 4])
        XCTAssertEqual(bound.arenaByteCount, p.arenaBytes)
        XCTAssertEqual(bound.memoryPlan.offsets, p.offsets)
        let c = try Fixtures.load("tiny_uncond")
        let a = try Fixtures.model("tiny_uncond").forward(images: c.tensor("input.x"), labels: nil)
        let b = try tm.forward(images: c.tensor("input.x"), labels: nil)
        XCTAssertEqual(bits(a.z), bits(b.z))
        XCTAssertEqual(a.logdets.map(\.bitPattern), b.logdets.map(\.bitPattern))
    }

    /// Changing a source graph after compiling makes the compiled function stale (F12): the
    /// file is refused on reading (and on writing), unless compiled functions are dropped.
    func testStaleCompiledFunctionIsDetected() throws {
        var m = try tiny()
        let gi = try XCTUnwrap(m.graphs.firstIndex { $0.name == "forward" })
        let ni = try XCTUnwrap(m.graphs[gi].nodes.firstIndex { if case .scale = $0.op { true } else { false } })
        guard case .scale(let s) = m.graphs[gi].nodes[ni].op else { return XCTFail() }
        m.graphs[gi].nodes[ni].op = .scale(s * 2)
        XCTAssertThrowsError(try m.verify()) { XCTAssertEqual(($0 as? IRError)?.rule, "F12", "\($0)") }
        let bytes = try ModelFile.encode(m)
        XCTAssertThrowsError(try ModelFile.decode(bytes)) { e in
            XCTAssertEqual((e as? IRError)?.rule, "F12")
            XCTAssertTrue("\(e)".contains("compiled function 'forward'") && "\(e)".contains("stale"), "\(e)")
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("stale-\(UUID()).tflow")
        XCTAssertThrowsError(try ModelFile.write(m, to: url))
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
        // Dropping them reads the file; the gradient (derived from forward) is stale too.
        let dropped = try ModelFile.decode(bytes, compiledFunctions: .drop)
        XCTAssertTrue(dropped.compiled.isEmpty)
        // Decode steps do not read the changed graph: only forward and gradient went stale.
        var fresh = m
        fresh.compiled.removeAll { $0.source == "forward" }
        XCTAssertNoThrow(try fresh.verify())
        // A weight's shape or dtype is part of the digest; its values are not.
        let orig = try tiny()
        var w = orig
        let ti = try XCTUnwrap(w.tensors.firstIndex { $0.name == "blocks.0.proj_in.weight" })
        let n = elementCount(w.tensors[ti].shape)!
        w.tensors[ti].bytes = TensorBytes(floats: [Float](repeating: 1, count: n))
        XCTAssertEqual(w.sourceDigest(of: "forward"), orig.sourceDigest(of: "forward"))
        XCTAssertNoThrow(try w.verify())
        w.tensors[ti].dtype = .float16
        w.tensors[ti].bytes = TensorBytes([UInt8](repeating: 0, count: 2 * n))
        XCTAssertNotEqual(w.sourceDigest(of: "forward"), orig.sourceDigest(of: "forward"))
        XCTAssertThrowsError(try w.verify()) { XCTAssertEqual(($0 as? IRError)?.rule, "F12") }
    }

    /// Structural rules on the function itself (F11).
    func testCompiledFunctionStructureIsChecked() throws {
        var m = try tiny()
        m.compiled[1].name = m.compiled[0].name
        XCTAssertThrowsError(try m.verify()) { XCTAssertEqual(($0 as? IRError)?.rule, "F11") }
        m = try tiny()
        m.compiled[0].source = "nope"
        XCTAssertThrowsError(try m.verify()) { XCTAssertEqual(($0 as? IRError)?.rule, "F11") }
        m = try tiny()
        // An optimized graph that breaks a graph rule is refused with that rule.
        m.compiled[0].graph.outputs.append(9999)
        XCTAssertThrowsError(try m.verify()) { e in
            XCTAssertEqual((e as? IRError)?.rule, "W1")
            XCTAssertTrue("\(e)".contains("compiled function 'forward'"), "\(e)")
        }
    }

    // MARK: Models from a config alone

    func testConfigWithRandomWeightsCompiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aot-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = dir.appendingPathComponent("c.json")
        try Data("""
            {"name": "toy", "in_channels": 1, "img_size": 8, "patch_size": 2, "channels": 64, "num_blocks": 2,
             "layers_per_block": 1, "nvp": true, "num_classes": 3, "noise_std": 0.2, "torch_float32_error_vs_float64": {}}
            """.utf8).write(to: cfg)
        let (config, noise) = try AheadOfTime.loadConfig(contentsOf: cfg)
        XCTAssertEqual(config, TarFlowConfig(inChannels: 1, imgSize: 8, patchSize: 2, channels: 64, numBlocks: 2, layersPerBlock: 1, nvp: true, numClasses: 3))
        XCTAssertEqual(noise, 0.2)
        let m = try AheadOfTime.compile(try AheadOfTime.randomModel(config: config, seed: 5, noiseStd: noise), batches: [1, 2])
        let url = dir.appendingPathComponent("toy.tflow")
        try ModelFile.write(m, to: url)
        let tm = try TarFlowModel(contentsOf: url)
        XCTAssertTrue(tm.isPrecompiled("forward"))
        XCTAssertEqual(tm.noiseStd, 0.2)
        let x = Tensor(shape: [2, 1, 8, 8], floats: (0..<128).map { Float($0 % 7) / 7 - 0.5 })
        let f = try tm.forward(images: x, labels: [0, -1])
        XCTAssertTrue(f.z.floats.allSatisfy(\.isFinite))
        let back = try tm.sample(noise: f.z, labels: [0, -1])
        XCTAssertLessThan(maxAbsDifference(back.floats, x.floats), 1e-4, "random weights give an invertible flow")
        // The same seed gives the same file; another seed other weights.
        XCTAssertEqual(try ModelFile.encode(m), try ModelFile.encode(try AheadOfTime.compile(try AheadOfTime.randomModel(config: config, seed: 5, noiseStd: noise), batches: [1, 2])))
        let other = try AheadOfTime.randomModel(config: config, seed: 6)
        XCTAssertNotEqual(other.tensor(named: "blocks.0.proj_in.weight")?.floats(), m.tensor(named: "blocks.0.proj_in.weight")?.floats())
        XCTAssertEqual(m.tensor(named: "var")?.floats().allSatisfy { $0 == 1 }, true)
        XCTAssertEqual(m.tensor(named: "blocks.0.proj_in.bias")?.floats().allSatisfy { $0 == 0 }, true)
        // A missing key is named.
        try Data(#"{"in_channels": 1, "img_size": 8}"#.utf8).write(to: cfg)
        XCTAssertThrowsError(try AheadOfTime.loadConfig(contentsOf: cfg)) { XCTAssertTrue("\($0)".contains("patch_size"), "\($0)") }
    }

    func testListsParse() throws {
        XCTAssertEqual(try AheadOfTime.parseBatches("1,16,64,16"), [1, 16, 64])
        XCTAssertThrowsError(try AheadOfTime.parseBatches("1,,2"))
        XCTAssertThrowsError(try AheadOfTime.parseBatches("0"))
        XCTAssertEqual(try AheadOfTime.parseFunctions("forward,sample"), [.forward, .sample])
        XCTAssertEqual(try AheadOfTime.parseFunctions("none"), [])
        XCTAssertThrowsError(try AheadOfTime.parseFunctions("forward,backward"))
    }
}

/// `tarflow compile` and `tarflow inspect --plan` end to end, and the C reader on a compiled file.
final class CompileCLITests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-compile-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func run(_ exe: URL, _ args: [String]) throws -> (status: Int32, out: String, err: String) { try runProcess(exe, args) }

    func tarflow(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try runTarflow(args, repo: repo) }

    func testCompileInspectAndRun() throws {
        let src = tmp.appendingPathComponent("m.tflow").path, out = tmp.appendingPathComponent("c.tflow").path
        XCTAssertEqual(try tarflow(["convert", repo.appendingPathComponent("Tests/Fixtures/cond_guided/model.pth").path, "-o", src, "--image-size", "16"]).status, 0)
        let c = try tarflow(["compile", src, "-o", out, "--batch", "1,4", "--functions", "forward,sample"])
        XCTAssertEqual(c.status, 0, c.err)
        XCTAssertTrue(c.out.contains("4 compiled function(s)"), c.out)
        let dot = tmp.appendingPathComponent("g.dot").path
        let i = try tarflow(["inspect", out, "--plan", "--dot", dot])
        XCTAssertEqual(i.status, 0, i.err)
        for line in ["compiled function 'forward' (from graph 'forward'", "recompiling now gives: identical", "  plan B=4: arena ",
                     "KV cache 65536 bytes", "compiled functions: 4, plans: 14"] {
            XCTAssertTrue(i.out.contains(line), "inspect --plan lacks '\(line)'")
        }
        XCTAssertTrue(try String(contentsOfFile: dot, encoding: .utf8).hasPrefix("digraph"))
        // Same outputs as the source file, bit for bit.
        let a = tmp.appendingPathComponent("a.npy").path, b = tmp.appendingPathComponent("b.npy").path
        XCTAssertEqual(try tarflow(["sample", src, "--count", "2", "--label", "1", "--guidance", "1", "-o", a, "--quiet"]).status, 0)
        XCTAssertEqual(try tarflow(["sample", out, "--count", "2", "--label", "1", "--guidance", "1", "-o", b, "--quiet"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a)), try Data(contentsOf: URL(fileURLWithPath: b)))
        // Recompiling a compiled file replaces its functions (into another file: an output may
        // not be one of the command's inputs).
        let again = tmp.appendingPathComponent("c2.tflow").path
        XCTAssertEqual(try tarflow(["compile", out, "-o", again, "--batch", "2"]).status, 0)
        // The linear weights are stored packed; inspect says so (and the source is row-major).
        let packedLine = try tarflow(["inspect", out]).out.split(separator: "\n").first { $0.hasPrefix("layout:") }
        XCTAssertEqual(packedLine.map(String.init), "layout:     \(try ModelFile.read(contentsOf: URL(fileURLWithPath: out)).linearWeightNames.count) linear weights stored packed (panels32, read where they lie)")
        XCTAssertTrue(try tarflow(["inspect", src]).out.contains("layout:     row-major"))
        XCTAssertTrue(try tarflow(["inspect", out, "--graphs"]).out.contains("attention.qkv.weight: f32[384,128] panels32"))
        // Re-encoding a packed file reads its weights in row-major order: the same bytes as
        // re-encoding the row-major source.
        let h1 = tmp.appendingPathComponent("h1.tflow").path, h2 = tmp.appendingPathComponent("h2.tflow").path
        XCTAssertEqual(try tarflow(["compile", src, "-o", h1, "--weights", "f16", "--functions", "forward"]).status, 0)
        XCTAssertEqual(try tarflow(["compile", out, "-o", h2, "--weights", "f16", "--functions", "forward"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: h1)), try Data(contentsOf: URL(fileURLWithPath: h2)))

        // The C reader lists the compiled functions (when it has been built: make -C Tools/flowinfo).
        let flowinfo = repo.appendingPathComponent("Tools/flowinfo/flowinfo")
        if FileManager.default.isExecutableFile(atPath: flowinfo.path) {
            let r = try run(flowinfo, [again])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.out.contains("compiled functions: 5"), r.out)
            XCTAssertTrue(r.out.contains("compiled \"gradient\" from \"forward\""), r.out)
            XCTAssertTrue(r.out.contains("  plan B=2: "), r.out)
            XCTAssertTrue(r.out.contains(" panels32\n"), r.out)
        }
    }

    func testBadCompileArgumentsFailInOneLine() throws {
        let out = tmp.appendingPathComponent("x.tflow").path
        let mnist = repo.appendingPathComponent("Models/mnist.tflow").path
        for args in [
            ["compile", "--config", repo.appendingPathComponent("Models/configs/mnist.json").path, "-o", out],
            ["compile", mnist, "-o", out, "--batch", "0"],
            ["compile", mnist, "-o", out, "--functions", "backward"],
            ["compile", mnist, "--config", repo.appendingPathComponent("Models/configs/mnist.json").path, "--random-weights", "1", "-o", out],
            ["compile", "-o", out],
        ] {
            let r = try tarflow(args)
            XCTAssertEqual(r.status, 1, "\(args)")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(args): \(r.err)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
