import Foundation
import XCTest
import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
@testable import TarFlow

/// The memory plans of every fixture model's forward and decode graphs (fused and unfused, at
/// B = 1, 3, 16) keep the invariants of `PlanChecker`; the executor's arena is that plan.
///
/// The unit tests of the planner are in Tests/FlowCompilerTests/MemoryPlannerTests.swift; the
/// fixture graphs need the converter (TarFlow), which that target cannot import. Both use the
/// checker in Tests/FlowTestSupport.
final class MemoryPlanFixtureTests: XCTestCase {
    func checkPlans(_ name: String) throws {
        let m = try Fixtures.model(name, format: "safetensors")
        let graphs = ["forward"] + (0..<m.config.numBlocks).map { "decode\($0)" }
        for graphName in graphs {
            let g = try XCTUnwrap(m.model.graph(named: graphName), graphName)
            for fusion in [true, false] {
                let plan = try Compiler.compile(g, constants: m.model.constantTypes, options: .init(fusion: fusion))
                for batch in [1, 3, 16] {
                    for inPlace in [true, false] {
                        let mp = try MemoryPlanner.plan(plan, bindings: ["B": batch], inPlace: inPlace)
                        let bad = try PlanChecker.violations(of: mp, for: plan, bindings: ["B": batch])
                        XCTAssertTrue(bad.isEmpty, "\(name) \(graphName) fusion \(fusion) in place \(inPlace) B = \(batch):\n"
                                      + bad.prefix(5).joined(separator: "\n"))
                        XCTAssertLessThanOrEqual(mp.arenaBytes, mp.naiveBytes)
                    }
                }
            }
        }
        // The executor lays its buffers out by the plan.
        let exec = try m.forwardPlan()
        let bound = try exec.bind(["B": 3])
        let mp = try MemoryPlanner.plan(exec.plan, bindings: ["B": 3])
        XCTAssertEqual(bound.arenaByteCount, mp.arenaBytes)
        XCTAssertEqual(bound.memoryPlan.offsets, mp.offsets)
    }

    func testTinyUncond() throws { try checkPlans("tiny_uncond") }
    func testCondGuided() throws { try checkPlans("cond_guided") }
    func testVPPrior() throws { try checkPlans("vp_prior") }
    func testMNIST() throws { try checkPlans("mnist_trained") }
}
