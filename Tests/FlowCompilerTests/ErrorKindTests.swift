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
            XCTAssertEqual(($0 as? CompilerError)?.failure, .differentiate(.notAnOutput("nope", graph: "v")))
        }
        XCTAssertThrowsError(try ShapeInference.concreteShapes(s, bindings: [:])) {
            XCTAssertEqual(($0 as? CompilerError)?.kind, .unboundSymbol)
            guard case let .unboundSymbol(value, type, bindings)? = ($0 as? CompilerError)?.failure else { return XCTFail("\($0)") }
            XCTAssertEqual(bindings, [:])
            XCTAssertEqual("\($0)", "value '\(value)' has an unbound symbol in \(type) (bound: [:])")
        }
    }

    /// A graph whose rows are mixed is a `CompilerError` of kind `rowsNotIndependent` citing
    /// the rule (R2); the message is the one `BatchRowError` printed.
    func testBatchRowViolationCarriesItsKindAndRule() throws {
        let b = GraphBuilder(name: "centered", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, .fixed(3)]))
        b.output(try b.apply(.sub, x, try b.apply(.reduceMean(axes: [0], keepDims: true), x, name: "batch_mean"), name: "y"))
        XCTAssertThrowsError(try BatchRows.check(b.graph, symbol: "B")) {
            let e = $0 as? CompilerError
            XCTAssertEqual(e?.kind, .rowsNotIndependent)
            XCTAssertEqual(e?.rule, "R2")
            XCTAssertEqual(e?.batchRowRule, .reducesRows)
            XCTAssertEqual("\($0)", "graph 'centered', node 0 (reduce_mean -> %batch_mean): reduces over the axis that holds the rows "
                + "(operands f32[B,3]) [rule R2, see Spec/IR.md §6]; the rows of B are not independent, so the batch cannot be split: "
                + "run the graph whole (Executor.run or bind)")
        }
        XCTAssertNil(CompilerError(.invalidInput(IRError(rule: "R2", "x"))).batchRowRule, "only a batch-row refusal has a batch-row rule")
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

        // The failure carries its names and numbers; the text is worded from them.
        func failure(_ body: () throws -> Any) -> RuntimeError? {
            do { _ = try body() } catch { return error as? RuntimeError }
            return nil
        }
        let gather = failure { try ex.run(["x": x, "ids": Tensor(shape: [2], int64s: [0, 4])]) }
        XCTAssertEqual(gather?.failure, .gatherIndex(4, rows: 4))
        XCTAssertEqual(gather?.description, "gather: index 4 out of range for a table of 4 rows")
        let missing = failure { try ex.run(["x": x]) }
        guard case let .missingInput(name, type)? = missing?.failure else { return XCTFail("\(String(describing: missing))") }
        XCTAssertEqual(name, "ids")
        XCTAssertEqual(missing?.description, "missing input 'ids' (\(type))")
        let extra = failure { try ex.run(["x": x, "ids": Tensor(shape: [2], int64s: [0, 1]), "z": x]) }
        guard case let .notAnInput(name, graph, inputs)? = extra?.failure else { return XCTFail("\(String(describing: extra))") }
        XCTAssertEqual(name, "z")
        XCTAssertEqual(extra?.description, "'z' is not an input of graph '\(graph)' (inputs: \(inputs!.joined(separator: ", ")))")
        XCTAssertEqual(RuntimeError(.splitArenaCount(parts: 2, arenas: 1)).kind, .invalidSplit)
    }
}
