import FlowCompiler
import FlowIR
import XCTest

/// `MemoryPlanner.verify` (rules F13–F16 of Spec/ModelFile.md): it accepts every plan the
/// planner makes, and refuses hand-edited plans with the rule they break.
final class MemoryPlanVerifierTests: XCTestCase {
    static let constants: [String: TensorType] = ["w": TensorType(.float32, [4, 4])]

    /// x → reshape (view) → exp (in place) → linear (fresh) → add with x (in place over the
    /// linear's result) → y; plus a state updated in place and read after its update.
    func graph() throws -> Graph {
        let b = GraphBuilder(name: "g", constants: Self.constants)
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        let s = b.input("s", TensorType(.float32, [.batch, 3, 4]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        let r = try b.apply(.reshape(shape: [.batch, 1, 4]), x, name: "r")
        let e = try b.apply(.exp, r, name: "e")
        let l = try b.apply(.linear, e, try b.constant("w"), name: "l")
        let y = try b.apply(.add, l, r, name: "y")
        let s2 = try b.apply(.writeSlice(axis: 1), s, y, pos, name: "s2")
        let m = try b.apply(.reduceSum(axes: [1], keepDims: false), s2, name: "m")
        b.output(m)
        b.output(s2)
        var g = b.graph
        g.state = [StateBinding(input: s, output: s2)]
        try Verifier.verify(g, constants: Self.constants)
        return g
    }

    func plan() throws -> (ExecutionPlan, CompiledFunction.Plan) {
        let p = Compiler.schedule(try graph())
        return (p, try MemoryPlanner.plan(p, bindings: ["B": 3]).stored(bindings: ["B": 3]))
    }

    func assertRule(_ rule: String, _ p: ExecutionPlan, _ s: CompiledFunction.Plan, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try MemoryPlanner.verify(p, s), what, file: file, line: line) { e in
            XCTAssertEqual((e as? IRError)?.rule, rule, "\(what): \(e)", file: file, line: line)
        }
    }

    func testAcceptsThePlannersPlansAndRecomputesLifetimes() throws {
        let p = Compiler.schedule(try graph())
        for b in [1, 3, 64] {
            for inPlace in [true, false] {
                let mp = try MemoryPlanner.plan(p, bindings: ["B": b], inPlace: inPlace)
                let back = try MemoryPlanner.verify(p, mp.stored(bindings: ["B": b]))
                XCTAssertEqual(back.offsets, mp.offsets)
                XCTAssertEqual(back.arenaBytes, mp.arenaBytes)
                XCTAssertEqual(back.naiveBytes, mp.naiveBytes)
                XCTAssertEqual(back.buffer, mp.buffer)
            }
        }
    }

    func testRefusesBrokenPlans() throws {
        let (p, good) = try plan()
        let g = p.graph
        func v(_ n: String) -> ValueID { g.value(named: n)! }
        var s = good
        s.bindings = [:]
        assertRule("F13", p, s, "no binding")
        s = good
        s.bindings = ["B": 0]
        assertRule("F13", p, s, "batch 0")
        s = good
        s.buffer.removeLast()
        assertRule("F14", p, s, "short buffer table")
        s = good
        s.buffer[v("e")] = nil
        assertRule("F14", p, s, "run-time value without buffer")
        s = good
        s.offsets.append(0)
        s.sizes.append(64)
        assertRule("F14", p, s, "unused buffer")
        s = good
        s.sizes[good.buffer[v("l")]!] = 4
        assertRule("F15", p, s, "buffer too small")
        s = good
        s.offsets[good.buffer[v("l")]!] += 32
        assertRule("F15", p, s, "misaligned")
        s = good
        s.arenaBytes = s.naiveBytes + 64
        s.offsets[good.buffer[v("l")]!] = s.naiveBytes
        assertRule("F15", p, s, "arena larger than one buffer per value")
    }

    func testRefusesOverlapsTheRuntimeCannotHonour() throws {
        let (p, good) = try plan()
        let g = p.graph
        func v(_ n: String) -> ValueID { g.value(named: n)! }
        // The linear's output over its input e: a GEMM may not write over its operand.
        var s = good
        XCTAssertNotEqual(s.offsets[good.buffer[v("l")]!], s.offsets[good.buffer[v("e")]!])
        s.offsets[good.buffer[v("l")]!] = s.offsets[good.buffer[v("e")]!]
        assertRule("F16", p, s, "linear writing over its operand")
        // The input x must stay intact (a caller may run again on the same input).
        s = good
        s.offsets[good.buffer[v("l")]!] = s.offsets[good.buffer[v("x")]!]
        assertRule("F16", p, s, "overwriting a graph input")
        // y in place over r, the view of input x, would clobber x.
        s = good
        s.buffer[v("y")] = good.buffer[v("r")]
        assertRule("F16", p, s, "in place over a value that lives on")
        // The state's new value must stay in the state's bytes.
        s = good
        let size = good.sizes[good.buffer[v("s")]!]
        s.buffer[v("s2")] = s.sizes.count
        s.offsets.append(s.arenaBytes)
        s.sizes.append(size)
        s.arenaBytes += size
        XCTAssertLessThanOrEqual(s.arenaBytes, s.naiveBytes)
        assertRule("F16", p, s, "state moved")
    }

    /// The in-place rules the verifier accepts are exactly those the planner may use.
    func testInPlaceSharingIsAcceptedOnlyAtTheLastRead() throws {
        let b = GraphBuilder(name: "chain", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, 8]))
        let a = try b.apply(.scale(2), x, name: "a")
        let c = try b.apply(.exp, a, name: "c")       // may overwrite a: its last reader
        let d = try b.apply(.neg, c, name: "d")
        let e = try b.apply(.add, d, a, name: "e")    // a is read again here
        b.output(e)
        let p = Compiler.schedule(b.graph)
        let mp = try MemoryPlanner.plan(p, bindings: ["B": 2])
        var s = mp.stored(bindings: ["B": 2])
        XCTAssertNoThrow(try MemoryPlanner.verify(p, s))
        // Put c onto a's bytes: a is still read by e, so this is refused.
        s.offsets[mp.buffer[c]!] = mp.offsets[mp.buffer[a]!]
        s.sizes[mp.buffer[c]!] = max(s.sizes[mp.buffer[c]!], 64)
        assertRule("F16", p, s, "c over a before a's last read")
        // d in place over c (c's last reader, same shape) in a plan made without in-place
        // sharing: accepted, though that planner did not choose it.
        let loose = try MemoryPlanner.plan(p, bindings: ["B": 2], inPlace: false)
        XCTAssertNotEqual(loose.buffer[d], loose.buffer[c])
        var t = loose.stored(bindings: ["B": 2])
        t.buffer[d] = loose.buffer[c]
        let freed = try XCTUnwrap(loose.buffer[d] ?? nil)
        XCTAssertFalse(t.buffer.contains(freed))
        // Drop the now unused buffer, renumbering the others.
        t.offsets.remove(at: freed)
        t.sizes.remove(at: freed)
        t.buffer = t.buffer.map { $0.map { $0 > freed ? $0 - 1 : $0 } }
        XCTAssertNoThrow(try MemoryPlanner.verify(p, t))
        // But not over a, which e reads later.
        t.buffer[d] = t.buffer[a]
        assertRule("F16", p, t, "d over a before a's last read")
    }
}
