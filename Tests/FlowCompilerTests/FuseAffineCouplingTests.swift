import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// `FuseAffineCoupling`: the shift-and-affine step of TarFlow's blocks (with and without a
/// following token flip, with and without the scale half) and the exact graph expected after
/// the pass and dead-code elimination; the reference interpreter gives the same outputs before
/// and after; a scale half that a log-determinant also reads stays alive; shifts along
/// another axis stay unfused.
final class FuseAffineCouplingTests: XCTestCase {

    let B = Dim.batch
    let T = 5, D = 3

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    func fuse(_ g: Graph) throws -> (Graph, [String]) {
        var out = g
        let log = try PassPipeline([FuseAffineCoupling(), DeadCodeElimination()], verifyEachPass: true).run(&out, context: PassContext(constants: [:]))
        return (out, log)
    }

    func assertSameOutputs(_ a: Graph, _ b: Graph, file: StaticString = #filePath, line: UInt = #line) throws {
        var inputs: [String: Tensor] = [:]
        for (i, v) in a.inputs.enumerated() {
            let shape = a.values[v].type.shape.map { $0.fixedSize ?? 2 }
            let n = elementCount(shape)!
            inputs[a.values[v].name] = Tensor(shape: shape, doubles: (0..<n).map { Double(($0 * 5 + i * 3) % 13) / 6 - 1.1 })
        }
        let model = Model(graphs: [], tensors: [], metadata: [:])
        let ra = try ReferenceInterpreter.run(a, model: model, inputs: inputs)
        let rb = try ReferenceInterpreter.run(b, model: model, inputs: inputs)
        for (oa, ob) in zip(a.outputs, b.outputs) {
            let x = try XCTUnwrap(ra[oa], file: file, line: line), y = try XCTUnwrap(rb[ob], file: file, line: line)
            XCTAssertEqual(x.shape, y.shape, file: file, line: line)
            XCTAssertLessThan(maxAbsDifference(x.asDoubles(), y.asDoubles()), 1e-12, a.values[oa].name, file: file, line: line)
        }
    }

    /// TarFlow's block tail: s = pad(slice(p)) shifted by `shift` tokens, then either
    /// z = (x − s[..., D:2D])·exp(−s[..., :D]) (`nvp`) or z = x − s; optionally flipped along
    /// the tokens; optionally the log-determinant −mean(a) as a second output.
    func couplingGraph(nvp: Bool, flip: Bool = false, logdet: Bool = false, shift: Int = 1) throws -> Graph {
        let b = GraphBuilder(name: "coupling", constants: [:])
        let x = b.input("x", f32([B, .fixed(T), .fixed(D)]))
        let p = b.input("p", f32([B, .fixed(T), .fixed(nvp ? 2 * D : D)]))
        let sl = try b.apply(.slice(axis: 1, start: 0, end: T - shift), p, name: "head")
        let s = try b.apply(.pad(axis: 1, before: shift, after: 0), sl, name: "shifted")
        var z: ValueID
        var ld: ValueID? = nil
        if nvp {
            let xa = try b.apply(.slice(axis: 2, start: 0, end: D), s, name: "xa")
            let xb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), s, name: "xb")
            z = try b.apply(.mul, try b.apply(.sub, x, xb, name: "centered"), try b.apply(.exp, try b.apply(.neg, xa, name: "na"), name: "ea"), name: "z")
            if logdet { ld = try b.apply(.neg, try b.apply(.reduceMean(axes: [1, 2], keepDims: false), xa, name: "mean"), name: "logdet") }
        } else {
            z = try b.apply(.sub, x, s, name: "z")
        }
        if flip { z = try b.apply(.flip(axis: 1), z, name: "zf") }
        b.output(z)
        if let ld { b.output(ld) }
        return b.graph
    }

    func expectedFused(nvp: Bool, flip: Bool, shift: Int = 1) -> Graph {
        Graph(
            name: "coupling",
            values: [
                Value(name: "x", type: f32([B, 5, 3])),
                Value(name: "p", type: f32([B, 5, .fixed(nvp ? 6 : 3)])),
                Value(name: flip ? "zf" : "z", type: f32([B, 5, 3])),
            ],
            nodes: [Node(op: .affineCoupling(shift: shift, hasScale: nvp, flip: flip), inputs: [0, 1], outputs: [2])],
            inputs: [0, 1], outputs: [2])
    }

    func testAffinePatternWithAndWithoutFlip() throws {
        for flip in [false, true] {
            let g = try couplingGraph(nvp: true, flip: flip)
            let (fused, log) = try fuse(g)
            XCTAssertEqual(log, ["fuse-affine-coupling", "dead-code-elimination"])
            XCTAssertEqual(fused, expectedFused(nvp: true, flip: flip), Printer.print(fused))
            try assertSameOutputs(g, fused)
        }
    }

    func testShiftOnlyPattern() throws {
        for flip in [false, true] {
            for shift in [1, 2, 0] {
                let g = try couplingGraph(nvp: false, flip: flip, shift: shift)
                let (fused, _) = try fuse(g)
                XCTAssertEqual(fused, expectedFused(nvp: false, flip: flip, shift: shift), "flip \(flip) shift \(shift)\n" + Printer.print(fused))
                try assertSameOutputs(g, fused)
            }
        }
        // A wider shift of the affine pattern too.
        let g = try couplingGraph(nvp: true, shift: 2)
        let (fused, _) = try fuse(g)
        XCTAssertEqual(fused, expectedFused(nvp: true, flip: false, shift: 2))
        try assertSameOutputs(g, fused)
    }

    /// The log-determinant reads the scale half: its slice (and the shift feeding it) stays;
    /// the coupling reads x and p directly.
    func testScaleSliceKeptAliveByTheLogdet() throws {
        for flip in [false, true] {
            let g = try couplingGraph(nvp: true, flip: flip, logdet: true)
            let (fused, _) = try fuse(g)
            // Values keep their order: without a flip z (made by the mul) precedes the mean;
            // with one, the coupling takes the flip's place, after the log-determinant.
            let z = Value(name: flip ? "zf" : "z", type: f32([B, 5, 3]))
            let mean = Value(name: "mean", type: f32([B])), logdet = Value(name: "logdet", type: f32([B]))
            let common = [
                Value(name: "x", type: f32([B, 5, 3])),        // 0
                Value(name: "p", type: f32([B, 5, 6])),        // 1
                Value(name: "head", type: f32([B, 4, 6])),     // 2
                Value(name: "shifted", type: f32([B, 5, 6])),  // 3
                Value(name: "xa", type: f32([B, 5, 3])),       // 4
            ]
            let shiftNodes = [
                Node(op: .slice(axis: 1, start: 0, end: 4), inputs: [1], outputs: [2]),
                Node(op: .pad(axis: 1, before: 1, after: 0), inputs: [2], outputs: [3]),
                Node(op: .slice(axis: 2, start: 0, end: 3), inputs: [3], outputs: [4]),
            ]
            let expected = flip
                ? Graph(name: "coupling", values: common + [mean, logdet, z],
                        nodes: shiftNodes + [
                            Node(op: .reduceMean(axes: [1, 2], keepDims: false), inputs: [4], outputs: [5]),
                            Node(op: .neg, inputs: [5], outputs: [6]),
                            Node(op: .affineCoupling(shift: 1, hasScale: true, flip: true), inputs: [0, 1], outputs: [7]),
                        ],
                        inputs: [0, 1], outputs: [7, 6])
                : Graph(name: "coupling", values: common + [z, mean, logdet],
                        nodes: shiftNodes + [
                            Node(op: .affineCoupling(shift: 1, hasScale: true, flip: false), inputs: [0, 1], outputs: [5]),
                            Node(op: .reduceMean(axes: [1, 2], keepDims: false), inputs: [4], outputs: [6]),
                            Node(op: .neg, inputs: [6], outputs: [7]),
                        ],
                        inputs: [0, 1], outputs: [5, 7])
            XCTAssertEqual(fused, expected, "flip \(flip)\n" + Printer.print(fused))
            try assertSameOutputs(g, fused)
        }
    }

    /// The forward graph of TarFlow flips the block input too: the coupling then reads the flip.
    func testFlippedInput() throws {
        let b = GraphBuilder(name: "c", constants: [:])
        let seq = b.input("seq", f32([B, .fixed(T), .fixed(D)]))
        let p = b.input("p", f32([B, .fixed(T), .fixed(2 * D)]))
        let x = try b.apply(.flip(axis: 1), seq, name: "xin")
        let s = try b.apply(.pad(axis: 1, before: 1, after: 0), try b.apply(.slice(axis: 1, start: 0, end: T - 1), p))
        let xa = try b.apply(.slice(axis: 2, start: 0, end: D), s)
        let xb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), s)
        let z = try b.apply(.mul, try b.apply(.sub, x, xb), try b.apply(.exp, try b.apply(.neg, xa)))
        b.output(try b.apply(.flip(axis: 1), z, name: "out"))
        let (fused, _) = try fuse(b.graph)
        XCTAssertEqual(fused.nodes, [
            Node(op: .flip(axis: 1), inputs: [0], outputs: [2]),
            Node(op: .affineCoupling(shift: 1, hasScale: true, flip: true), inputs: [2, 1], outputs: [3]),
        ], Printer.print(fused))
        try assertSameOutputs(b.graph, fused)
    }

    // MARK: - No fusion

    func testShiftAlongAnotherAxisIsNotFused() throws {
        // Shift along the features (axis 2) instead of the tokens.
        let b = GraphBuilder(name: "c", constants: [:])
        let x = b.input("x", f32([B, .fixed(T), .fixed(D)]))
        let p = b.input("p", f32([B, .fixed(T), .fixed(D)]))
        let s = try b.apply(.pad(axis: 2, before: 1, after: 0), try b.apply(.slice(axis: 2, start: 0, end: D - 1), p))
        b.output(try b.apply(.sub, x, s))
        var g = b.graph
        XCTAssertFalse(try FuseAffineCoupling().run(&g, context: PassContext(constants: [:])))
        XCTAssertEqual(g, b.graph)
    }

    func testNearMissesAreNotFused() throws {
        func build(_ body: (GraphBuilder, ValueID, ValueID) throws -> Void) throws -> Graph {
            let b = GraphBuilder(name: "c", constants: [:])
            let x = b.input("x", f32([B, .fixed(T), .fixed(D)]))
            let p = b.input("p", f32([B, .fixed(T), .fixed(2 * D)]))
            try body(b, x, p)
            return b.graph
        }
        func shift(_ b: GraphBuilder, _ p: ValueID, width: Int) throws -> ValueID {
            let q = width == 2 * D ? p : try b.apply(.slice(axis: 2, start: 0, end: width), p)
            return try b.apply(.pad(axis: 1, before: 1, after: 0), try b.apply(.slice(axis: 1, start: 0, end: T - 1), q))
        }
        let cases: [(String, Graph)] = [
            ("shifted value also an output", try build { b, x, p in
                let s = try shift(b, p, width: D)
                b.output(try b.apply(.sub, x, s))
                b.output(s)
            }),
            ("x − s with x broadcast over the tokens", try build { b, _, p in
                let x1 = b.input("x1", f32([B, 1, .fixed(D)]))
                b.output(try b.apply(.sub, x1, try shift(b, p, width: D)))
            }),
            ("s − x (reversed)", try build { b, x, p in
                b.output(try b.apply(.sub, try shift(b, p, width: D), x))
            }),
            ("a and b from different shifts", try build { b, x, p in
                let s1 = try shift(b, p, width: 2 * D), s2 = try shift(b, p, width: 2 * D)
                let xa = try b.apply(.slice(axis: 2, start: 0, end: D), s1)
                let xb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), s2)
                b.output(try b.apply(.mul, try b.apply(.sub, x, xb), try b.apply(.exp, try b.apply(.neg, xa))))
            }),
            ("a and b swapped", try build { b, x, p in
                let s = try shift(b, p, width: 2 * D)
                let xa = try b.apply(.slice(axis: 2, start: D, end: 2 * D), s)
                let xb = try b.apply(.slice(axis: 2, start: 0, end: D), s)
                b.output(try b.apply(.mul, try b.apply(.sub, x, xb), try b.apply(.exp, try b.apply(.neg, xa))))
            }),
            ("exp(a) instead of exp(−a)", try build { b, x, p in
                let s = try shift(b, p, width: 2 * D)
                let xa = try b.apply(.slice(axis: 2, start: 0, end: D), s)
                let xb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), s)
                b.output(try b.apply(.mul, try b.apply(.sub, x, xb), try b.apply(.exp, xa)))
            }),
            ("the exp also an output", try build { b, x, p in
                let s = try shift(b, p, width: 2 * D)
                let xa = try b.apply(.slice(axis: 2, start: 0, end: D), s)
                let xb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), s)
                let e = try b.apply(.exp, try b.apply(.neg, xa))
                b.output(try b.apply(.mul, try b.apply(.sub, x, xb), e))
                b.output(e)
            }),
            ("a shift with padding after", try build { b, x, p in
                let q = try b.apply(.slice(axis: 2, start: 0, end: D), p)
                let s = try b.apply(.pad(axis: 1, before: 0, after: 1), try b.apply(.slice(axis: 1, start: 1, end: T), q))
                b.output(try b.apply(.sub, x, s))
            }),
        ]
        for (what, g) in cases {
            var out = g
            XCTAssertFalse(try FuseAffineCoupling().run(&out, context: PassContext(constants: [:])), what)
            XCTAssertEqual(out, g, what)
        }
    }

    /// A flip along another axis is no part of the pattern: the coupling fuses, the flip stays.
    func testFlipAlongFeaturesStaysSeparate() throws {
        let b = GraphBuilder(name: "c", constants: [:])
        let x = b.input("x", f32([B, .fixed(T), .fixed(D)]))
        let p = b.input("p", f32([B, .fixed(T), .fixed(D)]))
        let s = try b.apply(.pad(axis: 1, before: 1, after: 0), try b.apply(.slice(axis: 1, start: 0, end: T - 1), p))
        b.output(try b.apply(.flip(axis: 2), try b.apply(.sub, x, s, name: "z"), name: "zf"))
        let (fused, _) = try fuse(b.graph)
        XCTAssertEqual(fused.nodes, [
            Node(op: .affineCoupling(shift: 1, hasScale: false, flip: false), inputs: [0, 1], outputs: [2]),
            Node(op: .flip(axis: 2), inputs: [2], outputs: [3]),
        ], Printer.print(fused))
        try assertSameOutputs(b.graph, fused)
    }
}
