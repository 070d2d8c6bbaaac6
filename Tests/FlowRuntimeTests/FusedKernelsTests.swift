import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// The fused ops (`attention`, `fused_linear`, `affine_coupling`) run by the executor with one
/// and two threads against `ReferenceInterpreter.evaluate` (float64) on seeded random inputs.
/// Attention and GELU use polynomial exp / erf (relative errors ≈ 2e-7 and 4e-7), so results
/// must agree within 1e-5 · max(1, |ref|); rows with no visible key must be NaN in both.
final class FusedKernelsTests: XCTestCase {

    typealias RNG = SplitMix64

    var rng = RNG(0xF05E)

    func random(_ shape: [Int], _ r: ClosedRange<Float> = -2...2) -> Tensor {
        Tensor(shape: shape, floats: rng.floats(elementCount(shape)!, r))
    }

    /// An operand: a graph input (leading axis the batch symbol B when `batched`) or a constant.
    enum Operand {
        case input(String, Tensor, batched: Bool)
        case constant(String, Tensor)
    }

    static let tolerance = 1e-5

    /// Builds a one-op graph, runs it with each thread count and compares with the reference.
    /// Returns the output of the first run.
    @discardableResult
    func check(_ op: Op, _ operands: [Operand], threads: [Int] = [1, 2], _ what: String = "",
               file: StaticString = #filePath, line: UInt = #line) throws -> Tensor {
        var weights: [WeightTensor] = []
        for case .constant(let name, let t) in operands {
            weights.append(WeightTensor(name: name, dtype: .float32, shape: t.shape, bytes: TensorBytes(floats: t.floats)))
        }
        let model = Model(graphs: [], tensors: weights, metadata: [:])
        let b = GraphBuilder(name: op.name, constants: model.constantTypes)
        var ids: [ValueID] = [], refs: [Tensor] = [], feeds: [String: Tensor] = [:]
        var bindings: [String: Int] = [:]
        for o in operands {
            switch o {
            case .input(let name, let t, let batched):
                let shape: [Dim] = t.shape.enumerated().map { batched && $0.offset == 0 ? .batch : .fixed($0.element) }
                if batched { bindings["B"] = t.shape[0] }
                ids.append(b.input(name, TensorType(t.dtype, shape)))
                feeds[name] = t
                refs.append(t)
            case .constant(let name, let t):
                ids.append(try b.constant(name))
                refs.append(t)
            }
        }
        let y = try b.apply(op, inputs: ids, name: "y")
        b.output(y)
        let plan = try Compiler.compile(b.graph, constants: model.constantTypes)
        XCTAssertEqual(plan.steps.map(\.op), [op], "the op runs as one step", file: file, line: line)
        let ref = try ReferenceInterpreter.evaluate(op, refs, model: model, outputType: b.graph.values[y].type, bindings: bindings)
        var first: Tensor? = nil
        for t in threads {
            let out = try XCTUnwrap(try Executor(plan: plan, model: model, threads: t).run(feeds)["y"], file: file, line: line)
            assertClose(out, ref, "\(op.name)[\(Printer.attributes(op))] \(what), \(t) threads", file: file, line: line)
            if let first { XCTAssertEqual(out.floats.map(\.bitPattern), first.floats.map(\.bitPattern), "\(what): thread counts agree bit for bit", file: file, line: line) }
            first = first ?? out
        }
        return try XCTUnwrap(first)
    }

    func assertClose(_ out: Tensor, _ ref: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(out.shape, ref.shape, "\(what): shape", file: file, line: line)
        guard out.count == ref.asDoubles().count else { return XCTFail("\(what): \(out.count) vs \(ref.asDoubles().count) elements", file: file, line: line) }
        var bad: [String] = []
        var worst = 0.0
        for (i, (a, r)) in zip(out.floats, ref.asDoubles()).enumerated() {
            let ok: Bool
            if r.isNaN || a.isNaN {
                ok = r.isNaN && a.isNaN
            } else {
                let e = abs(Double(a) - r) / max(1, abs(r))
                worst = max(worst, e)
                ok = e <= Self.tolerance
            }
            if !ok, bad.count < 5 { bad.append("[\(i)] \(a) vs \(r)") }
        }
        XCTAssertTrue(bad.isEmpty, "\(what): \(bad.joined(separator: ", ")) (worst relative error \(worst))", file: file, line: line)
    }

    // MARK: - Attention

    /// q, k, v as column blocks of one row layout [B, N, 3·H·d] (TarFlow's qkv projection).
    func testAttentionOverOneQKVRow() throws {
        for (heads, d) in [(2, 16), (2, 64), (2, 80), (3, 80), (1, 64)] {
            for n in [1, 5, 49, 130] {
                let batch = n > 100 ? 1 : 2
                let qkv = random([batch, n, 3 * heads * d])
                for mask in [AttentionMask.causal, .none] {
                    let op = Op.attention(heads: heads, scale: 1 / Float(d).squareRoot(), mask: mask, offsets: [0, heads * d, 2 * heads * d], rowScale: false)
                    let y = try check(op, [.input("qkv", qkv, batched: true), .input("k", qkv, batched: true), .input("v", qkv, batched: true)],
                                      "H \(heads) d \(d) N \(n) mask \(mask)")
                    XCTAssertEqual(y.shape, [batch, n, heads * d])
                }
            }
        }
    }

    /// Separate sources with their own widths and offsets; fewer queries than keys (causal
    /// then aligns the last query with the last key) and more queries than keys (no mask).
    func testAttentionWithOffsetsAndUnequalTokenCounts() throws {
        let heads = 2
        for d in [16, 80] {
            let k = random([2, 7, heads * d + 4]), v = random([2, 7, heads * d + 3])
            for (m, mask) in [(3, AttentionMask.causal), (7, .causal), (3, .none), (9, .none), (1, .causal)] {
                let q = random([2, m, heads * d + 5])
                let op = Op.attention(heads: heads, scale: 0.3, mask: mask, offsets: [5, 4, 3], rowScale: false)
                try check(op, [.input("q", q, batched: true), .input("k", k, batched: true), .input("v", v, batched: true)], "d \(d) M \(m) N 7")
            }
        }
    }

    /// A per-row factor on the scores (the sampler's attention temperature per batch row).
    func testAttentionRowScale() throws {
        for (heads, d, n) in [(2, 16, 5), (2, 64, 49), (1, 80, 130)] {
            let batch = 3
            let qkv = random([batch, n, 3 * heads * d])
            let rs = Tensor(shape: [batch, 1, 1, 1], floats: [0.5, 2, 0.03])
            for mask in [AttentionMask.causal, .none] {
                let op = Op.attention(heads: heads, scale: 0.125, mask: mask, offsets: [0, heads * d, 2 * heads * d], rowScale: true)
                try check(op, [.input("q", qkv, batched: true), .input("k", qkv, batched: true), .input("v", qkv, batched: true),
                               .input("rs", rs, batched: true)], "row scale, d \(d) N \(n)")
            }
        }
    }

    /// A decode step: queries in a row layout, keys and values head-major [B, H, N, d] (the KV
    /// caches), keys after a run-time position masked. A negative position leaves no key (NaN
    /// rows); a position at or past the last key masks nothing.
    func testAttentionHeadMajorAfterPosition() throws {
        for (heads, d, n, m) in [(2, 64, 9, 1), (2, 80, 16, 1), (3, 16, 5, 3), (2, 80, 130, 1)] {
            let batch = 2
            let q = random([batch, m, heads * d + 7])
            let kc = random([batch, heads, n, d]), vc = random([batch, heads, n, d])
            let rs = Tensor(shape: [batch, 1, 1, 1], floats: [0.125, 0.25])
            var results: [Int64: Tensor] = [:]
            let positions: [Int64] = [0, Int64(n / 2), Int64(n - 1), Int64(n), Int64(n + 5), Int64.max, -1, -100, Int64.min]
            for p in positions {
                for rowScale in [true, false] {
                    let op = Op.attention(heads: heads, scale: rowScale ? 1 : 0.2, mask: .afterPosition, offsets: [7, 0, 0], rowScale: rowScale)
                    var operands: [Operand] = [.input("q", q, batched: true), .input("k", kc, batched: true), .input("v", vc, batched: true)]
                    if rowScale { operands.append(.input("rs", rs, batched: true)) }
                    operands.append(.input("pos", Tensor(shape: [1], int64s: [p]), batched: false))
                    let y = try check(op, operands, "d \(d) N \(n) M \(m) position \(p)")
                    if rowScale { results[p] = y }
                }
            }
            for p in positions where p < 0 {
                XCTAssertTrue(results[p]!.floats.allSatisfy(\.isNaN), "position \(p): no key is visible")
            }
            for p in positions where p >= Int64(n) {
                XCTAssertEqual(results[p]!.floats.map(\.bitPattern), results[Int64(n - 1)]!.floats.map(\.bitPattern), "position \(p) sees all keys")
            }
            XCTAssertFalse(results[0]!.floats.contains(where: \.isNaN))
        }
    }

    /// Head-major q too, and a row-layout k with head-major v.
    func testAttentionMixedLayouts() throws {
        let heads = 2, d = 16, n = 6
        let q = random([2, heads, n, d]), kr = random([2, n, heads * d]), vh = random([2, heads, n, d])
        for mask in [AttentionMask.causal, .none] {
            try check(.attention(heads: heads, scale: 0.25, mask: mask, offsets: [0, 0, 0], rowScale: false),
                      [.input("q", q, batched: true), .input("k", kr, batched: true), .input("v", vh, batched: true)], "mixed \(mask)")
        }
    }

    // MARK: - Fused linear

    /// Every epilogue combination, row counts on both sides of the 512-row tile, column
    /// splits (72 outputs: two column tiles when the rows cannot feed two threads).
    func testFusedLinearEveryEpilogue() throws {
        let k = 24, n = 72
        let w = random([n, k], -0.5...0.5), bias = random([n])
        for rows in [1, 49, 600] {
            let x = random([rows, k]), r = random([rows, n])
            for act in [Activation.none, .gelu] {
                for hasBias in [false, true] {
                    for hasResidual in [false, true] {
                        var operands: [Operand] = [.input("x", x, batched: true), .constant("w", w)]
                        if hasBias { operands.append(.constant("b", bias)) }
                        if hasResidual { operands.append(.input("r", r, batched: true)) }
                        let y = try check(.fusedLinear(activation: act, hasBias: hasBias, hasResidual: hasResidual), operands,
                                          "rows \(rows) act \(act) bias \(hasBias) residual \(hasResidual)")
                        XCTAssertEqual(y.shape, [rows, n])
                    }
                }
            }
        }
    }

    /// Leading axes fold into rows; a linear over no features gives bias (+ residual).
    func testFusedLinearShapesAndEmptyK() throws {
        let w = random([40, 8]), bias = random([40])
        try check(.fusedLinear(activation: .gelu, hasBias: true, hasResidual: true),
                  [.input("x", random([3, 7, 8]), batched: true), .constant("w", w), .constant("b", bias), .input("r", random([3, 7, 40]), batched: true)],
                  "rank 3")
        let y = try check(.fusedLinear(activation: .none, hasBias: true, hasResidual: true),
                          [.input("x", random([5, 0]), batched: true), .input("w", random([40, 0]), batched: false), .constant("b", bias),
                           .input("r", random([5, 40]), batched: true)], "K = 0")
        XCTAssertEqual(y.shape, [5, 40])
        try check(.fusedLinear(activation: .gelu, hasBias: false, hasResidual: false),
                  [.input("x", random([5, 0]), batched: true), .input("w", random([40, 0]), batched: false)], "K = 0, gelu")
    }

    /// When the residual is an intermediate whose last reader is the fused linear, the memory
    /// plan puts the result in the residual's buffer; the GEMM then accumulates onto it.
    func testFusedLinearOverwritingItsResidual() throws {
        let k = 24, n = 72, rows = 600
        let w = random([n, k], -0.5...0.5), bias = random([n])
        let model = Model(graphs: [], tensors: [WeightTensor(name: "w", dtype: .float32, shape: [n, k], bytes: TensorBytes(floats: w.floats)),
                                                WeightTensor(name: "b", dtype: .float32, shape: [n], bytes: TensorBytes(floats: bias.floats))],
                          metadata: [:])
        let b = GraphBuilder(name: "res", constants: model.constantTypes)
        let x = b.input("x", TensorType(.float32, [.batch, .fixed(k)]))
        let r0 = b.input("r0", TensorType(.float32, [.batch, .fixed(n)]))
        let r = try b.apply(.neg, r0, name: "r")
        b.output(try b.apply(.fusedLinear(activation: .none, hasBias: true, hasResidual: true), inputs: [x, try b.constant("w"), try b.constant("b"), r], name: "y"))
        let plan = try Compiler.compile(b.graph, constants: model.constantTypes)
        let xin = random([rows, k]), rin = random([rows, n])
        let ref = try ReferenceInterpreter.run(b.graph, model: model, inputs: ["x": xin, "r0": rin])
        for threads in [1, 2] {
            let ex = try Executor(plan: plan, model: model, threads: threads)
            let out = try XCTUnwrap(try ex.run(["x": xin, "r0": rin])["y"])
            assertClose(out, try XCTUnwrap(ref[b.graph.value(named: "y")!]), "in place, \(threads) threads")
            let bound = try ex.bind(["B": rows])
            XCTAssertEqual(bound.buffer("y")?.pointer, bound.buffer("r")?.pointer, "the result overwrites the residual")
        }
    }

    // MARK: - Affine coupling

    func testAffineCoupling() throws {
        let t = 5, d = 3
        for hasScale in [true, false] {
            for flip in [false, true] {
                for shift in [0, 1, 2, t] {
                    let x = random([2, t, d]), p = random([2, t, hasScale ? 2 * d : d], -3...3)
                    let y = try check(.affineCoupling(shift: shift, hasScale: hasScale, flip: flip),
                                      [.input("x", x, batched: true), .input("p", p, batched: true)],
                                      "scale \(hasScale) flip \(flip) shift \(shift)")
                    // Tokens before the shift pass through unchanged (at their flipped place).
                    for i in 0..<min(shift, t) {
                        let dst = flip ? t - 1 - i : i
                        XCTAssertEqual(Array(y.floats[(dst * d)..<(dst * d + d)]), Array(x.floats[(i * d)..<(i * d + d)]), "token \(i)")
                    }
                }
            }
        }
        // Many tokens and a batch of one.
        try check(.affineCoupling(shift: 1, hasScale: true, flip: true), [.input("x", random([1, 64, 16]), batched: true),
                                                                         .input("p", random([1, 64, 32]), batched: true)], "T 64")
    }

    // MARK: - Bound plans

    /// A bound plan keeps what its executor loaded alive (constants widened from float16,
    /// results of load-time steps): it still runs right once the executor is gone and the
    /// allocator has handed that memory out again. (A decode loop that keeps only the bound
    /// plan does this.)
    func testBoundPlanOutlivesItsExecutor() throws {
        let pos = random([4, 8])
        let halfBits: [UInt8] = (0..<32).flatMap { i -> [UInt8] in
            let bits = UInt16(0x3C00 + i * 0x10)  // 1.0 and up
            return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
        }
        let model = Model(graphs: [], tensors: [
            WeightTensor(name: "pos", dtype: .float32, shape: [4, 8], bytes: TensorBytes(floats: pos.floats)),
            WeightTensor(name: "h", dtype: .float16, shape: [4, 8], bytes: TensorBytes(halfBits)),
        ], metadata: [:])
        let b = GraphBuilder(name: "outlive", constants: model.constantTypes)
        let x = b.input("x", TensorType(.float32, [.batch, 4, 8]))
        let flipped = try b.apply(.flip(axis: 0), try b.constant("pos"))
        b.output(try b.apply(.add, try b.apply(.add, x, flipped), try b.constant("h"), name: "y"))
        let plan = try Compiler.compile(b.graph, constants: model.constantTypes)
        XCTAssertEqual(plan.loadSteps.count, 3)
        let bound = try Executor(plan: plan, model: model).bind(["B": 2])
        // Fill freed memory of the same size with garbage.
        let junk = (0..<256).map { _ in
            let p = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 64)
            p.initializeMemory(as: Float.self, repeating: .nan, count: 32)
            return p
        }
        defer { for p in junk { p.deallocate() } }
        let xin = random([2, 4, 8])
        let (xp, _) = try XCTUnwrap(bound.buffer("x"))
        xp.assumingMemoryBound(to: Float.self).update(from: xin.floats, count: 64)
        try bound.run()
        let (yp, shape) = try XCTUnwrap(bound.buffer("y"))
        XCTAssertEqual(shape, [2, 4, 8])
        let y = Tensor(shape: shape, floats: Array(UnsafeBufferPointer(start: yp.assumingMemoryBound(to: Float.self), count: 64)))
        let ref = try ReferenceInterpreter.run(b.graph, model: model, inputs: ["x": xin])
        assertClose(y, try XCTUnwrap(ref[b.graph.value(named: "y")!]), "bound plan without its executor")
    }
}
