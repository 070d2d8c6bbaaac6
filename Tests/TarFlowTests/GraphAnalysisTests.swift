@testable import FlowCompiler
import FlowIR
@testable import TarFlow
import XCTest

/// The compiler's analyses on TarFlow's own graphs: batch rows are independent in the forward
/// and decode graphs (as written and as compiled, which is what a split runs) and not in the
/// gradient, whose loss averages over the batch; the fusion driver gives these graphs exactly
/// what rebuilding the index after every rewrite gave.
final class GraphAnalysisTests: XCTestCase {
    /// Four blocks of two layers, conditional: every fusion pattern occurs several times.
    static let config = TarFlowConfig(inChannels: 1, imgSize: 4, patchSize: 2, channels: 8, numBlocks: 4, layersPerBlock: 2,
                                      nvp: true, numClasses: 3, headDim: 4, expansion: 2)
    static let constants: [String: TensorType] = Dictionary(uniqueKeysWithValues: Converter.expectedShapes(config).map {
        ($0.key, TensorType(.float32, $0.value.map { .fixed($0) }))
    })

    func graphs() throws -> [Graph] {
        let c = Self.config
        let forward = try TarFlowGraphs.forward(c, constants: Self.constants)
        return [forward] + (try (0..<c.numBlocks).map { try TarFlowGraphs.decodeStep(c, block: $0, constants: Self.constants) })
    }

    func testForwardAndDecodeRowsAreIndependent() throws {
        for g in try graphs() {
            XCTAssertNoThrow(try BatchRows.check(g, symbol: TarFlowModel.batchSymbol), g.name)
            for half in [false, true] {
                let plan = try Compiler.compile(g, constants: Self.constants, options: .init(fusion: true, halfPrecisionState: half))
                XCTAssertNoThrow(try BatchRows.check(plan.graph, symbol: TarFlowModel.batchSymbol), "\(g.name) compiled")
            }
            let unfused = try Compiler.compile(g, constants: Self.constants, options: .init(fusion: false))
            XCTAssertNoThrow(try BatchRows.check(unfused.graph, symbol: TarFlowModel.batchSymbol), "\(g.name) unfused")
        }
    }

    /// loss = 0.5·mean(z²) − mean(logdets) over the batch: the gradient of each row is scaled
    /// by 1/B, so a split (B of a part) would give other numbers. The check refuses it.
    func testGradientMixesRows() throws {
        let forward = try TarFlowGraphs.forward(Self.config, constants: Self.constants)
        let g = try TarFlowGraphs.gradient(forward: forward, constants: Self.constants).graph
        for graph in [g, try Compiler.compile(g, constants: Self.constants).graph] {
            XCTAssertThrowsError(try BatchRows.check(graph, symbol: TarFlowModel.batchSymbol)) { e in
                XCTAssertEqual((e as? CompilerError)?.batchRowRule, .reducesRows, "\(e)")
            }
        }
    }

    func testFusionDriverMatchesRebuildingTheIndex() throws {
        let patterns: [(any NodeRewrite, String)] = [(FuseAttention(), "attention"), (FuseAffineCoupling(), "affine_coupling"),
                                                     (FuseLinearEpilogue(), "fused_linear")]
        var rewrites: [String: Int] = [:]
        for g in try graphs() {
            var driven = g
            _ = try DeadCodeElimination().run(&driven, context: PassContext(constants: Self.constants))
            var rebuilt = driven
            for (p, op) in patterns {
                let stats = RewriteDriver.sweep(p, &driven)
                rebuildingIndexEachTime(p, &rebuilt)
                XCTAssertEqual(driven, rebuilt, "\(g.name): \(op)")
                rewrites[op, default: 0] += stats.rewrites
                XCTAssertEqual(stats.visits, driven.nodes.count)
                XCTAssertLessThanOrEqual(stats.useUpdates, 2 * driven.nodes.reduce(0) { $0 + $1.inputs.count } + 2 * g.nodes.count)
            }
        }
        // forward: attention ×8, coupling ×4, epilogues; the decode steps: attention, epilogues.
        for (_, op) in patterns { XCTAssertGreaterThanOrEqual(rewrites[op] ?? 0, Self.config.numBlocks, "\(op) patterns occur") }
    }
}

/// What each fusion pass did before `RewriteDriver`: a new index before every node.
private func rebuildingIndexEachTime(_ pattern: some NodeRewrite, _ graph: inout Graph) {
    for i in graph.nodes.indices {
        guard let (op, inputs) = pattern.rewrite(at: i, GraphIndex(graph)) else { continue }
        graph.nodes[i] = Node(op: op, inputs: inputs, outputs: graph.nodes[i].outputs)
    }
}
