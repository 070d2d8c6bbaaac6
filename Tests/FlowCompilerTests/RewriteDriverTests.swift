@testable import FlowCompiler
import FlowIR
import XCTest

/// `RewriteDriver`, the one sweep under the fusion passes: it visits each node once, builds
/// one index and updates use counts a fixed number of times per rewrite (so a pass is linear
/// in the graph). TarFlowTests' `GraphAnalysisTests` checks it rewrites TarFlow's graphs
/// exactly as rebuilding the index after every rewrite did.
final class RewriteDriverTests: XCTestCase {
    static let constants: [String: TensorType] = [
        "w1": TensorType(.float32, [8, 4]), "b1": TensorType(.float32, [8]),
        "w2": TensorType(.float32, [4, 8]), "b2": TensorType(.float32, [4]),
    ]

    /// `blocks` residual MLP blocks, h ← h + linear(gelu(linear(h, w1, b1)), w2, b2): two
    /// epilogue fusions per block, each rewrite reading the result of the previous block's.
    static func mlpChain(blocks: Int) throws -> Graph {
        let b = GraphBuilder(name: "chain", constants: constants)
        var h = b.input("x", TensorType(.float32, [.batch, 3, 4]))
        let (w1, b1, w2, b2) = (try b.constant("w1"), try b.constant("b1"), try b.constant("w2"), try b.constant("b2"))
        for _ in 0..<blocks {
            let u = try b.apply(.gelu, try b.apply(.linear, h, w1, b1))
            h = try b.apply(.add, h, try b.apply(.linear, u, w2, b2))
        }
        b.output(h)
        return b.graph
    }

    func testSweepIsLinearInTheGraph() throws {
        for blocks in [50, 100, 400] {
            let g = try Self.mlpChain(blocks: blocks)
            var out = g
            let stats = RewriteDriver.sweep(FuseLinearEpilogue(), &out)
            XCTAssertEqual(stats.visits, g.nodes.count, "each node visited once (\(blocks) blocks)")
            XCTAssertEqual(stats.indexBuilds, 1)
            XCTAssertEqual(stats.rewrites, 2 * blocks)
            // gelu(linear) → fused_linear: 1 operand out, 3 in; add(h, linear) → 2 out, 4 in.
            XCTAssertEqual(stats.useUpdates, 10 * blocks, "use-count updates grow with the rewrites, not with rewrites × nodes")
            let fused = out.nodes.filter { if case .fusedLinear = $0.op { true } else { false } }.count
            XCTAssertEqual(fused, 2 * blocks)
        }
    }

    /// Use counts and the sole reader follow each `replace`, and a sweep that rewrites nothing
    /// leaves the graph as it was.
    func testIndexFollowsReplace() throws {
        let g = try Self.mlpChain(blocks: 1)
        var index = GraphIndex(g)
        // Nodes: 4 constants, linear (4), gelu (5), linear (6), add (7).
        let geluIn = g.nodes[5].inputs[0]
        XCTAssertTrue(index.single(geluIn))
        XCTAssertEqual(index.soleReader(geluIn)?.op, .gelu)
        let x = g.inputs[0]
        XCTAssertEqual(index.uses[x], 2)
        index.replace(5, op: .fusedLinear(activation: .gelu, hasBias: true, hasResidual: false), inputs: g.nodes[4].inputs)
        XCTAssertEqual(index.uses[geluIn], 0)
        XCTAssertEqual(index.uses[x], 3)
        XCTAssertEqual(index.uses, GraphIndex(index.graph).uses)
        XCTAssertEqual(index.readerSum, GraphIndex(index.graph).readerSum)
        XCTAssertEqual(index.useUpdates, 4)

        var unchanged = g
        let stats = RewriteDriver.sweep(FuseAttention(), &unchanged)
        XCTAssertFalse(stats.changed)
        XCTAssertEqual(unchanged, g)
    }
}
