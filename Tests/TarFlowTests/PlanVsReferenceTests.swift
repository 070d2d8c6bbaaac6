import Foundation
import FlowTestSupport
import XCTest
import FlowCompiler
import FlowIR
import FlowRuntime
@testable import TarFlow

/// Every step of the compiled plan against the reference interpreter, fed the same inputs
/// (so each op's error is measured alone), and the reference interpreter's whole-graph result
/// against the fixtures' float64 yardstick.
final class PlanVsReferenceTests: XCTestCase {

    func checkEveryStep(_ name: String, batch: Int? = nil) throws {
        let c = try Fixtures.load(name)
        let m = try Fixtures.model(name)
        let exec = try m.forwardPlan()
        var x = c.tensor("input.x")
        var y = c.labels
        if let batch {
            let per = x.count / x.shape[0]
            x = Tensor(shape: [batch] + x.shape.dropFirst(), floats: Array(x.floats.prefix(batch * per)))
            y = y.map { Array($0.prefix(batch)) }
        }
        var inputs = ["x": x]
        if let y { inputs["y"] = Tensor(shape: [y.count], int64s: y.map(Int64.init)) }
        let all = try exec.runCapturingAll(inputs)
        let plan = exec.plan
        var checked = 0
        for s in plan.steps {
            let ins = s.inputs.map { all[$0]! }
            let ref = try ReferenceInterpreter.evaluate(s.op, ins, model: m.model, outputType: plan.graph.values[s.outputs[0]].type,
                                                        bindings: ["B": x.shape[0]])
            let ours = all[s.outputs[0]]!
            XCTAssertEqual(ours.shape, ref.shape, "\(s.op.name) shape")
            let err = maxAbsDifference(ours.floats, ref.asDoubles())
            let mx = ref.asDoubles().filter(\.isFinite).map(abs).max() ?? 0
            // float32 rounding of a result, plus accumulation over at most a few thousand terms.
            let bound = 2e-5 * max(1, mx)
            XCTAssertLessThanOrEqual(err, bound, "\(name): step \(s.op.name) -> \(plan.graph.values[s.outputs[0]].name) error \(err)")
            checked += 1
        }
        XCTAssertEqual(checked, plan.steps.count)
        XCTAssertGreaterThan(checked, 20)
    }

    func testStepsTinyUncond() throws { try checkEveryStep("tiny_uncond") }
    func testStepsCondGuided() throws { try checkEveryStep("cond_guided") }
    func testStepsVPPrior() throws { try checkEveryStep("vp_prior") }
    func testStepsMNIST() throws { try checkEveryStep("mnist_trained", batch: 2) }

    /// The reference interpreter in float64 lands on the official float64 computation.
    func testReferenceMatchesFloat64Yardstick() throws {
        for name in ["tiny_uncond", "cond_guided", "vp_prior"] {
            let c = try Fixtures.load(name)
            let m = try Fixtures.model(name)
            let g = m.model.graph(named: "forward")!
            var inputs: [String: Tensor] = ["x": Tensor(shape: c.io["input.x"]!.shape, doubles: c.io["input.x"]!.values)]
            if let y = c.io["input.y"] { inputs["y"] = Tensor(shape: y.shape, doubles: y.values) }
            let vals = try ReferenceInterpreter.run(g, model: m.model, inputs: inputs)
            for (out, key) in [("z", "forward.z.f64"), ("logdets", "forward.logdets.f64")] {
                let ours = vals[g.value(named: out)!]!.asDoubles()
                let ref = c.io[key]!.values
                let err = maxAbsDifference(ours, ref)
                XCTAssertLessThan(err, 1e-9, "\(name) \(out): reference interpreter vs float64 official")
            }
        }
    }
}
