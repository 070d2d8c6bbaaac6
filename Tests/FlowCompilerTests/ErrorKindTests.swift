import XCTest
import FlowIR
@testable import FlowCompiler
import FlowRuntime

/// Compiler and runtime errors say what kind of failure they are (and the graph rule broken),
/// so callers branch on the case, not on the text; the text is unchanged.
final class ErrorKindTests: XCTestCase {
    static let constants: [String: TensorType] = ["table": TensorType(.float32, [4, 3])]

    func graph() throws -> Graph {
        let b = GraphBuilder(name: "v", constants: Self.constants)
        let x = b.input("x", TensorType(.float32, [.batch, 3]))
        let ids = b.input("ids", TensorType(.int64, [.batch]))
        b.output(try b.apply(.add, x, try b.apply(.gather, try b.constant("table"), ids), name: "y"))
        return b.graph
    }

    func testCompilerErrorsCarryTheirKindAndRule() throws {
        var g = try graph()
        g.values[g.value(named: "y")!].type = TensorType(.float32, [.batch, 5])
        XCTAssertThrowsError(try Compiler.compile(g, constants: Self.constants)) {
            let e = $0 as? CompilerError
            XCTAssertEqual(e?.kind, .invalidInput)
            XCTAssertEqual(e?.rule, "W5")
            XCTAssertTrue("\($0)".hasPrefix("input graph is invalid: "), "\($0)")
        }
        let s = try graph()
        XCTAssertThrowsError(try Differentiate.gradientGraph(s, of: "nope", wrt: ["x"], constants: Self.constants)) {
            XCTAssertEqual(($0 as? CompilerError)?.kind, .invalidRequest)
            XCTAssertNil(($0 as? CompilerError)?.rule)
            XCTAssertEqual("\($0)", "differentiate: 'nope' is not an output of graph 'v'")
        }
        XCTAssertThrowsError(try ShapeInference.concreteShapes(s, bindings: [:])) {
            XCTAssertEqual(($0 as? CompilerError)?.kind, .unboundSymbol)
        }
    }

    func testRuntimeErrorsCarryTheirKind() throws {
        let table = WeightTensor(name: "table", dtype: .float32, shape: [4, 3], bytes: TensorBytes(floats: [Float](repeating: 1, count: 12)))
        let model = Model(graphs: [], tensors: [table], metadata: [:])
        let ex = try Executor(plan: try Compiler.compile(try graph(), constants: Self.constants), model: model)
        let x = Tensor(shape: [2, 3], floats: [Float](repeating: 0, count: 6))
        func kind(_ body: () throws -> Any) -> RuntimeError.Kind? {
            do { _ = try body() } catch { return (error as? RuntimeError)?.kind }
            return nil
        }
        XCTAssertNil(kind { try ex.run(["x": x, "ids": Tensor(shape: [2], int64s: [0, 3])]) })
        XCTAssertEqual(kind { try ex.run(["x": x]) }, .invalidInput)
        XCTAssertEqual(kind { try ex.run(["x": x, "ids": Tensor(shape: [2], int64s: [0, 4])]) }, .indexOutOfRange)
    }
}
