import Foundation
import XCTest
import FlowCompiler
import FlowIR
@testable import FlowRuntime
@testable import TarFlow

/// The preflight (`TarFlowModel.memoryNeed` / `preflight`): its arenas are those the run then
/// binds (stored plans included), a batch beyond the address space saturates instead of
/// trapping, and a refusal carries the numbers; under `ulimit -v` the commands refuse in one
/// line with exit 1 instead of dying in `malloc`.
final class PreflightTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-preflight-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func part(_ need: MemoryNeed, _ what: String) -> Int? { need.parts.first { $0.what == what }?.bytes }

    /// Images in [-1, 1] for the tiny models (1x4x4).
    func images(_ n: Int) -> ImageSet {
        ImageSet(count: n, channels: 1, size: 4, pixels: .float((0..<(n * 16)).map { Float(($0 * 37) % 17) / 8.5 - 1 }))
    }

    /// 10 images in batches of 4 bind the forward plan at 4 and at 2 rows; the preflight counts
    /// exactly those two arenas.
    /// Refusals print sizes people read: MB below 1 GB, never "0.0 GB" for a small need.
    func testSizesInMessagesUseMBBelowAGigabyte() {
        XCTAssertEqual(MemoryNeed.gb(1_500_000), "1.5 MB")
        XCTAssertEqual(MemoryNeed.gb(2_340_000_000), "2.3 GB")
        XCTAssertEqual(MemoryNeed.gb(Int.max), "more than 9.2e9 GB")
    }

    func testLikelihoodArenasAreTheBoundPlans() throws {
        let m = try TarFlowModel(model: try TinyModels.model(), threads: 1)
        let need = try m.memoryNeed(.likelihood(images: 10, batchSize: 4, keepLatents: false))
        let e = try m.forwardPlan()
        XCTAssertTrue(e.instances.isEmpty, "the preflight binds nothing")
        _ = try m.likelihood(images: images(10), labels: nil, batchSize: 4)
        XCTAssertEqual(Set(e.instances.keys), [[4], [2]])
        XCTAssertEqual(part(need, "forward plan arenas"), e.instances.values.reduce(0) { $0 + $1.arenaByteCount })
        XCTAssertGreaterThan(need.bytes, part(need, "forward plan arenas") ?? 0, "the batch tensors count too")
        let kept = try m.memoryNeed(.likelihood(images: 10, batchSize: 4, keepLatents: true))
        XCTAssertEqual(kept.bytes - need.bytes, 2 * 10 * 16 * 4)
    }

    /// With two threads a batch of 8 runs split in two parts, each with its own arena.
    func testSplitBatchCountsEveryPart() throws {
        let m = try TarFlowModel(model: try TinyModels.model(), threads: 2)
        let need = try m.memoryNeed(.likelihood(images: 8, batchSize: 8, keepLatents: false))
        _ = try m.likelihood(images: images(8), labels: nil, batchSize: 8)
        let split = try m.forwardPlan().bindSplit(["B": 8])  // the cached split the run used
        XCTAssertEqual(split.parts.count, 2)
        XCTAssertEqual(part(need, "forward plan arenas"), split.arenaByteCount)
    }

    /// Sampling with guidance: the decode arenas of 2·n rows, as the session the run makes.
    func testSampleCountsTheSamplingSession() throws {
        let m = try TarFlowModel(model: try TinyModels.model(classes: 3), threads: 1)
        var o = SamplingOptions(guidance: 1.5)
        o.kvCache = .float16
        let need = try m.memoryNeed(.sample(images: 3, options: o, denoise: false))
        _ = try m.sample(noise: m.noise(count: 3, seed: 1), labels: [0, 1, 2], options: o)
        let session = try XCTUnwrap(m.samplingSession)
        XCTAssertEqual(session.rows, 6)
        XCTAssertTrue(session.halfCache)
        XCTAssertEqual(part(need, "decode plan arenas (KV caches included)"), session.arenaBytes)
        let unguided = try m.memoryNeed(.sample(images: 3, options: SamplingOptions(), denoise: false))
        XCTAssertLessThan(unguided.bytes, need.bytes)
        let denoised = try m.memoryNeed(.sample(images: 3, options: SamplingOptions(), denoise: true))
        XCTAssertEqual(part(denoised, "gradient plan arena"), try m.gradientPlan().memoryPlan(["B": 3]).arenaBytes)
        // Invalid options are refused by the same validation `sample` runs.
        XCTAssertThrowsError(try m.memoryNeed(.sample(images: 3, options: SamplingOptions(guidance: -1), denoise: false)))
    }

    /// A compiled file's stored memory plan is what the preflight counts at its batch size.
    func testStoredPlansAreUsed() throws {
        let compiled = try AheadOfTime.compile(try TinyModels.model(), functions: [.forward], batches: [5])
        let m = try TarFlowModel(model: compiled, threads: 1)
        XCTAssertTrue(m.isPrecompiled("forward"))
        let f = try XCTUnwrap(compiled.compiledFunction(named: "forward"))
        let stored = try XCTUnwrap(try Compiler.load(f, constants: compiled.constantTypes).memoryPlans[["B": 5]])
        let need = try m.memoryNeed(.likelihood(images: 5, batchSize: 5, keepLatents: false))
        XCTAssertEqual(part(need, "forward plan arenas"), stored.arenaBytes)
        XCTAssertTrue(try m.forwardPlan().plan.graph == f.graph, "the executor runs the stored graph, not a recompiled one")
    }

    /// A batch whose buffers overflow the address space gives Int.max, never a trap.
    func testHugeBatchSaturates() throws {
        let m = try TarFlowModel(model: try TinyModels.model(classes: 3), threads: 2)
        for run: TarFlowModel.Run in [.sample(images: Int.max / 2, options: SamplingOptions(guidance: 1), denoise: true),
                                      .likelihood(images: Int.max, batchSize: Int.max, keepLatents: true),
                                      .classify(images: 1 << 61, batchSize: 1 << 61), .denoise(images: Int.max, batchSize: 1 << 62, keepGradient: true),
                                      .benchForward(batch: Int.max, profile: true), .benchSample(batch: 1 << 62, kvCache: nil)] {
            let need = try m.memoryNeed(run)
            XCTAssertEqual(need.bytes, Int.max, "\(run)")
            XCTAssertThrowsError(try m.preflight(run)) { e in
                guard case TarFlowError.insufficientMemory(let s) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(s.batch, run.batch)
                XCTAssertTrue("\(e)".contains("overflow"), "\(e)")
            }
        }
    }

    /// The refusal: need and limit as numbers, the limit's source, exactly at the boundary.
    func testRefusalCarriesTheNumbers() throws {
        let m = try TarFlowModel(model: try TinyModels.model(), threads: 1)
        let run = TarFlowModel.Run.likelihood(images: 7, batchSize: 7, keepLatents: false)
        let need = try m.memoryNeed(run)
        XCTAssertEqual(try m.preflight(run, limit: MemoryLimit(bytes: need.bytes, source: "a test limit")), need)
        XCTAssertThrowsError(try m.preflight(run, limit: MemoryLimit(bytes: need.bytes - 1, source: "a test limit"))) { e in
            guard case TarFlowError.insufficientMemory(let s) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(s.need, need)
            XCTAssertEqual(s.batch, 7)
            let text = s.message(subject: "--batch-size 7", fix: "use a smaller --batch-size")
            XCTAssertTrue(text.hasPrefix("--batch-size 7 needs about "), text)
            for piece in ["(\(need.bytes) bytes: forward plan arenas ", "more than the \(need.bytes - 1) bytes of memory", "(a test limit)", "use a smaller --batch-size"] {
                XCTAssertTrue(text.contains(piece), "'\(piece)' missing from \(text)")
            }
        }
    }

    /// Re-encoding and a random config: the copies they make.
    func testWeightNeeds() throws {
        let model = try TinyModels.model()
        let names = model.linearWeightNames
        let linear = model.tensors.filter { names.contains($0.name) }.reduce(0) { $0 + elementCount($1.shape)! }
        XCTAssertGreaterThan(linear, 0)
        XCTAssertEqual(part(model.reencodingMemoryNeed(as: .float16), "re-encoded linear weights"), 2 * linear)
        XCTAssertEqual(model.reencodingMemoryNeed(as: .float32).bytes, 0, "f32 weights kept as f32 are not copied")
        let c = TinyModels.config(classes: 2)
        XCTAssertEqual(c.weightMemoryNeed.bytes, try AheadOfTime.randomModel(config: c, seed: 1).tensors.reduce(0) { $0 + $1.bytes.count })
    }

    // MARK: Under a memory limit, from the command line

    /// Runs `tarflow args` under `ulimit -v limitKB`.
    func limited(_ limitKB: Int, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(URL(fileURLWithPath: "/bin/bash"), ["-c", "ulimit -v \(limitKB) && exec \"$@\"", "bash", tarflowExecutable(repo: repo).path] + args)
    }

    /// `likelihood` and `classify` with a batch that the address-space limit cannot hold, but
    /// this machine's RAM can: refused in one line naming the flag, both numbers and RLIMIT_AS.
    func testLimitedChildRunsAreRefusedWithTheNumbers() throws {
        let limitKB = 1_500_000, limit = limitKB * 1024
        let uncond = tmp.appendingPathComponent("u.tflow"), cond = tmp.appendingPathComponent("c.tflow")
        try ModelFile.write(try TinyModels.model(), to: uncond)
        try ModelFile.write(try TinyModels.model(classes: 3), to: cond)
        // Per command, a batch of twice the limit by the preflight's own figures.
        func batch(_ m: TarFlowModel, _ run: (Int) -> TarFlowModel.Run) throws -> Int {
            let n = 2 * limit / (try m.memoryNeed(run(1000)).bytes / 1000) + 1
            let estimate = try m.memoryNeed(run(n)).bytes
            XCTAssertGreaterThan(estimate, limit)
            try XCTSkipUnless(estimate < MemoryLimit.physicalRAM(), "this machine has less RAM than the batch chosen to exceed the limit")
            return n
        }
        let nc = try batch(try TarFlowModel(model: try TinyModels.model(classes: 3))) { .classify(images: $0, batchSize: $0) }
        let nl = try batch(try TarFlowModel(model: try TinyModels.model())) { .likelihood(images: $0, batchSize: $0, keepLatents: false) }
        let n = max(nc, nl)
        XCTAssertLessThan(n * 16, 64 << 20, "the image file stays small")
        let x = tmp.appendingPathComponent("x.npy")
        try NPY.write(Tensor(shape: [n, 1, 4, 4], bytes: (0..<(n * 16)).map { UInt8($0 % 251) }), to: x)
        let out = tmp.appendingPathComponent("out.npy")
        for (args, flag) in [(["classify", cond.path, "--images", x.path, "--limit", "\(nc)", "--batch-size", "\(nc)", "--save", out.path], "--batch-size \(nc)"),
                             (["likelihood", uncond.path, "--images", x.path, "--batch-size", "\(nl)"], "--batch-size \(nl)")] {
            let r = try limited(limitKB, args)
            XCTAssertEqual(r.status, 1, "\(args[0]): \(r.err)")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
            XCTAssertTrue(r.err.hasPrefix("error: \(flag)"), r.err)
            for piece in ["bytes of memory", "RLIMIT_AS (ulimit -v) \(limit) bytes", "already in use", "use a smaller --batch-size"] {
                XCTAssertTrue(r.err.contains(piece), "\(args[0]): '\(piece)' missing from \(r.err)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
        // The same command with a batch that fits runs under the same limit.
        let ok = try limited(limitKB, ["likelihood", uncond.path, "--images", x.path, "--limit", "64", "--batch-size", "16", "--json"])
        XCTAssertEqual(ok.status, 0, ok.err)
    }
}
