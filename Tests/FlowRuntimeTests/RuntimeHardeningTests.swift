import COpenBLAS
import XCTest
import FlowCompiler
import FlowIR
@testable import FlowRuntime

/// Run-time positions come from callers (and, through graphs, from files): extreme values give
/// errors or documented results, never an arithmetic trap.
final class RuntimeHardeningTests: XCTestCase {
    func testExtremePositionsDoNotOverflow() throws {
        let b = GraphBuilder(name: "g", constants: [:])
        let s = b.input("s", TensorType(.float32, [1, 4, 2]))
        let u = b.input("u", TensorType(.float32, [1, 1, 2]))
        let p = b.input("p", TensorType(.int64, [1]))
        let x = b.input("x", TensorType(.float32, [1, 4]))
        b.output(try b.apply(.writeSlice(axis: 1), s, u, p, name: "w"))
        b.output(try b.apply(.maskAfter(value: -1), x, p, name: "m"))
        let plan = try Compiler.compile(b.graph, constants: [:])
        let e = try Executor(plan: plan, model: Model(graphs: [], tensors: [], metadata: [:]))
        func run(_ pos: Int64) throws -> [String: Tensor] {
            try e.run(["s": Tensor(shape: [1, 4, 2], floats: [Float](repeating: 0, count: 8)), "u": Tensor(shape: [1, 1, 2], floats: [1, 2]),
                       "p": Tensor(shape: [1], int64s: [pos]), "x": Tensor(shape: [1, 4], floats: [1, 2, 3, 4])])
        }
        XCTAssertEqual(try run(1)["w"]?.floats, [0, 0, 1, 2, 0, 0, 0, 0])
        XCTAssertEqual(try run(1)["m"]?.floats, [1, 2, -1, -1])
        for pos in [Int64.max, Int64.max - 1, Int64.min, -1, 4] {
            XCTAssertThrowsError(try run(pos), "write_slice at \(pos)")
        }
        // mask_after alone accepts any position: p >= N - 1 masks nothing, p < 0 everything.
        let mb = GraphBuilder(name: "m", constants: [:])
        let mx = mb.input("x", TensorType(.float32, [1, 4]))
        let mp = mb.input("p", TensorType(.int64, [1]))
        mb.output(try mb.apply(.maskAfter(value: -1), mx, mp, name: "m"))
        let me = try Executor(plan: try Compiler.compile(mb.graph, constants: [:]), model: Model(graphs: [], tensors: [], metadata: [:]))
        for (pos, want) in [(Int64.max, [Float]([1, 2, 3, 4])), (Int64.min, [-1, -1, -1, -1]), (2, [1, 2, 3, -1])] {
            XCTAssertEqual(try me.run(["x": Tensor(shape: [1, 4], floats: [1, 2, 3, 4]), "p": Tensor(shape: [1], int64s: [pos])])["m"]?.floats, want)
        }
    }

    func testThreadCountsBeyondInt32AreClamped() {
        Executor.setBLASThreads(Int.max)
        XCTAssertGreaterThanOrEqual(openblas_get_num_threads(), 1, "a count beyond Int32 reaches OpenBLAS clamped")
        Executor.setBLASThreads(0)
        XCTAssertEqual(openblas_get_num_threads(), 1, "counts below 1 become 1")
    }

    func testBatchesBeyondMemoryAreRefused() throws {
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, .fixed(1 << 20)]))
        b.output(try b.apply(.scale(2), x, name: "y"))
        let e = try Executor(plan: try Compiler.compile(b.graph, constants: [:]), model: Model(graphs: [], tensors: [], metadata: [:]))
        XCTAssertThrowsError(try e.bind(["B": 1 << 40]))
        XCTAssertThrowsError(try e.bind(["B": Int.max]))
    }
}
