import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// Every vector-Jacobian rule of `Differentiate` against central finite differences.
///
/// Each case builds a small graph that applies one op to inputs, projects the result to a
/// scalar (times a random constant, summed), differentiates it, and evaluates the gradient
/// graph with the reference interpreter in Double: central differences with h = 1e-6 must agree
/// to 1e-6 relative. The same gradient graph also goes through the compiler and the float32
/// executor, which must agree with the Double gradients to float32 accuracy.
final class DifferentiateTests: XCTestCase {

    // MARK: - Harness

    /// SplitMix64: a small deterministic generator, so every case is reproducible.
    struct RNG: RandomNumberGenerator {
        var state: UInt64
        init(_ seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1 }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func uniform(_ r: ClosedRange<Double>) -> Double {
            r.lowerBound + (r.upperBound - r.lowerBound) * Double(next() >> 11) / Double(1 << 53)
        }
        mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + Int(next() % UInt64(r.count)) }
        mutating func bool() -> Bool { next() & 1 == 1 }
        mutating func floats(_ n: Int, _ r: ClosedRange<Double> = -1...1) -> [Double] {
            (0..<n).map { _ in uniform(r) }
        }
    }

    /// A graph input: float32 (random in `range`, differentiated unless `wrt` is false) or
    /// int64 with given values.
    struct Input {
        var name: String
        var shape: [Dim]
        var dtype: DType = .float32
        var range: ClosedRange<Double> = -1...1
        var wrt = true
        var ints: [Int64] = []

        static func f(_ name: String, _ shape: [Dim], _ range: ClosedRange<Double> = -1...1, wrt: Bool = true) -> Input {
            Input(name: name, shape: shape, range: range, wrt: wrt)
        }
        static func i64(_ name: String, _ shape: [Int], _ values: [Int64]) -> Input {
            Input(name: name, shape: shape.map { .fixed($0) }, dtype: .int64, wrt: false, ints: values)
        }
    }

    /// A forward graph with scalar output "loss", its model (constants) and a point to check at.
    struct Problem {
        var graph: Graph
        var model: Model
        var inputs: [String: Tensor]
        var wrt: [String]
    }

    static func weight(_ name: String, _ shape: [Int], _ data: [Double]) -> WeightTensor {
        WeightTensor(name: name, dtype: .float32, shape: shape, bytes: TensorBytes(floats: data.map { Float($0) }))
    }

    /// Builds `build(inputs)`, then loss = Σ result · projection, reduced to [] or [1] (by seed).
    /// The projection is a constant when the result's shape is fixed, else a further input.
    func makeProblem(_ inputs: [Input], constants: [String: [Int]] = [:], bindings: [String: Int] = [:], seed: UInt64,
                     build: (GraphBuilder, [ValueID]) throws -> ValueID) throws -> Problem {
        var rng = RNG(seed)
        var tensors: [WeightTensor] = constants.keys.sorted().map { name in
            let s = constants[name]!
            return Self.weight(name, s, rng.floats(elementCount(s)!))
        }
        func types() -> [String: TensorType] { Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.graphType) }) }
        // A first build only to learn the result's type.
        let probe = GraphBuilder(name: "probe", constants: types())
        let probeResult = try build(probe, inputs.map { probe.input($0.name, TensorType($0.dtype, $0.shape)) })
        let resultType = probe.type(probeResult)
        let fixedShape = resultType.concreteShape([:])
        if let fixedShape { tensors.append(Self.weight("proj", fixedShape, rng.floats(elementCount(fixedShape)!))) }

        let b = GraphBuilder(name: "check", constants: types())
        let ids = inputs.map { b.input($0.name, TensorType($0.dtype, $0.shape)) }
        let projection = fixedShape == nil ? b.input("proj", resultType) : try b.constant("proj")
        let y = try build(b, ids)
        var loss = try b.apply(.mul, y, projection)
        if resultType.rank > 0 { loss = try b.apply(.reduceSum(axes: Array(0..<resultType.rank), keepDims: false), loss) }
        if seed % 2 == 1 { loss = try b.apply(.reshape(shape: [1]), loss) }
        b.rename(loss, "loss")
        b.output(loss)

        var values: [String: Tensor] = [:]
        for i in inputs {
            let shape = i.shape.map { $0.resolved(bindings)! }
            values[i.name] = i.dtype == .int64
                ? Tensor(shape: shape, doubles: i.ints.map(Double.init))
                : Tensor(shape: shape, doubles: rng.floats(elementCount(shape)!, i.range))
        }
        if fixedShape == nil {
            let shape = resultType.concreteShape(bindings)!
            values["proj"] = Tensor(shape: shape, doubles: rng.floats(elementCount(shape)!))
        }
        return Problem(graph: b.graph, model: Model(graphs: [b.graph], tensors: tensors, metadata: [:]), inputs: values,
                       wrt: inputs.filter { $0.dtype == .float32 && $0.wrt }.map(\.name))
    }

    static func loss(_ g: Graph, _ p: Problem, _ inputs: [String: Tensor]) throws -> Double {
        let vals = try ReferenceInterpreter.run(g, model: p.model, inputs: inputs)
        return vals[g.value(named: "loss")!]!.asDoubles()[0]
    }

    /// Analytic gradients (reference interpreter on the gradient graph) against central
    /// differences of the forward graph, then the compiled float32 gradient against the analytic one.
    /// - Parameter maxProbes: how many elements per input to probe (all when the input is smaller).
    func gradCheck(_ label: String, _ p: Problem, maxProbes: Int = .max, file: StaticString = #filePath, line: UInt = #line) throws {
        let gg = try Differentiate.gradientGraph(p.graph, of: "loss", wrt: p.wrt, constants: p.model.constantTypes)
        XCTAssertEqual(gg.outputs.map { gg.values[$0].name }, ["loss"] + p.wrt.map { "grad.\($0)" }, label, file: file, line: line)
        let vals = try ReferenceInterpreter.run(gg, model: p.model, inputs: p.inputs)
        XCTAssertEqual(vals[gg.value(named: "loss")!]!.asDoubles()[0], try Self.loss(p.graph, p, p.inputs), accuracy: 1e-12, label, file: file, line: line)

        let h = 1e-6
        var rng = RNG(label.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) })
        var analytic: [String: Tensor] = [:]
        for w in p.wrt {
            let grad = vals[gg.value(named: "grad.\(w)")!]!
            analytic[w] = grad
            let x = p.inputs[w]!
            XCTAssertEqual(grad.shape, x.shape, "\(label): grad.\(w) shape", file: file, line: line)
            var probes = Array(x.asDoubles().indices)
            if probes.count > maxProbes {
                for i in 0..<maxProbes { probes.swapAt(i, i + rng.int(0...(probes.count - 1 - i))) }
                probes = Array(probes.prefix(maxProbes))
            }
            for i in probes {
                var plus = p.inputs, minus = p.inputs
                var v = x.asDoubles()
                v[i] = x.asDoubles()[i] + h
                plus[w] = Tensor(shape: x.shape, doubles: v)
                v[i] = x.asDoubles()[i] - h
                minus[w] = Tensor(shape: x.shape, doubles: v)
                let numeric = (try Self.loss(p.graph, p, plus) - Self.loss(p.graph, p, minus)) / (2 * h)
                let a = grad.asDoubles()[i]
                XCTAssertLessThanOrEqual(abs(a - numeric), 1e-6 * max(1, abs(numeric)),
                                         "\(label): d loss / d \(w)[\(i)] analytic \(a) vs numeric \(numeric)", file: file, line: line)
            }
        }

        // The gradient graph is an ordinary graph: compile it and run it in float32.
        let plan = try Compiler.compile(gg, constants: p.model.constantTypes)
        let exec = try Executor(plan: plan, model: p.model)
        var tensors: [String: Tensor] = [:]
        for v in gg.inputs {
            let name = gg.values[v].name, r = p.inputs[name]!
            tensors[name] = gg.values[v].type.dtype == .int64
                ? Tensor(shape: r.shape, int64s: r.asDoubles().map { Int64($0) })
                : Tensor(shape: r.shape, floats: r.asDoubles().map { Float($0) })
        }
        let outs = try exec.run(tensors)
        let refLoss = vals[gg.value(named: "loss")!]!.asDoubles()[0]
        XCTAssertEqual(Double(outs["loss"]?.floats.first ?? .nan), refLoss, accuracy: 2e-4 * max(1, abs(refLoss)),
                       "\(label): executor loss vs reference", file: file, line: line)
        for (w, ref) in analytic {
            let ours = outs["grad.\(w)"]!
            XCTAssertEqual(ours.shape, ref.shape, "\(label): executor grad.\(w) shape", file: file, line: line)
            let scale = max(1, ref.asDoubles().map(abs).max() ?? 0)
            let err = maxAbsDifference(ours.floats, ref.asDoubles())
            XCTAssertLessThanOrEqual(err, 2e-4 * scale, "\(label): executor grad.\(w) vs reference, error \(err)", file: file, line: line)
        }
    }

    func check(_ label: String, _ inputs: [Input], constants: [String: [Int]] = [:], bindings: [String: Int] = [:], seed: UInt64 = 1,
               maxProbes: Int = .max, file: StaticString = #filePath, line: UInt = #line,
               _ build: (GraphBuilder, [ValueID]) throws -> ValueID) throws {
        let p = try makeProblem(inputs, constants: constants, bindings: bindings, seed: seed, build: build)
        try gradCheck(label, p, maxProbes: maxProbes, file: file, line: line)
    }

    static func dims(_ s: [Int]) -> [Dim] { s.map { .fixed($0) } }

    // MARK: - Elementwise

    /// Random shapes where one operand broadcasts against the other (fewer axes and/or size-1 axes).
    func binaryShapes(_ seed: UInt64) -> ([Int], [Int]) {
        var rng = RNG(seed)
        let rank = rng.int(1...3)
        let full = (0..<rank).map { _ in rng.int(2...3) }
        var other = Array(full.map { rng.bool() ? 1 : $0 }.dropFirst(rng.int(0...rank)))
        if other.isEmpty && rng.bool() { other = [1] }
        return rng.bool() ? (full, other) : (other, full)
    }

    func checkBinary(_ op: Op, _ range: ClosedRange<Double> = -1...1) throws {
        var cases = [([2, 3], [2, 3]), ([3, 1], [1, 4]), ([2, 1, 3], [4, 1]), ([2, 3, 4], [4]), ([], [2, 2])]
        for t in 0..<6 { cases.append(binaryShapes(UInt64(17 * t + 3))) }
        for (i, (sa, sb)) in cases.enumerated() {
            try check("\(op.name) \(sa) \(sb)", [.f("a", Self.dims(sa)), .f("b", Self.dims(sb), range)], seed: UInt64(i)) { b, x in
                try b.apply(op, x[0], x[1])
            }
        }
        // A symbolic batch axis broadcast against a fixed operand.
        try check("\(op.name) [B,3] [3]", [.f("a", [.batch, 3]), .f("b", [3], range)], bindings: ["B": 2], seed: 7) { b, x in
            try b.apply(op, x[0], x[1])
        }
        // One operand a constant: only the other gets a gradient.
        try check("\(op.name) x const", [.f("a", [2, 3])], constants: ["c": [3]], seed: 8) { b, x in
            try b.apply(op, x[0], b.apply(.add, b.constant("c"), b.apply(.full(value: 2, shape: [3]))))
        }
    }

    func testAdd() throws { try checkBinary(.add) }
    func testSub() throws { try checkBinary(.sub) }
    func testMul() throws { try checkBinary(.mul) }
    func testDiv() throws { try checkBinary(.div, 0.5...2) }

    func checkUnary(_ op: Op, _ range: ClosedRange<Double> = -1...1) throws {
        for (i, s) in [[5], [2, 3], [2, 1, 3]].enumerated() {
            try check("\(op.name) \(s)", [.f("x", Self.dims(s), range)], seed: UInt64(i)) { b, x in try b.apply(op, x[0]) }
        }
    }

    func testNeg() throws { try checkUnary(.neg) }
    func testExp() throws { try checkUnary(.exp) }
    func testGelu() throws { try checkUnary(.gelu, -3...3) }
    func testErf() throws { try checkUnary(.erf, -2...2) }
    func testSqrt() throws { try checkUnary(.sqrt, 0.5...2) }
    func testLog() throws { try checkUnary(.log, 0.5...2) }
    func testScale() throws { try checkUnary(.scale(-1.75)) }

    // MARK: - Linear algebra

    func testMatmul() throws {
        // (batch of A, batch of B): equal, one missing, broadcast size-1 axes.
        let batches: [([Int], [Int])] = [([], []), ([2], [2]), ([2], []), ([], [3]), ([2, 1], [3]), ([1], [2])]
        var seed: UInt64 = 0
        for ta in [false, true] {
            for tb in [false, true] {
                for (ba, bb) in batches {
                    let m = 2, k = 3, n = 4
                    let sa = ba + (ta ? [k, m] : [m, k]), sb = bb + (tb ? [n, k] : [k, n])
                    seed += 1
                    try check("matmul ta=\(ta) tb=\(tb) \(sa) \(sb)", [.f("a", Self.dims(sa)), .f("b", Self.dims(sb))], seed: seed) { b, x in
                        try b.apply(.matmul(transposeA: ta, transposeB: tb), x[0], x[1])
                    }
                }
            }
        }
        // The same value on both sides: x·xᵀ sums two contributions.
        try check("matmul x·xᵀ", [.f("x", [2, 3, 4])]) { b, x in try b.apply(.matmul(transposeA: false, transposeB: true), x[0], x[0]) }
        // Symbolic batch.
        try check("matmul [B,2,3]·[3,4]", [.f("a", [.batch, 2, 3]), .f("b", [3, 4])], bindings: ["B": 2]) { b, x in
            try b.apply(.matmul(transposeA: false, transposeB: false), x[0], x[1])
        }
    }

    func testLinear() throws {
        let shapes: [[Dim]] = [[5], [3, 5], [2, 3, 5], [.batch, 3, 5], [.batch, 2, 2, 5]]
        for (i, s) in shapes.enumerated() {
            for bias in [false, true] {
                var inputs: [Input] = [.f("x", s), .f("w", [4, 5])]
                if bias { inputs.append(.f("bias", [4])) }
                try check("linear \(s) bias=\(bias)", inputs, bindings: ["B": 2], seed: UInt64(2 * i + (bias ? 1 : 0))) { b, x in
                    try b.apply(.linear, inputs: x)
                }
            }
        }
        // Constant weights: only x is differentiated.
        try check("linear const W", [.f("x", [2, 5])], constants: ["w": [4, 5], "bias": [4]]) { b, x in
            try b.apply(.linear, x[0], b.constant("w"), b.constant("bias"))
        }
    }

    // MARK: - Normalization and attention pieces

    func testLayerNorm() throws {
        for (i, s) in [[6], [3, 6], [2, 2, 6]].enumerated() {
            try check("layer_norm \(s)", [.f("x", Self.dims(s)), .f("w", [6], 0.5...1.5), .f("b", [6])], seed: UInt64(i)) { b, x in
                try b.apply(.layerNorm(eps: 1e-5), x[0], x[1], x[2])
            }
        }
        try check("layer_norm [B,4] const affine", [.f("x", [.batch, 4])], constants: ["w": [4], "b": [4]], bindings: ["B": 3]) { b, x in
            try b.apply(.layerNorm(eps: 1e-3), x[0], b.constant("w"), b.constant("b"))
        }
        // Only the affine parameters differentiated.
        try check("layer_norm w, b only", [.f("x", [3, 4], wrt: false), .f("w", [4]), .f("b", [4])]) { b, x in
            try b.apply(.layerNorm(eps: 1e-5), x[0], x[1], x[2])
        }
    }

    func testSoftmax() throws {
        for axis in 0..<3 {
            try check("softmax axis \(axis)", [.f("x", [3, 4, 2], -2...2)], seed: UInt64(axis)) { b, x in try b.apply(.softmax(axis: axis), x[0]) }
        }
    }

    func testCausalMask() throws {
        try check("causal_mask M<N", [.f("x", [2, 3, 5])]) { b, x in try b.apply(.causalMask(value: 0.5), x[0]) }
        try check("causal_mask -inf + softmax", [.f("x", [2, 4, 4])], seed: 2) { b, x in
            try b.apply(.softmax(axis: 2), b.apply(.causalMask(value: -.infinity), x[0]))
        }
    }

    func testMaskAfter() throws {
        try check("mask_after", [.f("x", [2, 5]), .i64("pos", [1], [2])]) { b, x in try b.apply(.maskAfter(value: 0.25), x[0], x[1]) }
        try check("mask_after -inf + softmax", [.f("x", [3, 1, 4]), .i64("pos", [1], [1])], seed: 2) { b, x in
            try b.apply(.softmax(axis: 2), b.apply(.maskAfter(value: -.infinity), x[0], x[1]))
        }
    }

    // MARK: - Layout

    func testReshape() throws {
        try check("reshape [2,3,4]->[6,4]", [.f("x", [2, 3, 4])]) { b, x in try b.apply(.reshape(shape: [6, 4]), x[0]) }
        try check("reshape [4,6]->[2,2,3,2]", [.f("x", [4, 6])], seed: 2) { b, x in try b.apply(.reshape(shape: [2, 2, 3, 2]), x[0]) }
        try check("reshape [B,6]->[B,2,3]", [.f("x", [.batch, 6])], bindings: ["B": 2], seed: 3) { b, x in
            try b.apply(.reshape(shape: [.batch, 2, 3]), x[0])
        }
    }

    func testTranspose() throws {
        var rng = RNG(5)
        for (i, s) in [[2, 3], [2, 3, 4], [2, 1, 3, 2], [3, 2, 2]].enumerated() {
            var perm = Array(0..<s.count)
            while perm == Array(0..<s.count) { perm.shuffle(using: &rng) }
            try check("transpose \(s) \(perm)", [.f("x", Self.dims(s))], seed: UInt64(i)) { b, x in try b.apply(.transpose(perm: perm), x[0]) }
        }
    }

    func testSlice() throws {
        for (i, (axis, start, end)) in [(0, 1, 3), (1, 0, 2), (2, 1, 2), (2, 0, 4)].enumerated() {
            try check("slice axis \(axis) \(start):\(end)", [.f("x", [3, 3, 4])], seed: UInt64(i)) { b, x in
                try b.apply(.slice(axis: axis, start: start, end: end), x[0])
            }
        }
    }

    func testConcat() throws {
        for axis in 0..<3 {
            // Operands: wrt input a (used twice), a constant, wrt input c.
            var sa = [2, 3, 2], sc = [2, 3, 2], sk = [2, 3, 2]
            sa[axis] = 1
            sc[axis] = 3
            sk[axis] = 2
            try check("concat axis \(axis)", [.f("a", Self.dims(sa)), .f("c", Self.dims(sc))], constants: ["k": sk], seed: UInt64(axis)) { b, x in
                try b.apply(.concat(axis: axis), inputs: [x[0], b.constant("k"), x[1], x[0]])
            }
        }
    }

    func testFlip() throws {
        for axis in 0..<3 {
            try check("flip axis \(axis)", [.f("x", [2, 3, 4])], seed: UInt64(axis)) { b, x in try b.apply(.flip(axis: axis), x[0]) }
        }
    }

    func testPad() throws {
        for (i, (axis, before, after)) in [(0, 1, 0), (1, 0, 2), (2, 2, 1), (1, 1, 1)].enumerated() {
            try check("pad axis \(axis) \(before),\(after)", [.f("x", [2, 3, 2])], seed: UInt64(i)) { b, x in
                try b.apply(.pad(axis: axis, before: before, after: after), x[0])
            }
        }
    }

    /// A constant table: gather is off the path, the gathered rows scale a wrt input.
    func testGatherWithConstantTable() throws {
        try check("gather const table", [.f("x", [2, 2, 3]), .i64("idx", [2, 2], [0, 4, -1, 2])], constants: ["table": [5, 3]]) { b, x in
            try b.apply(.mul, b.apply(.gather, b.constant("table"), x[1]), x[0])
        }
    }

    // MARK: - Reductions

    func testReductions() throws {
        var seed: UInt64 = 0
        for op in [Op.reduceSum(axes: [0], keepDims: false), .reduceMean(axes: [0], keepDims: false)] {
            for axes in [[0], [1], [2], [0, 2], [1, 2], [0, 1, 2]] {
                for keep in [false, true] {
                    let o: Op = if case .reduceSum = op { .reduceSum(axes: axes, keepDims: keep) } else { .reduceMean(axes: axes, keepDims: keep) }
                    seed += 1
                    try check("\(o.name) axes \(axes) keep=\(keep)", [.f("x", [2, 3, 2])], seed: seed) { b, x in try b.apply(o, x[0]) }
                }
            }
        }
        // A mean over a symbolic axis divides by its run-time size.
        for keep in [false, true] {
            try check("reduce_mean over B keep=\(keep)", [.f("x", [.batch, 3])], bindings: ["B": 3], seed: keep ? 1 : 2) { b, x in
                try b.apply(.reduceMean(axes: [0], keepDims: keep), x[0])
            }
            try check("reduce_sum over B keep=\(keep)", [.f("x", [.batch, 3])], bindings: ["B": 2], seed: keep ? 3 : 4) { b, x in
                try b.apply(.reduceSum(axes: [0], keepDims: keep), x[0])
            }
        }
    }

    // MARK: - Graph structure

    /// A value read by several nodes sums its contributions; fills and constants have none.
    func testFanOutAndSources() throws {
        try check("fan-out", [.f("x", [2, 3]), .f("y", [3])], constants: ["c": [2, 3]]) { b, x in
            let sq = try b.apply(.mul, x[0], x[0])
            let e = try b.apply(.exp, b.apply(.mul, x[0], b.constant("c")))
            let f = try b.apply(.add, x[1], b.apply(.full(value: 0.5, shape: [3])))
            return try b.apply(.add, b.apply(.sub, sq, e), b.apply(.mul, f, b.apply(.mul, x[0], x[1])))
        }
    }

    /// An input that does not reach the loss gets a zero gradient; the loss itself may be an
    /// input-free constant expression plus the input.
    func testInputOffThePathGetsZeros() throws {
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, 2]))
        let u = b.input("u", TensorType(.float32, [3]))
        let other = try b.apply(.exp, u, name: "other")
        let loss = try b.apply(.reduceSum(axes: [0, 1], keepDims: false), x, name: "loss")
        b.output(other)
        b.output(loss)
        let gg = try Differentiate.gradientGraph(b.graph, of: "loss", wrt: ["x", "u"], constants: [:])
        XCTAssertEqual(gg.outputs.map { gg.values[$0].name }, ["other", "loss", "grad.x", "grad.u"])
        let m = Model(graphs: [], tensors: [], metadata: [:])
        let vals = try ReferenceInterpreter.run(gg, model: m, inputs: ["x": Tensor(shape: [2, 2], doubles: [1, 2, 3, 4]),
                                                                       "u": Tensor(shape: [3], doubles: [0, 0, 0])])
        XCTAssertEqual(vals[gg.value(named: "grad.x")!]!, Tensor(shape: [2, 2], doubles: [1, 1, 1, 1]))
        XCTAssertEqual(vals[gg.value(named: "grad.u")!]!, Tensor(shape: [3], doubles: [0, 0, 0]))
        // Nothing off the path was differentiated: no exp' (a mul by `other`) was emitted.
        XCTAssertFalse(gg.nodes.dropFirst(b.graph.nodes.count).contains { $0.inputs.contains(other) })
    }

    /// d(a + b): both gradients are the same value; each output still gets its own value.
    func testSharedGradientValues() throws {
        try check("a + b", [.f("a", [3]), .f("b", [3])]) { b, x in try b.apply(.add, x[0], x[1]) }
        try check("scalar input", [.f("a", [])]) { _, x in x[0] }
    }

    /// write_slice off the path is fine; its result is an ordinary operand.
    func testWriteSliceOffThePath() throws {
        let inputs: [Input] = [.f("x", [4, 3]), .f("s", [4, 3], wrt: false), .f("u", [1, 3], wrt: false), .i64("pos", [1], [2])]
        try check("write_slice off path", inputs) { b, x in
            try b.apply(.mul, x[0], b.apply(.writeSlice(axis: 0), x[1], x[2], x[3]))
        }
    }

    // MARK: - Errors

    func expectError(_ containing: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error containing '\(containing)'", file: file, line: line)
        } catch {
            XCTAssertTrue("\(error)".contains(containing), "error '\(error)' does not contain '\(containing)'", file: file, line: line)
        }
    }

    func testOpWithoutRuleIsAnErrorNamingIt() throws {
        let p = try makeProblem([.f("x", [1, 3]), .f("s", [4, 3], wrt: false), .i64("pos", [1], [2])], seed: 1) { b, x in
            try b.apply(.writeSlice(axis: 0), x[1], x[0], x[2])
        }
        expectError("differentiate: no vector-Jacobian rule for write_slice") {
            _ = try Differentiate.gradientGraph(p.graph, of: "loss", wrt: p.wrt, constants: p.model.constantTypes)
        }
        // Through a pass pipeline as well.
        var g = p.graph
        expectError("no vector-Jacobian rule for write_slice") {
            _ = try PassPipeline([Differentiate(of: "loss", wrt: ["x"])]).run(&g, context: PassContext(constants: p.model.constantTypes))
        }
        let q = try makeProblem([.f("table", [5, 3]), .i64("idx", [2], [1, 3])], seed: 2) { b, x in try b.apply(.gather, x[0], x[1]) }
        expectError("differentiate: no vector-Jacobian rule for gather's table") {
            _ = try Differentiate.gradientGraph(q.graph, of: "loss", wrt: q.wrt, constants: q.model.constantTypes)
        }
    }

    func testBadRequests() throws {
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float32, [2]))
        let i = b.input("i", TensorType(.int64, [1]))
        let y = try b.apply(.exp, x, name: "y")
        let s = try b.apply(.reduceSum(axes: [0], keepDims: true), y, name: "s")
        b.output(y)
        b.output(s)
        _ = i
        expectError("must be a float32 scalar") { _ = try Differentiate.gradientGraph(b.graph, of: "y", wrt: ["x"], constants: [:]) }
        expectError("'nope' is not an output") { _ = try Differentiate.gradientGraph(b.graph, of: "nope", wrt: ["x"], constants: [:]) }
        expectError("'z' is not an input") { _ = try Differentiate.gradientGraph(b.graph, of: "s", wrt: ["z"], constants: [:]) }
        expectError("only float32 inputs") { _ = try Differentiate.gradientGraph(b.graph, of: "s", wrt: ["i"], constants: [:]) }
        expectError("listed twice") { _ = try Differentiate.gradientGraph(b.graph, of: "s", wrt: ["x", "x"], constants: [:]) }
    }

    // MARK: - Pass and end to end

    /// The pass form in a pipeline with the default passes; the result compiles and runs.
    func testPassInPipeline() throws {
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, 3]))
        let unused = try b.apply(.neg, x)
        _ = unused
        let loss = try b.apply(.reduceSum(axes: [0, 1], keepDims: true), b.apply(.mul, x, x))
        let l1 = try b.apply(.reshape(shape: [1]), loss, name: "loss")
        b.output(l1)
        var g = b.graph
        let d = Differentiate(of: "loss", wrt: ["x"])
        XCTAssertEqual(d.name, "differentiate")
        let log = try PassPipeline([d] + Compiler.defaultPasses(), verifyEachPass: true).run(&g, context: PassContext(constants: [:]))
        XCTAssertEqual(log.first, "differentiate")
        XCTAssertTrue(log.contains("dead-code-elimination"))
        let exec = try Executor(plan: Compiler.compile(g, constants: [:]), model: Model(graphs: [], tensors: [], metadata: [:]))
        let out = try exec.run(["x": Tensor(shape: [2, 3], floats: [1, 2, 3, -1, -2, 0.5])])
        XCTAssertEqual(out["grad.x"]?.floats, [2, 4, 6, -2, -4, 1])
        XCTAssertEqual(out["loss"]?.floats, [19.25])
    }

    /// Two pre-norm transformer layers (layer_norm → attention with a causal mask and softmax →
    /// linear + residual; layer_norm → linear → gelu → linear + residual) over a symbolic batch,
    /// differentiated with respect to the input and every weight.
    func testTwoLayerTransformer() throws {
        let c = 8, heads = 2, d = 4, t = 4, hidden = 16
        var inputs: [Input] = [.f("x", [.batch, .fixed(t), .fixed(c)])]
        for l in 0..<2 {
            inputs += [
                .f("l\(l).ln1.w", [.fixed(c)], 0.5...1.5), .f("l\(l).ln1.b", [.fixed(c)]),
                .f("l\(l).qkv.w", [.fixed(3 * c), .fixed(c)]), .f("l\(l).qkv.b", [.fixed(3 * c)]),
                .f("l\(l).proj.w", [.fixed(c), .fixed(c)]), .f("l\(l).proj.b", [.fixed(c)]),
                .f("l\(l).ln2.w", [.fixed(c)], 0.5...1.5), .f("l\(l).ln2.b", [.fixed(c)]),
                .f("l\(l).fc1.w", [.fixed(hidden), .fixed(c)]), .f("l\(l).fc1.b", [.fixed(hidden)]),
                .f("l\(l).fc2.w", [.fixed(c), .fixed(hidden)]), .f("l\(l).fc2.b", [.fixed(c)]),
            ]
        }
        let p = try makeProblem(inputs, constants: ["pos": [t, c]], bindings: ["B": 2], seed: 11) { b, x in
            let B = Dim.batch
            var h = try b.apply(.add, x[0], b.constant("pos"))
            for l in 0..<2 {
                let w = Array(x[(1 + 12 * l)..<(13 + 12 * l)])
                let n1 = try b.apply(.layerNorm(eps: 1e-5), h, w[0], w[1])
                let qkv = try b.apply(.linear, n1, w[2], w[3])
                func head(_ i: Int) throws -> ValueID {
                    let s = try b.apply(.slice(axis: 2, start: i * c, end: (i + 1) * c), qkv)
                    return try b.apply(.transpose(perm: [0, 2, 1, 3]), b.apply(.reshape(shape: [B, .fixed(t), .fixed(heads), .fixed(d)]), s))
                }
                let q = try head(0), k = try head(1), v = try head(2)
                let scores = try b.apply(.scale(1 / Float(d).squareRoot()), b.apply(.matmul(transposeA: false, transposeB: true), q, k))
                let attn = try b.apply(.softmax(axis: 3), b.apply(.causalMask(value: -.infinity), scores))
                let o = try b.apply(.matmul(transposeA: false, transposeB: false), attn, v)
                let merged = try b.apply(.reshape(shape: [B, .fixed(t), .fixed(c)]), b.apply(.transpose(perm: [0, 2, 1, 3]), o))
                h = try b.apply(.add, h, b.apply(.linear, merged, w[4], w[5]))
                let n2 = try b.apply(.layerNorm(eps: 1e-5), h, w[6], w[7])
                let m = try b.apply(.gelu, b.apply(.linear, n2, w[8], w[9]))
                h = try b.apply(.add, h, b.apply(.linear, m, w[10], w[11]))
            }
            return h
        }
        try gradCheck("two-layer transformer", p, maxProbes: 12)
    }
}
