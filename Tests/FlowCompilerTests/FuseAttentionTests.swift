import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// `FuseAttention`: multi-head attention written in primitive ops (as TarFlow's graph builder
/// writes it) and the exact graph expected after the pass and dead-code elimination; the
/// reference interpreter gives the same outputs before and after; near misses stay unfused.
final class FuseAttentionTests: XCTestCase {

    let B = Dim.batch
    // 2 heads of width 4 (C = 8) over 5 tokens; the KV caches hold 6 tokens.
    let H = 2, d = 4, C = 8, T = 5, cacheT = 6
    let c: Float = 0.5

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    /// Fusion then dead-code elimination, verifying the graph after each pass.
    func fuse(_ g: Graph) throws -> (Graph, [String]) {
        var out = g
        let log = try PassPipeline([FuseAttention(), DeadCodeElimination()], verifyEachPass: true).run(&out, context: PassContext(constants: [:]))
        return (out, log)
    }

    /// Evaluates both graphs with the reference interpreter on the same random inputs and
    /// compares every graph output (float64: the rewrite must not change the math).
    func assertSameOutputs(_ a: Graph, _ b: Graph, batch: Int = 2, position: Int64 = 3, file: StaticString = #filePath, line: UInt = #line) throws {
        var rng = SplitMix(7)
        var inputs: [String: Tensor] = [:]
        for v in a.inputs {
            let t = a.values[v].type
            let shape = t.shape.map { $0.fixedSize ?? batch }
            let n = elementCount(shape)!
            inputs[a.values[v].name] = t.dtype == .int64 ? Tensor(shape: shape, doubles: [Double](repeating: Double(position), count: n))
                : Tensor(shape: shape, doubles: (0..<n).map { _ in rng.double() })
        }
        let model = Model(graphs: [], tensors: [], metadata: [:])
        let ra = try ReferenceInterpreter.run(a, model: model, inputs: inputs)
        let rb = try ReferenceInterpreter.run(b, model: model, inputs: inputs)
        XCTAssertEqual(a.outputs.map { a.values[$0].name }, b.outputs.map { b.values[$0].name }, file: file, line: line)
        for (oa, ob) in zip(a.outputs, b.outputs) {
            let x = try XCTUnwrap(ra[oa], file: file, line: line), y = try XCTUnwrap(rb[ob], file: file, line: line)
            XCTAssertEqual(x.shape, y.shape, file: file, line: line)
            let err = maxAbsDifference(x.asDoubles(), y.asDoubles())
            XCTAssertLessThan(err, 1e-12, "output \(a.values[oa].name)", file: file, line: line)
        }
    }

    struct SplitMix {
        var s: UInt64
        init(_ seed: UInt64) { s = seed }
        mutating func double() -> Double {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53) * 4 - 2
        }
    }

    // MARK: - Forward pattern

    /// Ways to write the forward pattern; all but `.plain` (and `.extraReader`) must not fuse.
    enum Variant {
        case plain
        case softmaxIsOutput
        case scoresReadTwice
        case maskValue(Float)
        case softmaxAxis2
        case scaleAfterMask
        case mergeWithoutTranspose
        case mergeWithoutReshape
        case mergePermutedWrongly
        case qFromOtherPerm
    }

    /// qkv [B,T,3C] → reshape [B,T,3H,d] → transpose [0,2,1,3] → q, k, v slices → q·kᵀ → scale
    /// → causal mask → softmax → ·v → transpose [0,2,1,3] → reshape [B,T,C] → neg (a reader of
    /// the attention output, to show its value is kept).
    func forwardGraph(_ variant: Variant = .plain) throws -> Graph {
        let b = GraphBuilder(name: "attn", constants: [:])
        let qkv = b.input("qkv", f32([B, .fixed(T), .fixed(3 * C)]))
        let split = try b.apply(.reshape(shape: [B, .fixed(T), .fixed(3 * H), .fixed(d)]), qkv, name: "split")
        let heads = try b.apply(.transpose(perm: [0, 2, 1, 3]), split, name: "heads")
        var q = try b.apply(.slice(axis: 1, start: 0, end: H), heads, name: "q")
        if case .qFromOtherPerm = variant {
            // [B, 3H, T, d] → swap the last two axes twice: same values, not the head split.
            let t1 = try b.apply(.transpose(perm: [0, 1, 3, 2]), q, name: "qt")
            q = try b.apply(.transpose(perm: [0, 1, 3, 2]), t1, name: "qtt")
        }
        let k = try b.apply(.slice(axis: 1, start: H, end: 2 * H), heads, name: "k")
        let v = try b.apply(.slice(axis: 1, start: 2 * H, end: 3 * H), heads, name: "v")
        let s = try b.apply(.matmul(transposeA: false, transposeB: true), q, k, name: "scores")
        var p: ValueID
        switch variant {
        case .scaleAfterMask:
            let m = try b.apply(.causalMask(value: -.infinity), s, name: "masked")
            let sc = try b.apply(.scale(c), m, name: "scaled")
            p = try b.apply(.softmax(axis: 3), sc, name: "probs")
        default:
            let sc = try b.apply(.scale(c), s, name: "scaled")
            var maskValue = -Float.infinity
            if case .maskValue(let mv) = variant { maskValue = mv }
            let m = try b.apply(.causalMask(value: maskValue), sc, name: "masked")
            if case .softmaxAxis2 = variant {
                p = try b.apply(.softmax(axis: 2), m, name: "probs")
            } else {
                p = try b.apply(.softmax(axis: 3), m, name: "probs")
            }
        }
        let o = try b.apply(.matmul(transposeA: false, transposeB: false), p, v, name: "o")
        let out: ValueID
        switch variant {
        case .mergeWithoutTranspose:
            out = try b.apply(.reshape(shape: [B, .fixed(T), .fixed(C)]), o, name: "out")
        case .mergeWithoutReshape:
            out = try b.apply(.transpose(perm: [0, 2, 1, 3]), o, name: "out")
        case .mergePermutedWrongly:
            let t = try b.apply(.transpose(perm: [0, 1, 3, 2]), o, name: "merged")
            out = try b.apply(.reshape(shape: [B, .fixed(T), .fixed(C)]), t, name: "out")
        default:
            let t = try b.apply(.transpose(perm: [0, 2, 1, 3]), o, name: "merged")
            out = try b.apply(.reshape(shape: [B, .fixed(T), .fixed(C)]), t, name: "out")
        }
        b.output(try b.apply(.neg, out, name: "y"))
        if case .softmaxIsOutput = variant { b.output(p) }
        if case .scoresReadTwice = variant { b.output(try b.apply(.reduceSum(axes: [3], keepDims: false), s, name: "rowsum")) }
        return b.graph
    }

    func testForwardPatternFusesToOneAttentionOp() throws {
        let g = try forwardGraph()
        let (fused, log) = try fuse(g)
        XCTAssertEqual(log, ["fuse-attention", "dead-code-elimination"])
        let expected = Graph(
            name: "attn",
            values: [
                Value(name: "qkv", type: f32([B, 5, 24])),
                Value(name: "out", type: f32([B, 5, 8])),
                Value(name: "y", type: f32([B, 5, 8])),
            ],
            nodes: [
                Node(op: .attention(heads: 2, scale: 0.5, mask: .causal, offsets: [0, 8, 16], rowScale: false), inputs: [0, 0, 0], outputs: [1]),
                Node(op: .neg, inputs: [1], outputs: [2]),
            ],
            inputs: [0], outputs: [2])
        XCTAssertEqual(fused, expected, Printer.print(fused))
        try assertSameOutputs(g, fused)
        // A second run finds nothing left to fuse.
        var again = fused
        XCTAssertFalse(try FuseAttention().run(&again, context: PassContext(constants: [:])))
        XCTAssertEqual(again, expected)
    }

    /// The default pipeline of the compiler does the same.
    func testCompilerFusesByDefault() throws {
        let g = try forwardGraph()
        let plan = try Compiler.compile(g, constants: [:])
        XCTAssertEqual(plan.passLog, ["fuse-attention", "dead-code-elimination"])
        XCTAssertEqual(plan.steps.map(\.op), [.attention(heads: 2, scale: 0.5, mask: .causal, offsets: [0, 8, 16], rowScale: false), .neg])
        let plain = try Compiler.compile(g, constants: [:], options: .init(fusion: false))
        XCTAssertEqual(plain.graph, g)
        XCTAssertEqual(plain.steps.count, 13)
    }

    /// The slices may come in any order and sit anywhere in the qkv row: offsets follow them.
    /// The op infers the head width from v's columns after its offset, so v must end its row;
    /// when it does not, the pass declines (the graph stays correct, only unfused).
    func groupedGraph(q: Int, k: Int, v: Int) throws -> Graph {
        let b = GraphBuilder(name: "attn", constants: [:])
        // Four head groups [B, T, 4C].
        let x = b.input("x", f32([B, .fixed(T), .fixed(4 * C)]))
        let heads = try b.apply(.transpose(perm: [0, 2, 1, 3]), try b.apply(.reshape(shape: [B, .fixed(T), .fixed(4 * H), .fixed(d)]), x))
        let vv = try b.apply(.slice(axis: 1, start: v * H, end: (v + 1) * H), heads)
        let kk = try b.apply(.slice(axis: 1, start: k * H, end: (k + 1) * H), heads)
        let qq = try b.apply(.slice(axis: 1, start: q * H, end: (q + 1) * H), heads)
        var s = try b.apply(.matmul(transposeA: false, transposeB: true), qq, kk)
        s = try b.apply(.scale(0.25), s)
        s = try b.apply(.causalMask(value: -.infinity), s)
        s = try b.apply(.softmax(axis: 3), s)
        let o = try b.apply(.matmul(transposeA: false, transposeB: false), s, vv)
        b.output(try b.apply(.reshape(shape: [B, .fixed(T), .fixed(C)]), try b.apply(.transpose(perm: [0, 2, 1, 3]), o), name: "out"))
        return b.graph
    }

    func testOffsetsFollowTheSlices() throws {
        for (q, k) in [(2, 0), (0, 2), (1, 1)] {
            let g = try groupedGraph(q: q, k: k, v: 3)
            let (fused, _) = try fuse(g)
            XCTAssertEqual(fused.nodes, [Node(op: .attention(heads: 2, scale: 0.25, mask: .causal, offsets: [8 * q, 8 * k, 24], rowScale: false),
                                              inputs: [0, 0, 0], outputs: [1])], Printer.print(fused))
            try assertSameOutputs(g, fused)
        }
        for v in [0, 1, 2] {
            let g = try groupedGraph(q: 3, k: 1, v: v)
            var out = g
            XCTAssertFalse(try FuseAttention().run(&out, context: PassContext(constants: [:])), "v in group \(v) of 4")
            XCTAssertEqual(out, g)
        }
    }

    /// A q that is not a head split but is head-major [B,H,T,d] is read as such.
    func testHeadMajorQueryOfAnotherOrigin() throws {
        let g = try forwardGraph(.qFromOtherPerm)
        let (fused, _) = try fuse(g)
        let qtt = try XCTUnwrap(fused.value(named: "qtt"))
        let attention = fused.nodes.filter { if case .attention = $0.op { true } else { false } }
        XCTAssertEqual(attention, [Node(op: .attention(heads: 2, scale: 0.5, mask: .causal, offsets: [0, 8, 16], rowScale: false),
                                        inputs: [qtt, 0, 0], outputs: [try XCTUnwrap(fused.value(named: "out"))])],
                       Printer.print(fused))
        try assertSameOutputs(g, fused)
    }

    // MARK: - Decode pattern

    /// One decode step: qkv [B,1,3C]; k and v written into head-major caches [B,H,T,d] at `pos`;
    /// scores times a row scale [B,1,1,1] (on either side), masked after `pos`.
    func decodeGraph(rowScaleFirst: Bool = false, rowScaleShape: [Dim]? = nil) throws -> Graph {
        let b = GraphBuilder(name: "decode", constants: [:])
        let qkv = b.input("qkv", f32([B, 1, .fixed(3 * C)]))
        let cacheType = f32([B, .fixed(H), .fixed(cacheT), .fixed(d)])
        let kc0 = b.input("cache.k", cacheType)
        let vc0 = b.input("cache.v", cacheType)
        let pos = b.input("pos", TensorType(.int64, [1]))
        let rs = b.input("logit_scale", f32(rowScaleShape ?? [B, 1, 1, 1]))
        let split = try b.apply(.reshape(shape: [B, 1, .fixed(3 * H), .fixed(d)]), qkv, name: "split")
        let heads = try b.apply(.transpose(perm: [0, 2, 1, 3]), split, name: "heads")
        let q = try b.apply(.slice(axis: 1, start: 0, end: H), heads, name: "q")
        let k = try b.apply(.slice(axis: 1, start: H, end: 2 * H), heads, name: "k")
        let v = try b.apply(.slice(axis: 1, start: 2 * H, end: 3 * H), heads, name: "v")
        let kc = try b.apply(.writeSlice(axis: 2), kc0, k, pos, name: "cache.k.next")
        let vc = try b.apply(.writeSlice(axis: 2), vc0, v, pos, name: "cache.v.next")
        var s = try b.apply(.matmul(transposeA: false, transposeB: true), q, kc, name: "scores")
        s = rowScaleFirst ? try b.apply(.mul, rs, s, name: "scaled") : try b.apply(.mul, s, rs, name: "scaled")
        s = try b.apply(.maskAfter(value: -.infinity), s, pos, name: "masked")
        s = try b.apply(.softmax(axis: 3), s, name: "probs")
        let o = try b.apply(.matmul(transposeA: false, transposeB: false), s, vc, name: "o")
        let merged = try b.apply(.transpose(perm: [0, 2, 1, 3]), o, name: "merged")
        b.output(try b.apply(.reshape(shape: [B, 1, .fixed(C)]), merged, name: "out"))
        var g = b.graph
        g.outputs += [kc, vc]
        g.state = [StateBinding(input: kc0, output: kc), StateBinding(input: vc0, output: vc)]
        try Verifier.verify(g)
        return g
    }

    func testDecodePatternReadsTheCachesHeadMajor() throws {
        for rowScaleFirst in [false, true] {
            let g = try decodeGraph(rowScaleFirst: rowScaleFirst)
            let (fused, log) = try fuse(g)
            XCTAssertEqual(log, ["fuse-attention", "dead-code-elimination"])
            let cache = f32([B, 2, 6, 4])
            // The head split stays for k and v (the cache writes read them); q's slice goes.
            let expected = Graph(
                name: "decode",
                values: [
                    Value(name: "qkv", type: f32([B, 1, 24])),               // 0
                    Value(name: "cache.k", type: cache),                     // 1
                    Value(name: "cache.v", type: cache),                     // 2
                    Value(name: "pos", type: TensorType(.int64, [1])),       // 3
                    Value(name: "logit_scale", type: f32([B, 1, 1, 1])),     // 4
                    Value(name: "split", type: f32([B, 1, 6, 4])),           // 5
                    Value(name: "heads", type: f32([B, 6, 1, 4])),           // 6
                    Value(name: "k", type: f32([B, 2, 1, 4])),               // 7
                    Value(name: "v", type: f32([B, 2, 1, 4])),               // 8
                    Value(name: "cache.k.next", type: cache),                // 9
                    Value(name: "cache.v.next", type: cache),                // 10
                    Value(name: "out", type: f32([B, 1, 8])),                // 11
                ],
                nodes: [
                    Node(op: .reshape(shape: [B, 1, 6, 4]), inputs: [0], outputs: [5]),
                    Node(op: .transpose(perm: [0, 2, 1, 3]), inputs: [5], outputs: [6]),
                    Node(op: .slice(axis: 1, start: 2, end: 4), inputs: [6], outputs: [7]),
                    Node(op: .slice(axis: 1, start: 4, end: 6), inputs: [6], outputs: [8]),
                    Node(op: .writeSlice(axis: 2), inputs: [1, 7, 3], outputs: [9]),
                    Node(op: .writeSlice(axis: 2), inputs: [2, 8, 3], outputs: [10]),
                    Node(op: .attention(heads: 2, scale: 1, mask: .afterPosition, offsets: [0, 0, 0], rowScale: true),
                         inputs: [0, 9, 10, 4, 3], outputs: [11]),
                ],
                inputs: [0, 1, 2, 3, 4], outputs: [11, 9, 10],
                state: [StateBinding(input: 1, output: 9), StateBinding(input: 2, output: 10)])
            XCTAssertEqual(fused, expected, "row scale first: \(rowScaleFirst)\n" + Printer.print(fused))
            for p: Int64 in [0, 3, 5] { try assertSameOutputs(g, fused, batch: 3, position: p) }
        }
    }

    /// A scale that is not one number per batch row (here one per head) is not a row scale.
    func testPerHeadScaleIsNotARowScale() throws {
        let g = try decodeGraph(rowScaleShape: [B, .fixed(H), 1, 1])
        var out = g
        XCTAssertFalse(try FuseAttention().run(&out, context: PassContext(constants: [:])))
        XCTAssertEqual(out, g)
    }

    // MARK: - Near misses

    func testNearMissesDoNotFuse() throws {
        let cases: [(String, Variant)] = [
            ("softmax output is also a graph output", .softmaxIsOutput),
            ("scores have a second reader", .scoresReadTwice),
            ("mask value is not -inf", .maskValue(-1e9)),
            ("mask value is +inf", .maskValue(.infinity)),
            ("softmax over a non-last axis", .softmaxAxis2),
            ("scale after the mask", .scaleAfterMask),
            ("heads merged by a reshape alone", .mergeWithoutTranspose),
            ("heads transposed back but not reshaped", .mergeWithoutReshape),
            ("merge transposes the wrong axes", .mergePermutedWrongly),
        ]
        for (what, variant) in cases {
            let g = try forwardGraph(variant)
            var out = g
            XCTAssertFalse(try FuseAttention().run(&out, context: PassContext(constants: [:])), what)
            XCTAssertEqual(out, g, what)
            let plan = try Compiler.compile(g, constants: [:])
            XCTAssertFalse(plan.steps.contains { if case .attention = $0.op { true } else { false } }, what)
        }
    }
}
