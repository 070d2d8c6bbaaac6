import CFlowKernels
import Dispatch
import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// `BatchSplitPlan` (a batch cut into single-threaded parts run side by side) against the
/// same graph run whole, and the thread pool under it.
final class BatchSplitPlanTests: XCTestCase {
    var rng = SplitMix64(0x5B17)

    /// A row-independent transformer-like graph: LayerNorm, qkv projection, causal attention,
    /// output projection with residual, GELU MLP; plus a per-row embedding gather and an input
    /// that is not batched (a scale).
    func makeGraph(tokens t: Int = 6) throws -> (ExecutionPlan, Model) {
        let (c, heads) = (32, 2)
        func w(_ name: String, _ shape: [Int]) -> WeightTensor {
            WeightTensor(name: name, dtype: .float32, shape: shape, bytes: TensorBytes(floats: rng.floats(elementCount(shape)!, -0.3...0.3)))
        }
        let model = Model(graphs: [], tensors: [w("ln.w", [c]), w("ln.b", [c]), w("qkv", [3 * c, c]), w("qkv.b", [3 * c]), w("out", [c, c]),
                                                w("fc1", [4 * c, c]), w("fc2", [c, 4 * c]), w("emb", [5, c])], metadata: [:])
        let b = GraphBuilder(name: "split", constants: model.constantTypes)
        let x = b.input("x", TensorType(.float32, [.batch, .fixed(t), .fixed(c)]))
        let y = b.input("y", TensorType(.int64, [.batch]))
        let s = b.input("s", TensorType(.float32, [.fixed(1)]))
        let e = try b.apply(.reshape(shape: [.batch, .fixed(1), .fixed(c)]), try b.apply(.gather, try b.constant("emb"), y))
        let h = try b.apply(.add, try b.apply(.mul, x, s), e)
        let n = try b.apply(.layerNorm(eps: 1e-5), h, try b.constant("ln.w"), try b.constant("ln.b"))
        let qkv = try b.apply(.linear, n, try b.constant("qkv"), try b.constant("qkv.b"))
        let a = try b.apply(.attention(heads: heads, scale: 0.25, mask: .causal, offsets: [0, c, 2 * c], rowScale: false), qkv, qkv, qkv)
        let h2 = try b.apply(.add, h, try b.apply(.linear, a, try b.constant("out")))
        let m = try b.apply(.linear, try b.apply(.gelu, try b.apply(.linear, h2, try b.constant("fc1"))), try b.constant("fc2"))
        b.output(try b.apply(.add, h2, m, name: "z"))
        b.output(try b.apply(.reduceMean(axes: [1, 2], keepDims: false), m, name: "per_row"))
        return (try Compiler.compile(b.graph, constants: model.constantTypes), model)
    }

    func testSplitEqualsWholeBitForBit() throws {
        let (plan, model) = try makeGraph()
        for rows in [1, 2, 5, 8] {
            let inputs: [String: Tensor] = [
                "x": Tensor(shape: [rows, 6, 32], floats: rng.floats(rows * 6 * 32, -1...1)),
                "y": Tensor(shape: [rows], int64s: (0..<rows).map { Int64($0 % 5) }),
                "s": Tensor(shape: [1], floats: [0.7]),
            ]
            let whole = try Executor(plan: plan, model: model, threads: 1).run(inputs)
            for threads in [2, 3] {
                let e = try Executor(plan: plan, model: model, threads: threads)
                for parts in [1, 2, 3, 9] {
                    let split = try e.bindSplit(["B": rows], parts: parts)
                    XCTAssertEqual(split.parts.count, min(parts, rows))
                    XCTAssertEqual(split.rows.map(\.count).reduce(0, +), rows)
                    let out = try split.run(inputs)
                    for name in ["z", "per_row"] {
                        XCTAssertEqual(out[name]?.shape, whole[name]?.shape, "\(name): rows \(rows) parts \(parts)")
                        XCTAssertEqual(out[name]?.floats.map(\.bitPattern), whole[name]?.floats.map(\.bitPattern),
                                       "\(name): rows \(rows), \(threads) threads, \(parts) parts")
                    }
                    // Rows addressed through the split land in the right part.
                    for r in 0..<rows {
                        let p = try XCTUnwrap(split.row("z", r)).assumingMemoryBound(to: Float.self)
                        XCTAssertEqual(p[5], whole["z"]!.floats[r * 6 * 32 + 5])
                    }
                    XCTAssertEqual(split.buffers("s").count, split.parts.count)
                }
            }
        }
    }

    /// Per-op threads, including the row-affinity split of a single sequence (LayerNorm, linear
    /// layers and attention by query rows), give the bits of one thread.
    func testPerOpThreadsGiveTheBitsOfOne() throws {
        let (plan, model) = try makeGraph(tokens: 40)
        for rows in [1, 2, 3] {
            let inputs: [String: Tensor] = [
                "x": Tensor(shape: [rows, 40, 32], floats: rng.floats(rows * 40 * 32, -1...1)),
                "y": Tensor(shape: [rows], int64s: (0..<rows).map { Int64($0 % 5) }),
                "s": Tensor(shape: [1], floats: [1.3]),
            ]
            let one = try Executor(plan: plan, model: model, threads: 1).run(inputs)
            for threads in [2, 3, 4] {
                let out = try Executor(plan: plan, model: model, threads: threads).run(inputs)
                for name in ["z", "per_row"] {
                    XCTAssertEqual(out[name]?.floats.map(\.bitPattern), one[name]?.floats.map(\.bitPattern), "\(name): rows \(rows), \(threads) threads")
                }
            }
        }
    }

    func testSplitRefusesBadInputs() throws {
        let (plan, model) = try makeGraph()
        let split = try Executor(plan: plan, model: model, threads: 2).bindSplit(["B": 4])
        let good: [String: Tensor] = ["x": Tensor(shape: [4, 6, 32], floats: [Float](repeating: 0, count: 4 * 6 * 32)),
                                      "y": Tensor(shape: [4], int64s: [0, 1, 2, 3]), "s": Tensor(shape: [1], floats: [1])]
        XCTAssertNoThrow(try split.run(good))
        var wrongRows = good
        wrongRows["x"] = Tensor(shape: [3, 6, 32], floats: [Float](repeating: 0, count: 3 * 6 * 32))
        XCTAssertThrowsError(try split.run(wrongRows))
        var missing = good
        missing["y"] = nil
        XCTAssertThrowsError(try split.run(missing))
        var extra = good
        extra["nope"] = Tensor(shape: [1], floats: [0])
        XCTAssertThrowsError(try split.run(extra))
        var badLabel = good
        badLabel["y"] = Tensor(shape: [4], int64s: [0, 1, 2, 99])
        XCTAssertThrowsError(try split.run(badLabel), "a gather error in one part reaches the caller")
    }

    /// A graph that centers each row on the batch mean mixes rows: the split is refused with
    /// the rule it breaks, and the graph still runs whole.
    func testSplitRefusesAGraphThatMixesRows() throws {
        let b = GraphBuilder(name: "centered", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, .fixed(3)]))
        b.output(try b.apply(.sub, x, try b.apply(.reduceMean(axes: [0], keepDims: true), x, name: "batch_mean"), name: "y"))
        let e = try Executor(plan: try Compiler.compile(b.graph, constants: [:]), model: Model(graphs: [], tensors: [], metadata: [:]), threads: 2)
        for attempt in [{ _ = try e.bindSplit(["B": 4]) }, { _ = try e.splitArenaBytes(["B": 4]) }] {
            XCTAssertThrowsError(try attempt()) { error in
                guard let error = error as? CompilerError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.batchRowRule, .reducesRows)
                XCTAssertTrue(error.description.contains("reduce_mean -> %batch_mean"), error.description)
            }
        }
        let whole = try e.run(["x": Tensor(shape: [2, 3], floats: [1, 2, 3, 5, 6, 7])])
        XCTAssertEqual(whole["y"]?.floats, [-2, -2, -2, 2, 2, 2])
    }

    /// Every item of every run is done exactly once, whatever the thread count and item count.
    func testPoolRunsEveryItemOnce() throws {
        final class Counts {
            var hits: [Int32]
            init(_ n: Int) { hits = [Int32](repeating: 0, count: n) }
        }
        for threads in [1, 2, 3, 5] {
            let pool = try XCTUnwrap(fk_pool_create(Int32(threads), 0.0002))
            defer { fk_pool_destroy(pool) }
            XCTAssertEqual(fk_pool_threads(pool), Int32(threads))
            for count in [0, 1, 2, 3, 7, 64, 1000] {
                for _ in 0..<20 {
                    let counts = Counts(count)
                    counts.hits.withUnsafeMutableBufferPointer { buf in
                        fk_pool_run(pool, { ctx, i, _ in
                            ctx!.assumingMemoryBound(to: Int32.self)[i] += 1
                        }, UnsafeMutableRawPointer(buf.baseAddress), count)
                    }
                    XCTAssertEqual(counts.hits, [Int32](repeating: 1, count: count), "\(threads) threads, \(count) items")
                }
            }
            // After the workers have gone to sleep, a run wakes them.
            usleep(2000)
            var hits = [Int32](repeating: 0, count: 16)
            hits.withUnsafeMutableBufferPointer { buf in
                fk_pool_run(pool, { ctx, i, _ in ctx!.assumingMemoryBound(to: Int32.self)[i] += 1 }, UnsafeMutableRawPointer(buf.baseAddress), 16)
            }
            XCTAssertEqual(hits, [Int32](repeating: 1, count: 16))
        }
    }

    /// Callers on different threads take turns on one pool; each still gets every item once.
    func testPoolCallersTakeTurns() throws {
        let pool = try XCTUnwrap(fk_pool_create(2, 0.0002))
        defer { fk_pool_destroy(pool) }
        nonisolated(unsafe) let shared = pool
        nonisolated(unsafe) let failures = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        failures.initialize(repeating: 0, count: 4)
        defer { failures.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for round in 0..<500 {
                let count = 1 + (round * 7 + caller) % 40
                var hits = [Int32](repeating: 0, count: count)
                hits.withUnsafeMutableBufferPointer { buf in
                    // Each item takes a while (200 separate increments), so runs overlap.
                    fk_pool_run(shared, { ctx, i, _ in
                        let p = ctx!.assumingMemoryBound(to: Int32.self) + i
                        for _ in 0..<200 { p.pointee = p.pointee &+ 1 }
                    }, UnsafeMutableRawPointer(buf.baseAddress), count)
                }
                if hits != [Int32](repeating: 200, count: count) { failures[caller] += 1 }
            }
        }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: failures, count: 4)), [0, 0, 0, 0])
    }
}
