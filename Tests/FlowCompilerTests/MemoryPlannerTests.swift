import Foundation
import FlowCompiler
import FlowIR
import FlowTestSupport
import XCTest

/// `MemoryPlanner`: which values share a buffer on small graphs (views, in-place ops, state
/// chains, and the cases that must not share), and the invariants every plan must keep
/// (`PlanChecker`, Tests/FlowTestSupport) over the shipped MNIST model's forward and decode
/// graphs at several batch sizes.
final class MemoryPlannerTests: XCTestCase {
    static let constants: [String: TensorType] = [
        "w": TensorType(.float32, [4, 4]), "g": TensorType(.float32, [4]), "beta": TensorType(.float32, [4]),
    ]
    let B = Dim.batch

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    struct Planned {
        var plan: ExecutionPlan
        var memory: MemoryPlan
        /// Buffer of a value by name.
        func buffer(_ name: String) -> Int? { plan.graph.value(named: name).flatMap { memory.buffer[$0] } }
    }

    /// Compiles (without fusion, so the graph's ops are the steps), plans at B = 2, and checks
    /// the plan's invariants.
    func planned(_ g: Graph, fusion: Bool = false, inPlace: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws -> Planned {
        let plan = try Compiler.compile(g, constants: Self.constants, options: .init(fusion: fusion))
        let m = try MemoryPlanner.plan(plan, bindings: ["B": 2], inPlace: inPlace)
        let bad = try PlanChecker.violations(of: m, for: plan, bindings: ["B": 2])
        XCTAssertTrue(bad.isEmpty, bad.prefix(5).joined(separator: "\n"), file: file, line: line)
        return Planned(plan: plan, memory: m)
    }

    // MARK: - Sharing

    func testReshapeIsAView() throws {
        let b = GraphBuilder(name: "v", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let e = try b.apply(.exp, x, name: "e")
        let r = try b.apply(.reshape(shape: [B, 12]), e, name: "r")
        let rx = try b.apply(.reshape(shape: [B, 12]), x, name: "rx")
        b.output(try b.apply(.add, r, rx, name: "y"))
        let p = try planned(b.graph)
        XCTAssertEqual(p.buffer("r"), p.buffer("e"))
        XCTAssertEqual(p.buffer("rx"), p.buffer("x"), "a reshape of an input views the input")
        // The add overwrites r (its last reader), never the input's view.
        XCTAssertEqual(p.buffer("y"), p.buffer("e"))
        XCTAssertNotEqual(p.buffer("y"), p.buffer("x"))
        XCTAssertEqual(Set(p.memory.buffer.compactMap { $0 }).count, 2)
    }

    /// Unary and binary elementwise ops, LayerNorm, softmax and masks overwrite an operand
    /// whose last reader they are.
    func testInPlaceChain() throws {
        for operandFirst in [true, false] {
            let b = GraphBuilder(name: "chain", constants: Self.constants)
            let x = b.input("x", f32([B, 3, 4]))
            let pos = b.input("pos", TensorType(.int64, [1]))
            let a = try b.apply(.exp, x, name: "a")
            let n = try b.apply(.neg, a, name: "n")
            let c = operandFirst ? try b.apply(.add, n, x, name: "c") : try b.apply(.add, x, n, name: "c")
            let ln = try b.apply(.layerNorm(eps: 1e-5), c, try b.constant("g"), try b.constant("beta"), name: "ln")
            let m = try b.apply(.causalMask(value: -.infinity), try b.apply(.scale(2), ln, name: "s"), name: "m")
            let sm = try b.apply(.softmax(axis: 2), try b.apply(.maskAfter(value: -.infinity), m, pos, name: "ma"), name: "sm")
            b.output(try b.apply(.gelu, sm, name: "y"))
            let p = try planned(b.graph)
            let chain = ["a", "n", "c", "ln", "s", "m", "ma", "sm", "y"].map { p.buffer($0) }
            XCTAssertEqual(Set(chain).count, 1, "one buffer for the chain: \(chain)")
            XCTAssertNotEqual(p.buffer("a"), p.buffer("x"))
            // With in-place updates off, each op gets its own buffer.
            let off = try planned(b.graph, inPlace: false)
            XCTAssertEqual(Set(["a", "n", "c", "ln", "s", "m", "ma", "sm", "y"].map { off.buffer($0) }).count, 9)
            XCTAssertGreaterThan(off.memory.arenaBytes, p.memory.arenaBytes)
        }
    }

    func testNeverInPlaceOverAnOutputAnInputOrALaterRead() throws {
        let b = GraphBuilder(name: "no", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let a = try b.apply(.exp, x, name: "a")             // over an input: no
        b.output(a)
        let n = try b.apply(.neg, a, name: "n")             // over an output: no
        let e = try b.apply(.exp, n, name: "e")             // n is read again below: no
        let c = try b.apply(.add, e, n, name: "c")          // e's and n's last reader: yes
        let l = try b.apply(.linear, c, try b.constant("w"), name: "l")  // a GEMM never runs in place
        b.output(try b.apply(.mul, l, l, name: "y"))        // both operands the same value: no
        let p = try planned(b.graph)
        XCTAssertNotEqual(p.buffer("a"), p.buffer("x"))
        XCTAssertNotEqual(p.buffer("n"), p.buffer("a"))
        XCTAssertNotEqual(p.buffer("e"), p.buffer("n"))
        XCTAssertTrue(p.buffer("c") == p.buffer("e") || p.buffer("c") == p.buffer("n"))
        XCTAssertNotEqual(p.buffer("l"), p.buffer("c"))
        XCTAssertNotEqual(p.buffer("y"), p.buffer("l"))
    }

    /// An operand that broadcasts (smaller than the result) is never overwritten; the
    /// full-size operand is.
    func testBroadcastOperandIsNotOverwritten() throws {
        let b = GraphBuilder(name: "bc", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let xs = b.input("xs", f32([B, 1, 4]))
        let small = try b.apply(.exp, xs, name: "small")
        let big = try b.apply(.exp, x, name: "big")
        b.output(try b.apply(.add, small, big, name: "y"))
        let p = try planned(b.graph)
        XCTAssertEqual(p.buffer("y"), p.buffer("big"))
        XCTAssertNotEqual(p.buffer("y"), p.buffer("small"))
    }

    /// A fused linear may write over its residual (GEMM with β = 1), not when GELU runs before
    /// the residual is added, and never over x.
    func testFusedLinearResidualInPlace() throws {
        for act in [Activation.none, .gelu] {
            let b = GraphBuilder(name: "fl", constants: Self.constants)
            let x = b.input("x", f32([B, 3, 4]))
            let r = try b.apply(.exp, x, name: "r")
            let h = try b.apply(.neg, x, name: "h")
            b.output(try b.apply(.fusedLinear(activation: act, hasBias: true, hasResidual: true),
                                 inputs: [h, try b.constant("w"), try b.constant("g"), r], name: "y"))
            let p = try planned(b.graph)
            XCTAssertEqual(p.buffer("y") == p.buffer("r"), act == .none, "\(act)")
            XCTAssertNotEqual(p.buffer("y"), p.buffer("h"))
        }
        // The residual is also x: not in place.
        let b = GraphBuilder(name: "fl", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let r = try b.apply(.exp, x, name: "r")
        b.output(try b.apply(.fusedLinear(activation: .none, hasBias: false, hasResidual: true), inputs: [r, try b.constant("w"), r], name: "y"))
        let p = try planned(b.graph)
        XCTAssertNotEqual(p.buffer("y"), p.buffer("r"))
    }

    /// A KV-cache update chain writes into the state's buffer; the buffer lives for the whole
    /// run. A write into a plain input copies instead.
    func testWriteSliceChainSharesTheStateBuffer() throws {
        let b = GraphBuilder(name: "kv", constants: Self.constants)
        let cache = b.input("cache", f32([B, 4, 2]))
        let plain = b.input("plain", f32([B, 4, 2]))
        let u1 = b.input("u1", f32([B, 1, 2])), u2 = b.input("u2", f32([B, 1, 2]))
        let p1 = b.input("p1", TensorType(.int64, [1])), p2 = b.input("p2", TensorType(.int64, [1]))
        let c1 = try b.apply(.writeSlice(axis: 1), cache, u1, p1, name: "c1")
        let c2 = try b.apply(.writeSlice(axis: 1), c1, u2, p2, name: "c2")
        let w = try b.apply(.writeSlice(axis: 1), plain, u1, p1, name: "w")
        b.output(try b.apply(.add, try b.apply(.neg, c2, name: "n"), w, name: "y"))
        b.output(c2)
        var g = b.graph
        g.state = [StateBinding(input: cache, output: c2)]
        let p = try planned(g)
        XCTAssertEqual(p.buffer("c1"), p.buffer("cache"))
        XCTAssertEqual(p.buffer("c2"), p.buffer("cache"))
        XCTAssertNotEqual(p.buffer("n"), p.buffer("cache"), "the state's new value is an output")
        XCTAssertNotEqual(p.buffer("w"), p.buffer("plain"), "a plain input is never written")
        let sb = try XCTUnwrap(p.buffer("cache"))
        XCTAssertEqual(p.memory.lifetimes[sb], -1...p.plan.steps.count)
    }

    /// Every input's buffer lives from before the first step to after the last, whatever reads it.
    func testInputsLiveForTheWholeRun() throws {
        let b = GraphBuilder(name: "in", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let unused = b.input("unused", f32([B, 8]))
        _ = unused
        var h = try b.apply(.exp, x, name: "h0")
        for i in 1..<6 { h = try b.apply(.neg, try b.apply(.linear, h, try b.constant("w")), name: "h\(i)") }
        b.output(h)
        let p = try planned(b.graph)
        for name in ["x", "unused"] {
            let buf = try XCTUnwrap(p.buffer(name), name)
            XCTAssertEqual(p.memory.lifetimes[buf], -1...p.plan.steps.count, name)
        }
        // Constants and load-time values are not in the arena.
        XCTAssertFalse(p.plan.loadSteps.isEmpty)
        for s in p.plan.loadSteps { XCTAssertNil(p.memory.buffer[s.outputs[0]], p.plan.graph.values[s.outputs[0]].name) }
    }

    /// Offsets are 64-byte aligned and sizes rounded up to 64 bytes, even for odd shapes.
    func testAlignment() throws {
        let b = GraphBuilder(name: "al", constants: Self.constants)
        let x = b.input("x", f32([B, 3]))
        let y = try b.apply(.exp, try b.apply(.slice(axis: 1, start: 0, end: 1), x))
        b.output(try b.apply(.concat(axis: 1), y, x, x))
        let p = try planned(b.graph)
        XCTAssertTrue(p.memory.offsets.allSatisfy { $0 % MemoryPlanner.alignment == 0 }, "\(p.memory.offsets)")
        XCTAssertTrue(p.memory.sizes.allSatisfy { $0 % MemoryPlanner.alignment == 0 && $0 > 0 }, "\(p.memory.sizes)")
        XCTAssertEqual(MemoryPlanner.alignment, 64)
    }

    /// The checker finds overlapping buffers, an in-place write over a value read later, and
    /// a misaligned offset.
    func testCheckerCatchesBrokenPlans() throws {
        let b = GraphBuilder(name: "chk", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let a = try b.apply(.exp, x, name: "a")
        let e = try b.apply(.exp, a, name: "e")
        b.output(try b.apply(.add, e, a, name: "y"))
        let p = try planned(b.graph)
        let bindings = ["B": 2]
        // Put a's and e's buffers at the same offset: both live at step 1.
        var m = p.memory
        let ba = try XCTUnwrap(p.buffer("a")), be = try XCTUnwrap(p.buffer("e"))
        XCTAssertNotEqual(ba, be)
        m.offsets[be] = m.offsets[ba]
        XCTAssertFalse(try PlanChecker.violations(of: m, for: p.plan, bindings: bindings).isEmpty)
        // Let e overwrite a in place although the add reads a afterwards.
        m = p.memory
        m.buffer[p.plan.graph.value(named: "e")!] = ba
        XCTAssertFalse(try PlanChecker.violations(of: m, for: p.plan, bindings: bindings).isEmpty)
        // A misaligned offset.
        m = p.memory
        m.offsets[ba] += 4
        m.arenaBytes += 64
        XCTAssertFalse(try PlanChecker.violations(of: m, for: p.plan, bindings: bindings).isEmpty)
    }

    // MARK: - The shipped MNIST model

    static let mnistURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Models").appendingPathComponent("mnist.tflow")

    func testMNISTPlansKeepTheInvariants() throws {
        let model = try ModelFile.read(contentsOf: Self.mnistURL)
        let names = ["forward", "decode0"]
        for name in names {
            let g = try XCTUnwrap(model.graph(named: name), name)
            for fusion in [true, false] {
                let plan = try Compiler.compile(g, constants: model.constantTypes, options: .init(fusion: fusion))
                for batch in [1, 3, 16, 64] {
                    let m = try MemoryPlanner.plan(plan, bindings: ["B": batch])
                    let bad = try PlanChecker.violations(of: m, for: plan, bindings: ["B": batch])
                    XCTAssertTrue(bad.isEmpty, "\(name) fusion \(fusion) B = \(batch):\n" + bad.prefix(5).joined(separator: "\n"))
                }
            }
        }
    }

    /// Sharing and reuse keep the forward pass's activations small: at B = 64 the arena is at
    /// most a quarter of one buffer per value.
    func testMNISTForwardArenaIsAQuarterOfNaive() throws {
        let model = try ModelFile.read(contentsOf: Self.mnistURL)
        let plan = try Compiler.compile(try XCTUnwrap(model.graph(named: "forward")), constants: model.constantTypes)
        let m = try MemoryPlanner.plan(plan, bindings: ["B": 64])
        let ratio = Double(m.arenaBytes) / Double(m.naiveBytes)
        print("MNIST forward, B = 64: arena \(m.arenaBytes) bytes, naive \(m.naiveBytes) bytes, ratio \(ratio)")
        XCTAssertLessThanOrEqual(ratio, 0.25)
        XCTAssertGreaterThan(m.arenaBytes, 0)
    }
}
