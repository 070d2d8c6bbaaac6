import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// Every op of the closed set, compiled and run by the executor (float32 kernels, BLAS), against
/// the reference interpreter (float64) on seeded random inputs. Layout ops and correctly
/// rounded arithmetic must agree exactly; transcendental functions and sums within 1e-5
/// (relative for |y| ≥ 1, absolute below), with one thread and with three. Also: state kept
/// across runs, input validation, several batch sizes on one executor.
final class KernelsVsReferenceTests: XCTestCase {

    // MARK: - Harness

    typealias RNG = SplitMix64

    var rng = RNG(0x5EED)

    func random(_ shape: [Int], _ r: ClosedRange<Float> = -2...2) -> Tensor {
        Tensor(shape: shape, floats: rng.floats(elementCount(shape)!, r))
    }

    func weight(_ name: String, _ shape: [Int], _ r: ClosedRange<Float> = -1...1) -> WeightTensor {
        WeightTensor(name: name, dtype: .float32, shape: shape, bytes: TensorBytes(floats: rng.floats(elementCount(shape)!, r)))
    }

    /// An operand of the op under test: a graph input (declared type and the value to feed) or
    /// a constant of the model.
    enum Operand {
        case input(String, TensorType, Tensor)
        case constant(WeightTensor)
    }

    static func tensorType(_ t: Tensor, symbols: [Int: Dim] = [:]) -> TensorType {
        TensorType(t.dtype, t.shape.enumerated().map { symbols[$0.offset] ?? .fixed($0.element) })
    }

    /// A graph input whose leading axis is the batch symbol B.
    static func batched(_ name: String, _ t: Tensor) -> Operand { .input(name, tensorType(t, symbols: [0: .batch]), t) }
    static func fixed(_ name: String, _ t: Tensor) -> Operand { .input(name, tensorType(t), t) }

    enum Accuracy {
        /// Bit for bit (both NaN counts as equal).
        case exact
        /// |y − ref| ≤ tol · max(1, |ref|); where ref rounds to ±inf in float32, y must be that.
        case within(Double)
    }

    /// Builds a one-op graph over `operands` (plus unused `extra` inputs), compiles it, runs it
    /// and compares against `ReferenceInterpreter.evaluate`. Returns the executor's output.
    @discardableResult
    func check(_ op: Op, _ operands: [Operand], extra: [Operand] = [], _ accuracy: Accuracy,
               file: StaticString = #filePath, line: UInt = #line) throws -> Tensor {
        let tensors = operands.compactMap { if case .constant(let w) = $0 { w } else { nil } }
        let model = Model(graphs: [], tensors: tensors, metadata: [:])
        let b = GraphBuilder(name: op.name, constants: model.constantTypes)
        var feeds: [String: Tensor] = [:]
        var ids: [ValueID] = []
        var refs: [Tensor] = []
        var bindings: [String: Int] = [:]
        for o in operands + extra {
            guard case .input(_, let t, let v) = o else { continue }
            for (d, n) in zip(t.shape, v.shape) { if case .symbol(let s) = d { bindings[s] = n } }
        }
        for o in operands {
            switch o {
            case .input(let name, let t, let v):
                ids.append(b.input(name, t))
                feeds[name] = v
                refs.append(v)
            case .constant(let w):
                ids.append(try b.constant(w.name))
                refs.append(try ReferenceInterpreter.evaluate(.constant(tensor: w.name), [], model: model, outputType: w.graphType))
            }
        }
        for case .input(let name, let t, let v) in extra {
            _ = b.input(name, t)
            feeds[name] = v
        }
        let y = try b.apply(op, inputs: ids, name: "y")
        b.output(y)
        let plan = try Compiler.compile(b.graph, constants: model.constantTypes)
        let ref = try ReferenceInterpreter.evaluate(op, refs, model: model, outputType: b.graph.values[y].type, bindings: bindings)
        // One thread, and several (kernels that split their work must give the same answer).
        var outs: [Tensor] = []
        for threads in [1, 3] {
            let out = try XCTUnwrap(try Executor(plan: plan, model: model, threads: threads).run(feeds)["y"], file: file, line: line)
            assertMatches(out, ref, accuracy, "\(op.name) \(Printer.attributes(op)), \(threads) threads", file: file, line: line)
            outs.append(out)
        }
        return outs[0]
    }

    func assertMatches(_ out: Tensor, _ ref: Tensor, _ accuracy: Accuracy, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(out.shape, ref.shape, "\(what): shape", file: file, line: line)
        guard out.count == ref.asDoubles().count else { return XCTFail("\(what): \(out.count) vs \(ref.asDoubles().count) elements", file: file, line: line) }
        if case .int64(let i) = out.storage {
            XCTAssertEqual(i.map(Double.init), ref.asDoubles(), what, file: file, line: line)
            return
        }
        var bad: [String] = []
        for (i, (a, r)) in zip(out.floats, ref.asDoubles()).enumerated() {
            let ok: Bool
            switch accuracy {
            case .exact:
                let rf = Float(r)
                ok = rf.isNaN ? a.isNaN : a.bitPattern == rf.bitPattern
            case .within(let tol):
                // Beyond float32's range only the rounded (infinite) value can be expected.
                let rf = Float(r)
                ok = r.isNaN ? a.isNaN : rf.isInfinite ? a == rf : abs(Double(a) - r) <= tol * max(1, abs(r))
            }
            if !ok, bad.count < 5 { bad.append("[\(i)] \(a) vs \(r)") }
        }
        XCTAssertTrue(bad.isEmpty, "\(what): \(bad.joined(separator: ", "))", file: file, line: line)
    }

    func assertRuntimeError(_ body: @autoclosure () throws -> Any, says fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            XCTAssertTrue(e is RuntimeError, "not a RuntimeError: \(type(of: e)) \(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(fragment), "'\(e)' does not say '\(fragment)'", file: file, line: line)
        }
    }

    // MARK: - Sources

    func testFull() throws {
        let fixed = try check(.full(value: 1.5, shape: [2, 3]), [], .exact)
        XCTAssertEqual(fixed.floats, [Float](repeating: 1.5, count: 6))
        // A symbolic shape takes B from an input the fill does not read.
        let sym = try check(.full(value: -.infinity, shape: [.batch, 3]), [], extra: [Self.batched("x", random([4, 2]))], .exact)
        XCTAssertEqual(sym.shape, [4, 3])
        XCTAssertEqual(try check(.full(value: 0, shape: [0, 2]), [], .exact).count, 0)
    }

    // MARK: - Elementwise

    func testBinaryOps() throws {
        for op in [Op.add, .sub, .mul, .div] {
            try check(op, [Self.batched("a", random([2, 3, 4])), Self.batched("b", random([2, 3, 4]))], .exact)
            // Broadcasting: [B,1,4] with [3,1], a scalar, a constant operand.
            try check(op, [Self.batched("a", random([2, 1, 4])), Self.fixed("b", random([3, 1]))], .exact)
            try check(op, [Self.fixed("a", random([])), Self.batched("b", random([3, 5]))], .exact)
            try check(op, [Self.batched("a", random([2, 5])), .constant(weight("w", [5]))], .exact)
            try check(op, [.constant(weight("w", [3, 1, 1])), Self.batched("b", random([2, 1, 2, 4]))], .exact)
        }
        // IEEE specials: division by zero and 0/0.
        let d = try check(.div, [Self.fixed("a", Tensor(shape: [3], floats: [1, -1, 0])), Self.fixed("b", Tensor(shape: [3], floats: [0, 0, 0]))], .exact)
        XCTAssertEqual(Array(d.floats.prefix(2)), [.infinity, -.infinity])
        XCTAssertTrue(d.floats[2].isNaN)
    }

    func testUnaryOps() throws {
        try check(.neg, [Self.batched("x", random([2, 3, 4]))], .exact)
        try check(.scale(-0.75), [Self.batched("x", random([2, 3, 4]))], .exact)
        try check(.sqrt, [Self.batched("x", random([2, 3, 4], 0...9))], .exact)
        for op in [Op.exp, .gelu, .erf] {
            try check(op, [Self.batched("x", random([2, 3, 4], -4...4))], .within(1e-5))
        }
        try check(.log, [Self.batched("x", random([2, 3, 4], 0.01...10))], .within(1e-5))
        // log and sqrt at 0 and below 0.
        let specials = Tensor(shape: [4], floats: [0, -1, -0.0, .infinity])
        let l = try check(.log, [Self.fixed("x", specials)], .within(1e-5))
        XCTAssertEqual(l.floats[0], -.infinity)
        XCTAssertTrue(l.floats[1].isNaN)
        try check(.sqrt, [Self.fixed("x", specials)], .exact)
        try check(.exp, [Self.fixed("x", Tensor(shape: [3], floats: [-.infinity, 100, -100]))], .within(1e-5))
    }

    // MARK: - Linear algebra

    func testMatmulTransposesAndBatchBroadcast() throws {
        // op(a) = [2,1,3,4], op(b) = [5,4,6]: output [2,5,3,6] in every layout.
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = random(ta ? [2, 1, 4, 3] : [2, 1, 3, 4])
            let b = random(tb ? [5, 6, 4] : [5, 4, 6])
            let y = try check(.matmul(transposeA: ta, transposeB: tb), [Self.fixed("a", a), Self.fixed("b", b)], .within(1e-5))
            XCTAssertEqual(y.shape, [2, 5, 3, 6])
        }
        // A batched activation times a 2-D constant, and a 2-D times a batched.
        try check(.matmul(transposeA: false, transposeB: false), [Self.batched("a", random([3, 2, 4])), .constant(weight("w", [4, 5]))], .within(1e-5))
        try check(.matmul(transposeA: false, transposeB: true), [.constant(weight("w", [2, 4])), Self.batched("b", random([3, 5, 4]))], .within(1e-5))
        // K = 0 gives zeros.
        let z = try check(.matmul(transposeA: false, transposeB: false), [Self.fixed("a", random([2, 0])), Self.fixed("b", random([0, 3]))], .exact)
        XCTAssertEqual(z.floats, [Float](repeating: 0, count: 6))
    }

    func testLinear() throws {
        let x = random([2, 3, 5])
        try check(.linear, [Self.batched("x", x), .constant(weight("w", [4, 5])), .constant(weight("b", [4]))], .within(1e-5))
        try check(.linear, [Self.batched("x", x), .constant(weight("w", [4, 5]))], .within(1e-5))
        try check(.linear, [Self.fixed("x", random([5])), Self.fixed("w", random([3, 5])), Self.fixed("b", random([3]))], .within(1e-5))
        // Weights stored as float16 are widened once at load.
        let half = WeightTensor(name: "h", dtype: .float16, shape: [2, 5],
                                bytes: TensorBytes((0..<10).flatMap { i -> [UInt8] in
                                    let bits = UInt16(0x3800 + i * 0x40) // 0.5 ... in steps
                                    return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
                                }))
        try check(.linear, [Self.batched("x", x), .constant(half)], .within(1e-5))
    }

    // MARK: - Normalization and attention pieces

    func testLayerNorm() throws {
        try check(.layerNorm(eps: 1e-5), [Self.batched("x", random([2, 3, 8])), .constant(weight("w", [8])), .constant(weight("b", [8]))],
                  .within(1e-5))
        // Rows with a common offset and a large eps.
        var shifted = random([3, 16])
        shifted.storage = .float32(shifted.floats.map { $0 + 10 })
        try check(.layerNorm(eps: 0.5), [Self.fixed("x", shifted), Self.fixed("w", random([16])), Self.fixed("b", random([16]))], .within(1e-5))
    }

    func testSoftmax() throws {
        let x = random([2, 3, 5], -4...4)
        for axis in 0..<3 { try check(.softmax(axis: axis), [Self.batched("x", x)], .within(1e-5)) }
        // -inf entries get 0; a row that is entirely -inf gives NaN.
        let masked = Tensor(shape: [2, 3], floats: [0, -.infinity, 1, -.infinity, -.infinity, -.infinity])
        let y = try check(.softmax(axis: 1), [Self.fixed("x", masked)], .within(1e-5))
        XCTAssertEqual(y.floats[1], 0)
        XCTAssertTrue(y.floats[3...].allSatisfy(\.isNaN))
    }

    func testCausalMask() throws {
        for shape in [[2, 3, 5], [2, 4, 4], [3, 1, 6], [3, 3], [2, 2, 0, 3]] {
            try check(.causalMask(value: -.infinity), [Self.fixed("x", random(shape))], .exact)
        }
        try check(.causalMask(value: -1e9), [Self.batched("x", random([2, 2, 3, 5]))], .exact)
        // The mask over [M=2, N=3]: row i keeps columns j ≤ i + 1.
        let y = try check(.causalMask(value: 7), [Self.fixed("x", Tensor(shape: [2, 3], floats: [0, 0, 0, 0, 0, 0]))], .exact)
        XCTAssertEqual(y.floats, [0, 0, 7, 0, 0, 0])
    }

    func testMaskAfter() throws {
        let x = random([2, 1, 6])
        for p: Int64 in [-5, -1, 0, 2, 4, 5, 6, 100, Int64.min, Int64.max] {
            let y = try check(.maskAfter(value: -.infinity), [Self.batched("x", x), Self.fixed("p", Tensor(shape: [1], int64s: [p]))], .exact)
            let masked = y.floats.prefix(6).filter { $0 == -.infinity }.count
            XCTAssertEqual(masked, p < 0 ? 6 : max(0, 5 - Int(min(p, 5))), "position \(p)")
        }
    }

    // MARK: - Layout

    func testReshape() throws {
        let y = try check(.reshape(shape: [.batch, 12]), [Self.batched("x", random([2, 3, 4]))], .exact)
        XCTAssertEqual(y.shape, [2, 12])
        try check(.reshape(shape: [12, .batch]), [Self.batched("x", random([3, 3, 4]))], .exact)
        try check(.reshape(shape: []), [Self.fixed("x", random([1, 1]))], .exact)
        let i = try check(.reshape(shape: [6]), [Self.fixed("x", Tensor(shape: [2, 3], int64s: [1, -2, 3, Int64(1) << 40, 5, -6]))], .exact)
        XCTAssertEqual(i.int64s, [1, -2, 3, 1 << 40, 5, -6])
    }

    func testTranspose() throws {
        try check(.transpose(perm: [1, 0]), [Self.fixed("x", random([3, 5]))], .exact)
        try check(.transpose(perm: [0, 2, 1]), [Self.batched("x", random([2, 3, 4]))], .exact)
        try check(.transpose(perm: [2, 0, 1]), [Self.batched("x", random([2, 3, 4]))], .exact)
        try check(.transpose(perm: [3, 1, 0, 2]), [Self.batched("x", random([2, 3, 4, 5]))], .exact)
        try check(.transpose(perm: [0, 2, 1, 3]), [Self.batched("x", random([2, 1, 4, 3]))], .exact)
        try check(.transpose(perm: [0, 1]), [Self.fixed("x", random([2, 3]))], .exact)
    }

    func testSlice() throws {
        try check(.slice(axis: 1, start: 1, end: 4), [Self.batched("x", random([2, 6, 3]))], .exact)
        try check(.slice(axis: 0, start: 2, end: 3), [Self.fixed("x", random([4, 5]))], .exact)
        try check(.slice(axis: 2, start: 0, end: 3), [Self.batched("x", random([2, 6, 3]))], .exact)
        XCTAssertEqual(try check(.slice(axis: 1, start: 2, end: 2), [Self.batched("x", random([2, 6]))], .exact).shape, [2, 0])
    }

    func testConcat() throws {
        let y = try check(.concat(axis: 1), [Self.fixed("a", random([2, 1, 3])), Self.fixed("b", random([2, 2, 3])),
                                             .constant(weight("c", [2, 3, 3]))], .exact)
        XCTAssertEqual(y.shape, [2, 6, 3])
        try check(.concat(axis: 0), [Self.fixed("a", random([1, 4])), Self.fixed("b", random([2, 4])), Self.fixed("c", random([3, 4]))], .exact)
        try check(.concat(axis: 2), [Self.batched("a", random([2, 3, 1])), Self.batched("b", random([2, 3, 2]))], .exact)
        try check(.concat(axis: 0), [Self.fixed("a", random([5]))], .exact)
    }

    func testFlip() throws {
        for axis in 0..<3 { try check(.flip(axis: axis), [Self.batched("x", random([3, 4, 5]))], .exact) }
        let y = try check(.flip(axis: 0), [Self.fixed("x", Tensor(shape: [3], floats: [1, 2, 3]))], .exact)
        XCTAssertEqual(y.floats, [3, 2, 1])
    }

    func testPad() throws {
        try check(.pad(axis: 1, before: 2, after: 1), [Self.batched("x", random([2, 3, 4]))], .exact)
        try check(.pad(axis: 0, before: 0, after: 3), [Self.fixed("x", random([2, 3]))], .exact)
        try check(.pad(axis: 2, before: 1, after: 0), [Self.batched("x", random([2, 3, 4]))], .exact)
        let y = try check(.pad(axis: 0, before: 1, after: 2), [Self.fixed("x", Tensor(shape: [1], floats: [5]))], .exact)
        XCTAssertEqual(y.floats, [0, 5, 0, 0])
    }

    func testGather() throws {
        let table = weight("table", [5, 3])
        let idx = Tensor(shape: [3, 2], int64s: [-1, 0, 4, -5, 2, 2])
        let y = try check(.gather, [.constant(table), Self.batched("i", idx)], .exact)
        XCTAssertEqual(Array(y.floats[0..<3]), Array(table.floats()[12..<15]), "index -1 is the last row")
        try check(.gather, [Self.fixed("t", random([4, 2, 3])), Self.fixed("i", Tensor(shape: [], int64s: [-2]))], .exact)
        try check(.gather, [Self.fixed("t", random([4])), Self.batched("i", Tensor(shape: [2], int64s: [3, -4]))], .exact)
    }

    func testGatherOutOfRangeThrows() throws {
        for bad: Int64 in [5, -6, Int64.max, Int64.min] {
            let model = Model(graphs: [], tensors: [weight("table", [5, 3])], metadata: [:])
            let b = GraphBuilder(name: "g", constants: model.constantTypes)
            let i = b.input("i", TensorType(.int64, [.batch]))
            b.output(try b.apply(.gather, try b.constant("table"), i, name: "y"))
            let ex = try Executor(plan: try Compiler.compile(b.graph, constants: model.constantTypes), model: model)
            assertRuntimeError(try ex.run(["i": Tensor(shape: [2], int64s: [0, bad])]),
                               says: "gather: index \(bad) out of range for a table of 5 rows")
            // The reference refuses too, and the executor still runs valid indices afterwards.
            XCTAssertThrowsError(try ReferenceInterpreter.run(b.graph, model: model, inputs: ["i": Tensor(shape: [1], doubles: [Double(bad)])]))
            XCTAssertEqual(try ex.run(["i": Tensor(shape: [2], int64s: [4, -5])])["y"]?.shape, [2, 3])
        }
    }

    func testWriteSlice() throws {
        let state = random([2, 6, 3]), update = random([2, 2, 3])
        for p: Int64 in [0, 1, 4] {
            let y = try check(.writeSlice(axis: 1), [Self.batched("s", state), Self.batched("u", update), Self.fixed("p", Tensor(shape: [1], int64s: [p]))], .exact)
            XCTAssertEqual(Array(y.floats[(Int(p) * 3)..<(Int(p) * 3 + 6)]), Array(update.floats[0..<6]))
        }
        try check(.writeSlice(axis: 0), [Self.fixed("s", random([4, 3])), Self.fixed("u", random([4, 3])), Self.fixed("p", Tensor(shape: [1], int64s: [0]))], .exact)
        try check(.writeSlice(axis: 2), [Self.batched("s", random([2, 3, 5])), Self.batched("u", random([2, 3, 1])), Self.fixed("p", Tensor(shape: [1], int64s: [4]))], .exact)
    }

    func testWriteSliceOutOfRangeThrows() throws {
        let b = GraphBuilder(name: "w", constants: [:])
        let s = b.input("s", TensorType(.float32, [.batch, 6, 3]))
        let u = b.input("u", TensorType(.float32, [.batch, 2, 3]))
        let p = b.input("p", TensorType(.int64, [1]))
        b.output(try b.apply(.writeSlice(axis: 1), s, u, p, name: "y"))
        let model = Model(graphs: [], tensors: [], metadata: [:])
        let ex = try Executor(plan: try Compiler.compile(b.graph, constants: [:]), model: model)
        let feeds = ["s": random([2, 6, 3]), "u": random([2, 2, 3])]
        for bad: Int64 in [5, -1, 6, Int64.max, Int64.min, Int64.max - 1] {
            var f = feeds
            f["p"] = Tensor(shape: [1], int64s: [bad])
            assertRuntimeError(try ex.run(f), says: "write_slice: position \(bad) + 2 is outside 0..<6")
            XCTAssertThrowsError(try ReferenceInterpreter.run(b.graph, model: model, inputs: f.mapValues { $0 }), "reference, position \(bad)")
        }
        var f = feeds
        f["p"] = Tensor(shape: [1], int64s: [4])
        XCTAssertNoThrow(try ex.run(f))
    }

    // MARK: - Reductions

    func testReductions() throws {
        let x = random([2, 3, 4, 5])
        for axes in [[0], [1], [3], [1, 3], [0, 2], [2, 3], [0, 1, 2, 3]] {
            for keep in [false, true] {
                try check(.reduceSum(axes: axes, keepDims: keep), [Self.batched("x", x)], .within(1e-6))
                try check(.reduceMean(axes: axes, keepDims: keep), [Self.batched("x", x)], .within(1e-6))
            }
        }
        XCTAssertEqual(try check(.reduceSum(axes: [0, 1], keepDims: false), [Self.fixed("x", random([2, 3]))], .within(1e-6)).shape, [])
        let m = try check(.reduceMean(axes: [1], keepDims: true), [Self.fixed("x", Tensor(shape: [2, 2], floats: [1, 2, 3, 5]))], .within(1e-6))
        XCTAssertEqual(m.floats, [1.5, 4])
        XCTAssertEqual(m.shape, [2, 1])
    }

    // MARK: - Constants and load-time steps

    func testConstantsOfEveryStorageType() throws {
        let tensors = [
            weight("f", [2, 3]),
            WeightTensor(name: "h", dtype: .float16, shape: [4], bytes: TensorBytes([0x00, 0x3C, 0x01, 0x00, 0x00, 0xFC, 0x00, 0x80])),
            WeightTensor(name: "bf", dtype: .bfloat16, shape: [2], bytes: TensorBytes([0x80, 0x3F, 0x49, 0xC0])),
            WeightTensor(name: "i", dtype: .int64, shape: [3], bytes: TensorBytes(copying: [Int64(-1), 0, 1 << 50].withUnsafeBytes { $0 })),
        ]
        let model = Model(graphs: [], tensors: tensors, metadata: [:])
        let b = GraphBuilder(name: "c", constants: model.constantTypes)
        for t in tensors { b.output(try b.constant(t.name)) }
        for (v, t) in zip(b.graph.outputs, tensors) { b.rename(v, t.name) }
        let plan = try Compiler.compile(b.graph, constants: model.constantTypes)
        XCTAssertTrue(plan.steps.isEmpty)
        let out = try Executor(plan: plan, model: model).run([:])
        for t in tensors {
            let ref = try ReferenceInterpreter.evaluate(.constant(tensor: t.name), [], model: model, outputType: t.graphType)
            assertMatches(try XCTUnwrap(out[t.name]), ref, .exact, t.name)
        }
        XCTAssertEqual(out["h"]?.floats.map(\.bitPattern), [Float(1), 0x1p-24, -.infinity, -0.0].map(\.bitPattern))
        XCTAssertEqual(out["bf"]?.floats, [1, -3.140625])
        XCTAssertEqual(out["i"]?.int64s, [-1, 0, 1 << 50])
    }

    /// Load-time steps run once in `Executor.init`; their results feed the run steps.
    func testLoadTimeStepsMatchTheReference() throws {
        let model = Model(graphs: [], tensors: [weight("pos", [3, 4]), weight("table", [5, 4])], metadata: [:])
        let b = GraphBuilder(name: "l", constants: model.constantTypes)
        let x = b.input("x", TensorType(.float32, [.batch, 3, 4]))
        let flipped = try b.apply(.flip(axis: 0), try b.constant("pos"))
        let mean = try b.apply(.reduceMean(axes: [0], keepDims: true), try b.constant("table"))
        let bias = try b.apply(.add, flipped, try b.apply(.scale(2), mean))
        b.output(try b.apply(.add, x, bias, name: "y"))
        b.output(try b.apply(.full(value: 3, shape: [.batch, 2]), name: "fill"))
        let plan = try Compiler.compile(b.graph, constants: model.constantTypes)
        XCTAssertEqual(plan.loadSteps.count, 6)
        XCTAssertEqual(plan.steps.map(\.op), [.add, .full(value: 3, shape: [.batch, 2])])
        let ex = try Executor(plan: plan, model: model)
        let xin = random([2, 3, 4])
        let out = try ex.run(["x": xin])
        let ref = try ReferenceInterpreter.run(b.graph, model: model, inputs: ["x": xin])
        assertMatches(try XCTUnwrap(out["y"]), try XCTUnwrap(ref[b.graph.value(named: "y")!]), .within(1e-6), "y")
        assertMatches(try XCTUnwrap(out["fill"]), try XCTUnwrap(ref[b.graph.value(named: "fill")!]), .exact, "fill")
    }

    // MARK: - Executor behaviour

    /// A graph that writes one row into a state per call: the state persists across `run`
    /// calls, `resetState` zeroes it, each batch size has its own, and the write is in place.
    func testStateIsKeptAcrossRuns() throws {
        let b = GraphBuilder(name: "kv", constants: [:])
        let cache = b.input("cache", TensorType(.float32, [.batch, 4, 2]))
        let upd = b.input("upd", TensorType(.float32, [.batch, 1, 2]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        let next = try b.apply(.writeSlice(axis: 1), cache, upd, pos, name: "cache.next")
        b.output(try b.apply(.scale(1), next, name: "view"))
        b.output(next)
        var g = b.graph
        g.state = [StateBinding(input: cache, output: next)]
        let ex = try Executor(plan: try Compiler.compile(g, constants: [:]), model: Model(graphs: [], tensors: [], metadata: [:]))

        func step(_ u: [Float], at p: Int64) throws -> [Float] {
            let out = try ex.run(["upd": Tensor(shape: [u.count / 2, 1, 2], floats: u), "pos": Tensor(shape: [1], int64s: [p])])
            XCTAssertEqual(Array(out.keys), ["view"], "state outputs are not returned")
            return try XCTUnwrap(out["view"]).floats
        }
        XCTAssertEqual(try step([1, 2], at: 0), [1, 2, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(try step([3, 4], at: 2), [1, 2, 0, 0, 3, 4, 0, 0])
        // Another batch size has its own state, starting at zero.
        XCTAssertEqual(try step([5, 6, 7, 8], at: 3), [0, 0, 0, 0, 0, 0, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8])
        XCTAssertEqual(try step([9, 9], at: 1), [1, 2, 9, 9, 3, 4, 0, 0])
        // The update is in place: the state's new value shares the state's buffer.
        let bound = try ex.bind(["B": 1])
        XCTAssertEqual(bound.buffer("cache.next")?.pointer, bound.buffer("cache")?.pointer)
        bound.resetState()
        XCTAssertEqual(try step([5, 6], at: 3), [0, 0, 0, 0, 0, 0, 5, 6])
        // A state input given explicitly replaces the kept value.
        let out = try ex.run(["cache": Tensor(shape: [1, 4, 2], floats: [Float](repeating: 1, count: 8)),
                              "upd": Tensor(shape: [1, 1, 2], floats: [0, 0]), "pos": Tensor(shape: [1], int64s: [0])])
        XCTAssertEqual(out["view"]?.floats, [0, 0, 1, 1, 1, 1, 1, 1])
        // A failed write leaves the state as it was.
        XCTAssertThrowsError(try step([4, 4], at: 4))
        XCTAssertEqual(try step([2, 2], at: 1), [0, 0, 2, 2, 1, 1, 1, 1])
    }

    func testInputValidation() throws {
        let model = Model(graphs: [], tensors: [weight("table", [4, 3])], metadata: [:])
        let b = GraphBuilder(name: "v", constants: model.constantTypes)
        let x = b.input("x", TensorType(.float32, [.batch, 3]))
        let ids = b.input("ids", TensorType(.int64, [.batch]))
        b.output(try b.apply(.add, x, try b.apply(.gather, try b.constant("table"), ids), name: "y"))
        let ex = try Executor(plan: try Compiler.compile(b.graph, constants: model.constantTypes), model: model)
        let good: [String: Tensor] = ["x": random([2, 3]), "ids": Tensor(shape: [2], int64s: [0, 3])]
        XCTAssertNoThrow(try ex.run(good))

        assertRuntimeError(try ex.run(["x": good["x"]!]), says: "missing input 'ids' (i64[B])")
        assertRuntimeError(try ex.run(["x": good["x"]!, "ids": Tensor(shape: [2], floats: [0, 3])]), says: "input 'ids' must be i64, is f32")
        assertRuntimeError(try ex.run(["x": Tensor(shape: [6], floats: [Float](repeating: 0, count: 6)), "ids": good["ids"]!]),
                           says: "input 'x' must have shape f32[B,3], has [6]")
        assertRuntimeError(try ex.run(["x": random([2, 4]), "ids": good["ids"]!]), says: "input 'x' must have shape f32[B,3], has [2, 4]")
        assertRuntimeError(try ex.run(["x": good["x"]!, "ids": Tensor(shape: [3], int64s: [0, 1, 2])]),
                           says: "symbol B is 2 in one input and 3 in 'ids'")
        var extra = good
        extra["z"] = random([1])
        assertRuntimeError(try ex.run(extra), says: "'z' is not an input of graph 'v'")
    }

    /// A symbol that appears only in a state input must be bound explicitly.
    func testSymbolOnlyInStateNeedsBind() throws {
        let b = GraphBuilder(name: "s", constants: [:])
        let cache = b.input("cache", TensorType(.float32, [.batch, 2]))
        let u = b.input("u", TensorType(.float32, [1, 2]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        b.output(try b.apply(.scale(2), u, name: "y"))
        // The state's update is made from the state's own symbol, so B appears only in state inputs.
        let fill = try b.apply(.full(value: 1, shape: [.batch, 1]))
        let next = try b.apply(.writeSlice(axis: 1), cache, fill, pos, name: "cache.next")
        b.output(next)
        var g = b.graph
        g.state = [StateBinding(input: cache, output: next)]
        let ex = try Executor(plan: try Compiler.compile(g, constants: [:]), model: Model(graphs: [], tensors: [], metadata: [:]))
        assertRuntimeError(try ex.run(["u": Tensor(shape: [1, 2], floats: [1, 2]), "pos": Tensor(shape: [1], int64s: [0])]),
                           says: "symbol B appears only in state inputs; bind it with bind(_:)")
        // Bound explicitly, the plan runs in place on its buffers.
        let bound = try ex.bind(["B": 3])
        XCTAssertEqual(bound.buffer("cache")?.shape, [3, 2])
        let (up, _) = try XCTUnwrap(bound.buffer("u"))
        up.assumingMemoryBound(to: Float.self).update(from: [7, -8], count: 2)
        try bound.run()
        let (yp, shape) = try XCTUnwrap(bound.buffer("y"))
        XCTAssertEqual(shape, [1, 2])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: yp.assumingMemoryBound(to: Float.self), count: 2)), [14, -16])
    }

    /// One executor, several batch sizes: each gets its own bound plan, results stay right.
    func testTwoBatchSizes() throws {
        let model = Model(graphs: [], tensors: [weight("w", [6, 4]), weight("b", [6]), weight("g", [6]), weight("beta", [6])], metadata: [:])
        let bld = GraphBuilder(name: "mlp", constants: model.constantTypes)
        let x = bld.input("x", TensorType(.float32, [.batch, 3, 4]))
        let h = try bld.apply(.linear, x, try bld.constant("w"), try bld.constant("b"))
        let n = try bld.apply(.layerNorm(eps: 1e-5), h, try bld.constant("g"), try bld.constant("beta"))
        let s = try bld.apply(.softmax(axis: 2), try bld.apply(.gelu, n))
        bld.output(try bld.apply(.reduceSum(axes: [1], keepDims: false), s, name: "y"))
        let ex = try Executor(plan: try Compiler.compile(bld.graph, constants: model.constantTypes), model: model)
        let yid = try XCTUnwrap(bld.graph.value(named: "y"))
        for batch in [2, 5, 2, 1] {
            let xin = random([batch, 3, 4])
            let out = try XCTUnwrap(try ex.run(["x": xin])["y"])
            XCTAssertEqual(out.shape, [batch, 6])
            let ref = try ReferenceInterpreter.run(bld.graph, model: model, inputs: ["x": xin])
            assertMatches(out, try XCTUnwrap(ref[yid]), .within(1e-5), "B = \(batch)")
        }
        let b2 = try ex.bind(["B": 2]), b5 = try ex.bind(["B": 5])
        XCTAssertTrue(b2 === (try ex.bind(["B": 2])), "bound plans are cached")
        XCTAssertFalse(b2 === b5)
        XCTAssertEqual(b2.buffer("x")?.shape, [2, 3, 4])
        XCTAssertEqual(b5.buffer("x")?.shape, [5, 3, 4])
        XCTAssertLessThan(b2.arenaByteCount, b5.arenaByteCount)
    }
}
