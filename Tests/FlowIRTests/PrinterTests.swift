import FlowIR
import XCTest

/// The text form of graphs (`tarflow inspect`): exact output and determinism.
final class PrinterTests: XCTestCase {
    /// One decode-like step: a linear map, a state update, attention over the state, a few
    /// layout ops. Unnamed values get the builder's names t1, t2, ...
    static func stepGraph() throws -> Graph {
        let b = GraphBuilder(name: "step", constants: ["w": TensorType(.float32, [4, 4])])
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        let cache = b.input("cache", TensorType(.float32, [.batch, 3, 4]))
        let w = try b.constant("w")
        let h = try b.apply(.linear, x, w, name: "h")
        let t2 = try b.apply(.scale(0.5), h)
        let t3 = try b.apply(.reshape(shape: [.batch, 1, 4]), t2)
        let next = try b.apply(.writeSlice(axis: 1), cache, t3, pos, name: "cache.next")
        let t4 = try b.apply(.matmul(transposeA: false, transposeB: true), t3, next)
        let t5 = try b.apply(.maskAfter(value: -.infinity), t4, pos)
        let t6 = try b.apply(.softmax(axis: 2), t5)
        let t7 = try b.apply(.reduceMean(axes: [1, 2], keepDims: true), t6)
        let t8 = try b.apply(.full(value: 1e-5, shape: [.batch, 1, 1]))
        let y = try b.apply(.add, t7, t8, name: "y")
        let t9 = try b.apply(.slice(axis: 1, start: 0, end: 2), next)
        let t10 = try b.apply(.pad(axis: 2, before: 1, after: 0), t9)
        let z = try b.apply(.transpose(perm: [0, 2, 1]), t10, name: "z")
        let sq = try b.apply(.matmul(transposeA: true, transposeB: true), w, w, name: "sq")
        let n = try b.apply(.neg, try b.apply(.matmul(transposeA: false, transposeB: false), sq, w), name: "n")
        for v in [y, z, n, next] { b.output(v) }
        var g = b.graph
        g.state = [StateBinding(input: cache, output: next)]
        try Verifier.verify(g, constants: ["w": TensorType(.float32, [4, 4])])
        return g
    }

    func testExactText() throws {
        let expected = """
            graph step(%x: f32[B,4], %pos: i64[1], %cache: f32[B,3,4]) -> (%y, %z, %n, %cache.next) {
              %t1 = constant["w"]() : f32[4,4]
              %h = linear(%x, %t1) : f32[B,4]
              %t2 = scale[value=0.5](%h) : f32[B,4]
              %t3 = reshape[shape=B,1,4](%t2) : f32[B,1,4]
              %cache.next = write_slice[axis=1](%cache, %t3, %pos) : f32[B,3,4]
              %t4 = matmul[transpose_b](%t3, %cache.next) : f32[B,1,3]
              %t5 = mask_after[value=-inf](%t4, %pos) : f32[B,1,3]
              %t6 = softmax[axis=2](%t5) : f32[B,1,3]
              %t7 = reduce_mean[axes=1,2, keep_dims](%t6) : f32[B,1,1]
              %t8 = full[value=1e-05, shape=B,1,1]() : f32[B,1,1]
              %y = add(%t7, %t8) : f32[B,1,1]
              %t9 = slice[axis=1, 0:2](%cache.next) : f32[B,2,4]
              %t10 = pad[axis=2, before=1, after=0](%t9) : f32[B,2,5]
              %z = transpose[perm=0,2,1](%t10) : f32[B,5,2]
              %sq = matmul[transpose_a, transpose_b](%t1, %t1) : f32[4,4]
              %t11 = matmul(%sq, %t1) : f32[4,4]
              %n = neg(%t11) : f32[4,4]
              state %cache <- %cache.next
            }

            """
        XCTAssertEqual(Printer.print(try Self.stepGraph()), expected)
    }

    func testGraphWithoutInputsOrState() {
        var g = Graph(name: "empty")
        XCTAssertEqual(Printer.print(g), "graph empty() -> () {\n}\n")
        g.values = [Value(name: "c", type: TensorType(.int64, []))]
        g.nodes = [Node(op: .constant(tensor: "k"), inputs: [], outputs: [0])]
        g.outputs = [0]
        XCTAssertEqual(Printer.print(g), "graph empty() -> (%c) {\n  %c = constant[\"k\"]() : i64[]\n}\n")
    }

    /// The attribute text of every op.
    func testAttributesOfEveryOp() {
        let cases: [(Op, String)] = [
            (.constant(tensor: "blocks.0.proj_in.weight"), "\"blocks.0.proj_in.weight\""),
            (.full(value: 0, shape: []), "value=0.0, shape="),
            (.full(value: -2.5, shape: [.batch, 3]), "value=-2.5, shape=B,3"),
            (.add, ""), (.sub, ""), (.mul, ""), (.div, ""),
            (.neg, ""), (.exp, ""), (.gelu, ""), (.sqrt, ""), (.log, ""), (.erf, ""),
            (.scale(.infinity), "value=inf"), (.scale(-1), "value=-1.0"),
            (.matmul(transposeA: false, transposeB: false), ""),
            (.matmul(transposeA: true, transposeB: false), "transpose_a"),
            (.linear, ""),
            (.layerNorm(eps: 1e-6), "eps=1e-06"),
            (.softmax(axis: 3), "axis=3"),
            (.causalMask(value: -.infinity), "value=-inf"),
            (.reshape(shape: []), "shape="),
            (.transpose(perm: [1, 0]), "perm=1,0"),
            (.slice(axis: 0, start: 3, end: 3), "axis=0, 3:3"),
            (.concat(axis: 2), "axis=2"),
            (.flip(axis: 1), "axis=1"),
            (.pad(axis: 3, before: 0, after: 7), "axis=3, before=0, after=7"),
            (.gather, ""),
            (.writeSlice(axis: 2), "axis=2"),
            (.maskAfter(value: 0), "value=0.0"),
            (.reduceSum(axes: [0], keepDims: false), "axes=0"),
            (.reduceSum(axes: [0, 3], keepDims: true), "axes=0,3, keep_dims"),
            (.reduceMean(axes: [2], keepDims: false), "axes=2"),
        ]
        for (op, text) in cases { XCTAssertEqual(Printer.attributes(op), text, op.name) }
    }

    func testDeterministic() throws {
        let a = Printer.print(try Self.stepGraph())
        XCTAssertEqual(Printer.print(try Self.stepGraph()), a)
        // A round trip through the file format prints the same text.
        let g = try Self.stepGraph()
        let m = Model(graphs: [g], tensors: [WeightTensor(name: "w", dtype: .float32, shape: [4, 4], bytes: TensorBytes(floats: [Float](repeating: 1, count: 16)))],
                      metadata: [:])
        let back = try ModelFile.decode(try ModelFile.encode(m))
        XCTAssertEqual(back.graphs.map(Printer.print), [a])
    }
}
