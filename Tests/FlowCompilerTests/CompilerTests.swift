import FlowCompiler
import FlowIR
import XCTest

/// `Compiler.compile` (load-time/run-time split, liveness, pass log) and `PassPipeline`
/// (verification between passes names the pass that broke the graph).
final class CompilerTests: XCTestCase {
    static let constants: [String: TensorType] = [
        "pos": TensorType(.float32, [3, 4]),
        "table": TensorType(.float32, [5, 4]),
    ]

    struct Built {
        var graph: Graph
        var ids: [String: ValueID]
    }

    /// Constant-only work (a flipped table, the mean of a table, a fixed fill and their sum)
    /// mixed with work that needs the input x or the batch size B.
    func mixedGraph(withDeadCode: Bool = false) throws -> Built {
        let b = GraphBuilder(name: "mixed", constants: Self.constants)
        var ids: [String: ValueID] = [:]
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        ids["pos"] = try b.constant("pos")
        ids["flip"] = try b.apply(.flip(axis: 0), ids["pos"]!, name: "flip")
        ids["table"] = try b.constant("table")
        ids["mean"] = try b.apply(.reduceMean(axes: [0], keepDims: false), ids["table"]!, name: "mean")
        ids["ones"] = try b.apply(.full(value: 1, shape: [4]), name: "ones")
        ids["shifted"] = try b.apply(.add, ids["mean"]!, ids["ones"]!, name: "shifted")
        ids["fillB"] = try b.apply(.full(value: 2, shape: [.batch, 4]), name: "fillB")
        if withDeadCode { _ = try b.apply(.exp, x, name: "dead") }
        ids["a"] = try b.apply(.add, x, ids["shifted"]!, name: "a")
        ids["row"] = try b.apply(.slice(axis: 0, start: 0, end: 1), ids["flip"]!, name: "row")
        ids["b"] = try b.apply(.mul, ids["a"]!, ids["row"]!, name: "b")
        ids["y"] = try b.apply(.add, ids["b"]!, ids["fillB"]!, name: "y")
        b.output(ids["y"]!)
        b.output(ids["flip"]!)
        ids["x"] = x
        return Built(graph: b.graph, ids: ids)
    }

    func testSplitsLoadTimeStepsFromRunSteps() throws {
        let m = try mixedGraph()
        let plan = try Compiler.compile(m.graph, constants: Self.constants)
        XCTAssertEqual(plan.graph, m.graph, "nothing to optimize")
        XCTAssertEqual(plan.passLog, [])
        let name = { (s: ExecutionPlan.Step) in plan.graph.values[s.outputs[0]].name }
        XCTAssertEqual(plan.loadSteps.map(name), ["t1", "flip", "t2", "mean", "ones", "shifted", "row"])
        XCTAssertEqual(plan.loadSteps.map(\.op), [
            .constant(tensor: "pos"), .flip(axis: 0), .constant(tensor: "table"), .reduceMean(axes: [0], keepDims: false),
            .full(value: 1, shape: [4]), .add, .slice(axis: 0, start: 0, end: 1),
        ])
        // A fill over the symbol B can only run once B is bound.
        XCTAssertEqual(plan.steps.map(name), ["fillB", "a", "b", "y"])
        XCTAssertEqual(plan.steps.map(\.op), [.full(value: 2, shape: [.batch, 4]), .add, .mul, .add])
        XCTAssertEqual(plan.steps[1].inputs, [m.ids["x"]!, m.ids["shifted"]!])
        XCTAssertEqual(plan.inputNames, ["x"])
        XCTAssertEqual(plan.outputNames, ["y", "flip"])
    }

    /// `lastUse[v]` is the last run step reading v; -1 for values only load steps or outputs read.
    func testLastUse() throws {
        let m = try mixedGraph()
        let plan = try Compiler.compile(m.graph, constants: Self.constants)
        var expected = [Int](repeating: -1, count: plan.graph.values.count)
        expected[m.ids["x"]!] = 1
        expected[m.ids["shifted"]!] = 1
        expected[m.ids["a"]!] = 2
        expected[m.ids["row"]!] = 2
        expected[m.ids["b"]!] = 3
        expected[m.ids["fillB"]!] = 3
        XCTAssertEqual(plan.lastUse, expected)
        XCTAssertEqual(plan.lastUse[m.ids["y"]!], -1, "outputs are not run-step reads")
        XCTAssertEqual(plan.lastUse[m.ids["flip"]!], -1)
    }

    func testDeadCodeIsRemovedAndLogged() throws {
        let m = try mixedGraph(withDeadCode: true)
        let plan = try Compiler.compile(m.graph, constants: Self.constants)
        XCTAssertEqual(plan.passLog, ["dead-code-elimination"])
        XCTAssertNil(plan.graph.value(named: "dead"))
        XCTAssertEqual(plan.graph, try mixedGraph().graph)
        XCTAssertEqual(plan.steps.count, 4)
        XCTAssertEqual(plan.graph.values.count, m.graph.values.count - 1)
    }

    /// A step reading an input is a run step even if its other operand is a constant; a step
    /// reading only a load-time value is load-time even if it comes after run steps.
    func testDependenceOnInputsIsTransitive() throws {
        let b = GraphBuilder(name: "t", constants: Self.constants)
        let x = b.input("x", TensorType(.float32, [3, 4]))
        let p = try b.constant("pos")
        let s = try b.apply(.sub, x, p, name: "s")
        let e = try b.apply(.exp, s, name: "e")
        let late = try b.apply(.neg, p, name: "late")
        b.output(try b.apply(.add, e, late, name: "y"))
        let plan = try Compiler.compile(b.graph, constants: Self.constants)
        XCTAssertEqual(plan.loadSteps.map { plan.graph.values[$0.outputs[0]].name }, ["t1", "late"])
        XCTAssertEqual(plan.steps.map { plan.graph.values[$0.outputs[0]].name }, ["s", "e", "y"])
    }

    func testInvalidInputGraphIsRefused() throws {
        var g = try mixedGraph().graph
        g.values[g.value(named: "y")!].type = TensorType(.float32, [.batch, 5])
        XCTAssertThrowsError(try Compiler.compile(g, constants: Self.constants)) {
            XCTAssertTrue($0 is CompilerError)
            XCTAssertTrue("\($0)".hasPrefix("input graph is invalid: "), "\($0)")
            XCTAssertTrue("\($0)".contains("[rule W5"), "\($0)")
        }
        // The tensor table is checked too.
        XCTAssertThrowsError(try Compiler.compile(try mixedGraph().graph, constants: ["pos": TensorType(.float32, [3, 4])])) {
            XCTAssertTrue("\($0)".contains("constant 'table' is not in the tensor table"), "\($0)")
        }
    }

    // MARK: - Pass pipeline

    /// Changes a declared type so the graph no longer verifies, and says so.
    struct CorruptingPass: CompilerPass {
        var name: String { "corrupt-types" }
        func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
            graph.values[graph.values.count - 1].type = TensorType(.float32, [99])
            return true
        }
    }

    /// Breaks the graph but reports no change.
    struct SilentCorruptingPass: CompilerPass {
        var name: String { "silent" }
        func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
            graph.values[0].name = ""
            return false
        }
    }

    /// A valid change: renames the outputs.
    struct RenamingPass: CompilerPass {
        var name: String { "rename" }
        func run(_ graph: inout Graph, context: PassContext) throws -> Bool {
            for o in graph.outputs { graph.values[o].name += "_out" }
            return true
        }
    }

    struct NoOpPass: CompilerPass {
        var name: String { "noop" }
        func run(_ graph: inout Graph, context: PassContext) throws -> Bool { false }
    }

    struct MustNotRun: Error {}
    struct ThrowingPass: CompilerPass {
        var name: String { "throws" }
        func run(_ graph: inout Graph, context: PassContext) throws -> Bool { throw MustNotRun() }
    }

    var context: PassContext { PassContext(constants: Self.constants) }

    func testPipelineNamesTheBrokenPass() throws {
        var g = try mixedGraph().graph
        let pipeline = PassPipeline([RenamingPass(), CorruptingPass(), ThrowingPass()], verifyEachPass: true)
        XCTAssertThrowsError(try pipeline.run(&g, context: context)) {
            XCTAssertTrue($0 is CompilerError, "stops at the broken pass, before the next one runs: \($0)")
            XCTAssertTrue("\($0)".hasPrefix("pass 'corrupt-types' produced an invalid graph: "), "\($0)")
            XCTAssertTrue("\($0)".contains("[rule W5"), "\($0)")
        }
    }

    func testPipelineWithoutVerification() throws {
        var g = try mixedGraph().graph
        let log = try PassPipeline([CorruptingPass(), NoOpPass()], verifyEachPass: false).run(&g, context: context)
        XCTAssertEqual(log, ["corrupt-types"])
        XCTAssertEqual(g.values.last?.type, TensorType(.float32, [99]))
    }

    /// Passes that report no change are not re-verified; the log lists only passes that changed.
    func testPipelineLogsChangingPasses() throws {
        var g = try mixedGraph().graph
        let log = try PassPipeline([NoOpPass(), RenamingPass(), SilentCorruptingPass(), NoOpPass()], verifyEachPass: true)
            .run(&g, context: context)
        XCTAssertEqual(log, ["rename"])
        XCTAssertEqual(g.outputs.map { g.values[$0].name }, ["y_out", "flip_out"])
        XCTAssertEqual(g.values[0].name, "")
    }

    func testPassErrorsPropagate() throws {
        var g = try mixedGraph().graph
        XCTAssertThrowsError(try PassPipeline([ThrowingPass()], verifyEachPass: true).run(&g, context: context)) {
            XCTAssertTrue($0 is MustNotRun)
        }
    }

    func testDefaultPasses() {
        XCTAssertEqual(Compiler.defaultPasses(fusion: false).map(\.name), ["dead-code-elimination", "shape-inference"])
        XCTAssertEqual(Compiler.defaultPasses().map(\.name), ["dead-code-elimination", "shape-inference", "fuse-attention",
                                                               "fuse-affine-coupling", "fuse-linear-epilogue", "dead-code-elimination"])
    }
}
