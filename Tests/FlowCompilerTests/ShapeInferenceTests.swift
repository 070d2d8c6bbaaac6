import FlowCompiler
import FlowIR
import XCTest

/// `ShapeInference`: re-derives declared types from the shape rules and the tensor table,
/// reports whether it changed any, and computes concrete shapes for a binding.
final class ShapeInferenceTests: XCTestCase {
    static let constants: [String: TensorType] = ["w": TensorType(.float32, [4])]
    let context = PassContext(constants: ShapeInferenceTests.constants)

    /// x: f32[B,4] → t = neg(x) → u = add(t, w) → v = reduce_sum[axes=1](u): f32[B].
    func chain() throws -> Graph {
        let b = GraphBuilder(name: "chain", constants: Self.constants)
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        let t = try b.apply(.neg, x, name: "t")
        let u = try b.apply(.add, t, try b.constant("w"), name: "u")
        b.output(try b.apply(.reduceSum(axes: [1], keepDims: false), u, name: "v"))
        return b.graph
    }

    func testVerifiedGraphIsUnchanged() throws {
        var g = try chain()
        XCTAssertFalse(try ShapeInference().run(&g, context: context))
        XCTAssertEqual(g, try chain())
    }

    func testFixesAWrongDeclaredType() throws {
        var g = try chain()
        let v = try XCTUnwrap(g.value(named: "v"))
        g.values[v].type = TensorType(.float32, [.batch, 1])
        XCTAssertThrowsError(try Verifier.verify(g, constants: Self.constants))
        XCTAssertTrue(try ShapeInference().run(&g, context: context))
        XCTAssertEqual(g.values[v].type, TensorType(.float32, [.batch]))
        XCTAssertEqual(g, try chain())
        XCTAssertFalse(try ShapeInference().run(&g, context: context))
    }

    /// A wrong type early in the chain is fixed, and the fix flows to the nodes after it.
    func testFixesPropagateDownstream() throws {
        var g = try chain()
        let wrong = TensorType(.float32, [7, 7])
        for name in ["t", "u", "v"] { g.values[try XCTUnwrap(g.value(named: name))].type = wrong }
        XCTAssertTrue(try ShapeInference().run(&g, context: context))
        XCTAssertEqual(g, try chain())
    }

    func testConstantsTakeTheTableType() throws {
        var g = try chain()
        let c = try XCTUnwrap(g.nodes.first { $0.op == .constant(tensor: "w") }?.outputs.first)
        g.values[c].type = TensorType(.float32, [1])
        XCTAssertTrue(try ShapeInference().run(&g, context: context))
        XCTAssertEqual(g.values[c].type, TensorType(.float32, [4]))

        XCTAssertThrowsError(try ShapeInference().run(&g, context: PassContext(constants: [:]))) {
            XCTAssertTrue("\($0)".contains("constant 'w' is not in the tensor table"), "\($0)")
        }
    }

    func testShapeRuleFailureIsACompilerError() throws {
        var g = try chain()
        let n = try XCTUnwrap(g.nodes.firstIndex { $0.op == .reduceSum(axes: [1], keepDims: false) })
        g.nodes[n].op = .reduceSum(axes: [2], keepDims: false)
        XCTAssertThrowsError(try ShapeInference().run(&g, context: context)) {
            XCTAssertTrue($0 is CompilerError)
            XCTAssertTrue("\($0)".contains("shape inference failed at reduce_sum"), "\($0)")
            XCTAssertTrue("\($0)".contains("rule W5"), "\($0)")
        }
    }

    func testConcreteShapes() throws {
        let g = try chain()
        let shapes = try ShapeInference.concreteShapes(g, bindings: ["B": 3])
        XCTAssertEqual(shapes, [[3, 4], [3, 4], [4], [3, 4], [3]])
        XCTAssertEqual(try ShapeInference.concreteShapes(g, bindings: ["B": 0, "C": 9])[0], [0, 4])
        XCTAssertThrowsError(try ShapeInference.concreteShapes(g, bindings: ["C": 3])) {
            XCTAssertTrue("\($0)".contains("value 'x' has an unbound symbol in f32[B,4]"), "\($0)")
        }
    }

    func testName() {
        XCTAssertEqual(ShapeInference().name, "shape-inference")
    }
}
