import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// `FuseLinearEpilogue`: GELU and residual additions after a linear, and the exact graph
/// expected after the pass and dead-code elimination; the reference interpreter gives the same
/// outputs before and after; a linear whose result is needed elsewhere, or whose sum with the
/// residual broadcasts, stays unfused.
final class FuseLinearEpilogueTests: XCTestCase {

    static let constants: [String: TensorType] = [
        "w": TensorType(.float32, [6, 4]), "b": TensorType(.float32, [6]),
        "w2": TensorType(.float32, [4, 6]), "b2": TensorType(.float32, [4]),
    ]
    let B = Dim.batch

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    func fuse(_ g: Graph) throws -> (Graph, [String]) {
        var out = g
        let log = try PassPipeline([FuseLinearEpilogue(), DeadCodeElimination()], verifyEachPass: true)
            .run(&out, context: PassContext(constants: Self.constants))
        return (out, log)
    }

    /// The pass must leave the graph exactly as it was.
    func assertNoFusion(_ g: Graph, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var out = g
        XCTAssertFalse(try FuseLinearEpilogue().run(&out, context: PassContext(constants: Self.constants)), what, file: file, line: line)
        XCTAssertEqual(out, g, what, file: file, line: line)
        // The whole default pipeline accepts it (and verifies between passes).
        var o = Compiler.Options()
        o.verifyEachPass = true
        XCTAssertNoThrow(try Compiler.compile(g, constants: Self.constants, options: o), what, file: file, line: line)
    }

    /// A model with seeded weights for the constants, for the reference interpreter.
    lazy var model: Model = {
        var s: UInt64 = 11
        func next() -> Float {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(s >> 40) / Float(1 << 24) * 2 - 1
        }
        let tensors = Self.constants.sorted { $0.key < $1.key }.map { name, t in
            let shape = t.shape.map { $0.fixedSize! }
            return WeightTensor(name: name, dtype: .float32, shape: shape, bytes: TensorBytes(floats: (0..<elementCount(shape)!).map { _ in next() }))
        }
        return Model(graphs: [], tensors: tensors, metadata: [:])
    }()

    func assertSameOutputs(_ a: Graph, _ b: Graph, file: StaticString = #filePath, line: UInt = #line) throws {
        var inputs: [String: Tensor] = [:]
        for (i, v) in a.inputs.enumerated() {
            let shape = a.values[v].type.shape.map { $0.fixedSize ?? 2 }
            let n = elementCount(shape)!
            inputs[a.values[v].name] = Tensor(shape: shape, doubles: (0..<n).map { Double(($0 * 7 + i * 3) % 11) / 4 - 1.2 })
        }
        let ra = try ReferenceInterpreter.run(a, model: model, inputs: inputs)
        let rb = try ReferenceInterpreter.run(b, model: model, inputs: inputs)
        for (oa, ob) in zip(a.outputs, b.outputs) {
            let x = try XCTUnwrap(ra[oa], file: file, line: line), y = try XCTUnwrap(rb[ob], file: file, line: line)
            XCTAssertEqual(x.shape, y.shape, file: file, line: line)
            XCTAssertLessThan(maxAbsDifference(x.asDoubles(), y.asDoubles()), 1e-12, a.values[oa].name, file: file, line: line)
        }
    }

    // MARK: - Fusions

    func testGeluOfLinear() throws {
        for withBias in [true, false] {
            let b = GraphBuilder(name: "g", constants: Self.constants)
            let x = b.input("x", f32([B, 3, 4]))
            let w = try b.constant("w")
            let lin = withBias ? try b.apply(.linear, x, w, try b.constant("b"), name: "lin") : try b.apply(.linear, x, w, name: "lin")
            b.output(try b.apply(.gelu, lin, name: "y"))
            let (fused, log) = try fuse(b.graph)
            XCTAssertEqual(log, ["fuse-linear-epilogue", "dead-code-elimination"])
            let expected: Graph
            if withBias {
                expected = Graph(
                    name: "g",
                    values: [Value(name: "x", type: f32([B, 3, 4])), Value(name: "t1", type: f32([6, 4])), Value(name: "t2", type: f32([6])),
                             Value(name: "y", type: f32([B, 3, 6]))],
                    nodes: [
                        Node(op: .constant(tensor: "w"), inputs: [], outputs: [1]),
                        Node(op: .constant(tensor: "b"), inputs: [], outputs: [2]),
                        Node(op: .fusedLinear(activation: .gelu, hasBias: true, hasResidual: false), inputs: [0, 1, 2], outputs: [3]),
                    ],
                    inputs: [0], outputs: [3])
            } else {
                expected = Graph(
                    name: "g",
                    values: [Value(name: "x", type: f32([B, 3, 4])), Value(name: "t1", type: f32([6, 4])), Value(name: "y", type: f32([B, 3, 6]))],
                    nodes: [
                        Node(op: .constant(tensor: "w"), inputs: [], outputs: [1]),
                        Node(op: .fusedLinear(activation: .gelu, hasBias: false, hasResidual: false), inputs: [0, 1], outputs: [2]),
                    ],
                    inputs: [0], outputs: [2])
            }
            XCTAssertEqual(fused, expected, Printer.print(fused))
            try assertSameOutputs(b.graph, fused)
        }
    }

    /// add(r, linear) and add(linear, r), r of the linear's shape: the residual is the last input.
    func testResidualOnEitherSide() throws {
        for linearFirst in [false, true] {
            let b = GraphBuilder(name: "r", constants: Self.constants)
            let x = b.input("x", f32([B, 3, 4]))
            let r = b.input("r", f32([B, 3, 6]))
            let lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
            b.output(linearFirst ? try b.apply(.add, lin, r, name: "y") : try b.apply(.add, r, lin, name: "y"))
            let (fused, _) = try fuse(b.graph)
            let expected = Graph(
                name: "r",
                values: [Value(name: "x", type: f32([B, 3, 4])), Value(name: "r", type: f32([B, 3, 6])),
                         Value(name: "t1", type: f32([6, 4])), Value(name: "t2", type: f32([6])), Value(name: "y", type: f32([B, 3, 6]))],
                nodes: [
                    Node(op: .constant(tensor: "w"), inputs: [], outputs: [2]),
                    Node(op: .constant(tensor: "b"), inputs: [], outputs: [3]),
                    Node(op: .fusedLinear(activation: .none, hasBias: true, hasResidual: true), inputs: [0, 2, 3, 1], outputs: [4]),
                ],
                inputs: [0, 1], outputs: [4])
            XCTAssertEqual(fused, expected, "linear first: \(linearFirst)\n" + Printer.print(fused))
            try assertSameOutputs(b.graph, fused)
        }
    }

    /// add(r, gelu(linear)): GELU first, then the residual, in one op.
    func testGeluThenResidualOnOneLinear() throws {
        let b = GraphBuilder(name: "gr", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let r = b.input("r", f32([B, 3, 6]))
        let g = try b.apply(.gelu, try b.apply(.linear, x, try b.constant("w"), try b.constant("b")), name: "g")
        b.output(try b.apply(.add, r, g, name: "y"))
        let (fused, _) = try fuse(b.graph)
        XCTAssertEqual(fused.nodes.last, Node(op: .fusedLinear(activation: .gelu, hasBias: true, hasResidual: true), inputs: [0, 2, 3, 1], outputs: [4]))
        XCTAssertEqual(fused.nodes.count, 3)
        XCTAssertNil(fused.value(named: "g"))
        try assertSameOutputs(b.graph, fused)
    }

    /// The MLP of a transformer layer: h + linear2(gelu(linear1(h))) → two fused ops.
    func testMLPChainGivesTwoFusedOps() throws {
        let b = GraphBuilder(name: "mlp", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let m = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "m")
        let g = try b.apply(.gelu, m, name: "g")
        let m2 = try b.apply(.linear, g, try b.constant("w2"), try b.constant("b2"), name: "m2")
        b.output(try b.apply(.add, x, m2, name: "y"))
        let (fused, _) = try fuse(b.graph)
        let expected = Graph(
            name: "mlp",
            values: [
                Value(name: "x", type: f32([B, 3, 4])), Value(name: "t1", type: f32([6, 4])), Value(name: "t2", type: f32([6])),
                Value(name: "g", type: f32([B, 3, 6])), Value(name: "t3", type: f32([4, 6])), Value(name: "t4", type: f32([4])),
                Value(name: "y", type: f32([B, 3, 4])),
            ],
            nodes: [
                Node(op: .constant(tensor: "w"), inputs: [], outputs: [1]),
                Node(op: .constant(tensor: "b"), inputs: [], outputs: [2]),
                Node(op: .fusedLinear(activation: .gelu, hasBias: true, hasResidual: false), inputs: [0, 1, 2], outputs: [3]),
                Node(op: .constant(tensor: "w2"), inputs: [], outputs: [4]),
                Node(op: .constant(tensor: "b2"), inputs: [], outputs: [5]),
                Node(op: .fusedLinear(activation: .none, hasBias: true, hasResidual: true), inputs: [3, 4, 5, 0], outputs: [6]),
            ],
            inputs: [0], outputs: [6])
        XCTAssertEqual(fused, expected, Printer.print(fused))
        try assertSameOutputs(b.graph, fused)
    }

    /// Only the innermost epilogue of a chain folds where the math allows it: a second residual,
    /// a GELU after a residual, or a second GELU stay separate ops.
    func testOnlyOneEpilogueOfEachKind() throws {
        func build(_ body: (GraphBuilder, ValueID, ValueID) throws -> ValueID) throws -> Graph {
            let b = GraphBuilder(name: "c", constants: Self.constants)
            let x = b.input("x", f32([B, 3, 4]))
            let r = b.input("r", f32([B, 3, 6]))
            let lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
            b.output(try body(b, lin, r))
            return b.graph
        }
        let cases: [(String, Graph, [Op])] = [
            ("two residuals", try build { b, lin, r in try b.apply(.add, r, try b.apply(.add, r, lin)) },
             [.fusedLinear(activation: .none, hasBias: true, hasResidual: true), .add]),
            ("gelu after a residual", try build { b, lin, r in try b.apply(.gelu, try b.apply(.add, lin, r)) },
             [.fusedLinear(activation: .none, hasBias: true, hasResidual: true), .gelu]),
            ("two gelus", try build { b, lin, _ in try b.apply(.gelu, try b.apply(.gelu, lin)) },
             [.fusedLinear(activation: .gelu, hasBias: true, hasResidual: false), .gelu]),
        ]
        for (what, g, ops) in cases {
            let (fused, _) = try fuse(g)
            XCTAssertEqual(fused.nodes.filter { !$0.op.isConstantOp }.map(\.op), ops, what)
            try assertSameOutputs(g, fused)
        }
    }

    // MARK: - No fusion

    func testLinearWithAnotherReaderIsNotFused() throws {
        // The linear's result is also a graph output.
        var b = GraphBuilder(name: "o", constants: Self.constants)
        var x = b.input("x", f32([B, 3, 4]))
        var lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
        b.output(try b.apply(.gelu, lin, name: "y"))
        b.output(lin)
        try assertNoFusion(b.graph, "gelu: linear is an output")

        // ... or read by a second op.
        b = GraphBuilder(name: "o", constants: Self.constants)
        x = b.input("x", f32([B, 3, 4]))
        let r = b.input("r", f32([B, 3, 6]))
        lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
        b.output(try b.apply(.add, r, lin, name: "y"))
        b.output(try b.apply(.neg, lin, name: "n"))
        try assertNoFusion(b.graph, "residual: linear read twice")

        // ... or the same value on both sides of the add.
        b = GraphBuilder(name: "o", constants: Self.constants)
        x = b.input("x", f32([B, 3, 4]))
        lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
        b.output(try b.apply(.add, lin, lin, name: "y"))
        try assertNoFusion(b.graph, "add(lin, lin)")
    }

    /// A residual whose sum with the linear broadcasts (either way) is not an epilogue: the
    /// fused op computes exactly the linear's shape.
    func testBroadcastingResidualIsNotFused() throws {
        // The residual broadcasts up to the linear's shape: a bias-like [6] and a [B,1,6].
        for rShape: [Dim] in [[6], [B, 1, 6], [1, 3, 6]] {
            for linearFirst in [false, true] {
                let b = GraphBuilder(name: "bc", constants: Self.constants)
                let x = b.input("x", f32([B, 3, 4]))
                let r = b.input("r", f32(rShape))
                let lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
                b.output(linearFirst ? try b.apply(.add, lin, r, name: "y") : try b.apply(.add, r, lin, name: "y"))
                try assertNoFusion(b.graph, "residual \(rShape), linear first: \(linearFirst)")
            }
        }
        // The linear broadcasts up to the residual's shape: [B,1,6] + [B,3,6].
        for linearFirst in [false, true] {
            let b = GraphBuilder(name: "bc", constants: Self.constants)
            let x = b.input("x", f32([B, 1, 4]))
            let r = b.input("r", f32([B, 3, 6]))
            let lin = try b.apply(.linear, x, try b.constant("w"), try b.constant("b"), name: "lin")
            b.output(linearFirst ? try b.apply(.add, lin, r, name: "y") : try b.apply(.add, r, lin, name: "y"))
            try assertNoFusion(b.graph, "linear [B,1,6] + residual [B,3,6], linear first: \(linearFirst)")
        }
    }

    /// A matmul is not a linear.
    func testMatmulIsNotALinear() throws {
        let b = GraphBuilder(name: "m", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 6]))
        let w = try b.constant("w")
        b.output(try b.apply(.gelu, try b.apply(.matmul(transposeA: false, transposeB: false), x, w)))
        try assertNoFusion(b.graph, "gelu(matmul)")
    }
}

extension Op {
    fileprivate var isConstantOp: Bool { if case .constant = self { true } else { false } }
}
