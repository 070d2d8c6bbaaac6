import Foundation
import XCTest
import FlowCompiler
import FlowIR
import FlowRuntime
@testable import TarFlow

/// Every fixture model's graphs compiled with fusion (the default) and without it: the fused
/// plan holds the expected fused ops, and both plans give the same results within
/// 1e-5 · max(1, |x|) — the forward pass (z, logdets, block outputs) on the fixture inputs,
/// and a decode step graph (with its KV-cache states) over a run of tokens.
final class FusionDifferentialTests: XCTestCase {
    static let tolerance = 1e-5

    func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, "\(what): element count", file: file, line: line)
        var worst = 0.0, at = -1
        for (i, (x, y)) in zip(a, b).enumerated() {
            let e = x.isFinite && y.isFinite ? abs(Double(x) - Double(y)) / max(1, abs(Double(y))) : .infinity
            if e > worst { worst = e; at = i }
        }
        XCTAssertLessThanOrEqual(worst, Self.tolerance, "\(what): relative error \(worst) at [\(at)]", file: file, line: line)
    }

    func count(_ plan: ExecutionPlan, _ isOp: (Op) -> Bool) -> Int { plan.steps.filter { isOp($0.op) }.count }

    static func isAttention(_ op: Op) -> Bool { if case .attention = op { true } else { false } }
    static func isFusedLinear(_ op: Op) -> Bool { if case .fusedLinear = op { true } else { false } }
    static func isCoupling(_ op: Op) -> Bool { if case .affineCoupling = op { true } else { false } }
    static func isPrimitiveAttentionPiece(_ op: Op) -> Bool {
        switch op {
        case .matmul, .softmax, .causalMask, .maskAfter, .gelu, .exp: true
        default: false
        }
    }

    // MARK: - Forward

    func checkForward(_ name: String) throws {
        let c = try Fixtures.load(name)
        let m = try Fixtures.model(name, format: "safetensors")
        let cfg = m.config
        let g = try XCTUnwrap(m.model.graph(named: "forward"))
        let fused = try Compiler.compile(g, constants: m.model.constantTypes)
        let plain = try Compiler.compile(g, constants: m.model.constantTypes, options: .init(fusion: false))

        // What fusion made of the graph.
        let layers = cfg.numBlocks * cfg.layersPerBlock
        let scale = TarFlowGraphs.attentionScale(cfg)
        XCTAssertEqual(count(fused) { $0 == .attention(heads: cfg.numHeads, scale: scale, mask: .causal, offsets: [0, cfg.channels, 2 * cfg.channels], rowScale: false) },
                       layers, "\(name): attention ops")
        XCTAssertEqual(count(fused, Self.isAttention), layers, "\(name): attention ops")
        XCTAssertEqual(count(fused, Self.isCoupling), cfg.numBlocks, "\(name): affine_coupling ops")
        XCTAssertEqual(count(fused) { $0 == .affineCoupling(shift: 1, hasScale: cfg.nvp, flip: false) }, (cfg.numBlocks + 1) / 2, "\(name): unflipped blocks")
        XCTAssertEqual(count(fused) { $0 == .affineCoupling(shift: 1, hasScale: cfg.nvp, flip: true) }, cfg.numBlocks / 2, "\(name): flipped blocks")
        XCTAssertEqual(count(fused, Self.isFusedLinear), 3 * layers, "\(name): fused_linear ops")
        XCTAssertEqual(count(fused) { $0 == .fusedLinear(activation: .gelu, hasBias: true, hasResidual: false) }, layers, "\(name): MLP up")
        XCTAssertEqual(count(fused) { $0 == .fusedLinear(activation: .none, hasBias: true, hasResidual: true) }, 2 * layers, "\(name): residuals")
        // proj_in and proj_out of each block and each layer's qkv stay plain linears.
        XCTAssertEqual(count(fused) { $0 == .linear }, 2 * cfg.numBlocks + layers, "\(name): linear ops")
        XCTAssertEqual(count(fused, Self.isPrimitiveAttentionPiece), 0, "\(name): primitive pieces left: \(fused.steps.map(\.op.name))")
        XCTAssertEqual(count(plain) { Self.isAttention($0) || Self.isCoupling($0) || Self.isFusedLinear($0) }, 0)
        XCTAssertLessThan(fused.steps.count, plain.steps.count)

        // Same results.
        var inputs: [String: Tensor] = ["x": c.tensor("input.x")]
        if let y = c.labels { inputs["y"] = Tensor(shape: [y.count], int64s: y.map(Int64.init)) }
        let reference = try Executor(plan: plain, model: m.model).run(inputs)
        for threads in [1, 2] {
            let out = try Executor(plan: fused, model: m.model, threads: threads).run(inputs)
            XCTAssertEqual(Set(out.keys), Set(reference.keys))
            for key in reference.keys.sorted() {
                let a = try XCTUnwrap(out[key]), b = try XCTUnwrap(reference[key])
                XCTAssertEqual(a.shape, b.shape, "\(name) \(key)")
                assertClose(a.floats, b.floats, "\(name) \(key), \(threads) threads")
            }
        }
    }

    func testForwardTinyUncond() throws { try checkForward("tiny_uncond") }
    func testForwardCondGuided() throws { try checkForward("cond_guided") }
    func testForwardVPPrior() throws { try checkForward("vp_prior") }
    func testForwardMNIST() throws { try checkForward("mnist_trained") }

    // MARK: - Decode

    /// Runs decode0 token by token on both plans through the bound-plan API (inputs written
    /// into the plans' buffers, KV caches kept in place between runs) and compares a and b
    /// after every step, and the caches at the end.
    func checkDecode(_ name: String, rows: Int = 3, steps: Int = 6) throws {
        let m = try Fixtures.model(name, format: "safetensors")
        let cfg = m.config
        let g = try XCTUnwrap(m.model.graph(named: "decode0"))
        let fused = try Compiler.compile(g, constants: m.model.constantTypes)
        let plain = try Compiler.compile(g, constants: m.model.constantTypes, options: .init(fusion: false))
        let L = cfg.layersPerBlock
        XCTAssertEqual(count(fused) { $0 == .attention(heads: cfg.numHeads, scale: 1, mask: .afterPosition, offsets: [0, 0, 0], rowScale: true) }, L,
                       "\(name): decode attention ops")
        XCTAssertEqual(count(fused, Self.isFusedLinear), 3 * L, "\(name): decode fused_linear ops")
        XCTAssertEqual(count(fused) { $0 == .writeSlice(axis: 2) }, 2 * L, "\(name): cache writes")
        XCTAssertEqual(count(fused) { if case .matmul = $0 { true } else { false } }, 0)

        let T = cfg.numPatches, D = cfg.patchDim
        let steps = min(steps, T)
        var seed: UInt64 = 0xDEC0DE
        func uniform() -> Float {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(seed >> 40) / Float(1 << 24) * 4 - 2
        }
        let xs = (0..<(steps * rows * D)).map { _ in uniform() }
        let scale = TarFlowGraphs.attentionScale(cfg)

        /// a and b of every step, then the caches.
        func run(_ plan: ExecutionPlan, threads: Int) throws -> (a: [[Float]], b: [[Float]], caches: [[Float]]) {
            // Only the bound plan is kept (the executor goes), as a decode loop may do.
            let bound = try Executor(plan: plan, model: m.model, threads: threads).bind(["B": rows])
            bound.resetState()
            let x = try XCTUnwrap(bound.buffer("x")), pos = try XCTUnwrap(bound.buffer("pos")), ls = try XCTUnwrap(bound.buffer("logit_scale"))
            XCTAssertEqual(x.shape, [rows, 1, D])
            let lp = ls.pointer.assumingMemoryBound(to: Float.self)
            // Rows as the sampler uses them: plain, and with an attention temperature.
            for r in 0..<rows { lp[r] = scale / (r % 2 == 0 ? 1 : 0.8) }
            if let y = bound.buffer("y") {
                let yp = y.pointer.assumingMemoryBound(to: Int64.self)
                for r in 0..<rows { yp[r] = r == rows - 1 ? -1 : Int64(r % max(cfg.numClasses, 1)) }
            }
            var aOut: [[Float]] = [], bOut: [[Float]] = []
            for i in 0..<steps {
                pos.pointer.assumingMemoryBound(to: Int64.self)[0] = Int64(i)
                xs.withUnsafeBufferPointer { x.pointer.assumingMemoryBound(to: Float.self).update(from: $0.baseAddress! + i * rows * D, count: rows * D) }
                try bound.run()
                for (output, acc) in [("a", 0), ("b", 1)] {
                    let o = try XCTUnwrap(bound.buffer(output))
                    XCTAssertEqual(o.shape, [rows, 1, D])
                    let v = Array(UnsafeBufferPointer(start: o.pointer.assumingMemoryBound(to: Float.self), count: rows * D))
                    if acc == 0 { aOut.append(v) } else { bOut.append(v) }
                }
            }
            var caches: [[Float]] = []
            for l in 0..<L {
                for kv in ["k", "v"] {
                    let c = try XCTUnwrap(bound.buffer("cache.\(kv)\(l)"))
                    XCTAssertEqual(c.shape, [rows, cfg.numHeads, T, cfg.headDim])
                    caches.append(Array(UnsafeBufferPointer(start: c.pointer.assumingMemoryBound(to: Float.self), count: elementCount(c.shape)!)))
                }
            }
            return (aOut, bOut, caches)
        }

        let ref = try run(plain, threads: 1)
        // The steps do something: b changes from token to token, the caches fill up.
        XCTAssertNotEqual(ref.b.first, ref.b.last)
        XCTAssertTrue(ref.caches.allSatisfy { $0.contains { $0 != 0 } })
        for threads in [1, 2] {
            let out = try run(fused, threads: threads)
            for i in 0..<steps {
                assertClose(out.a[i], ref.a[i], "\(name) decode0 step \(i) a, \(threads) threads")
                assertClose(out.b[i], ref.b[i], "\(name) decode0 step \(i) b, \(threads) threads")
            }
            for (j, c) in out.caches.enumerated() { assertClose(c, ref.caches[j], "\(name) decode0 cache \(j), \(threads) threads") }
        }
    }

    func testDecodeTinyUncond() throws { try checkDecode("tiny_uncond") }
    func testDecodeCondGuided() throws { try checkDecode("cond_guided", rows: 4, steps: 16) }
    func testDecodeVPPrior() throws { try checkDecode("vp_prior") }
    func testDecodeMNIST() throws { try checkDecode("mnist_trained", rows: 2, steps: 8) }
}
