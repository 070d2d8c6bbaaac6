import FlowIR
import XCTest

/// The well-formedness rules W1–W10 of Spec/IR.md §5: for each rule, minimal graphs that break
/// exactly that rule, and the verifier must name it in the thrown `IRError`.
final class VerifierTests: XCTestCase {
    static let f32 = DType.float32
    static let constants: [String: TensorType] = ["w": TensorType(.float32, [4])]

    /// `y = add(x, w)` with x: f32[B,4] and w the constant f32[4]. Values: x = 0, w = 1, y = 2.
    func simpleGraph() throws -> Graph {
        let b = GraphBuilder(name: "g", constants: Self.constants)
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        let w = try b.constant("w")
        let y = try b.apply(.add, x, w, name: "y")
        b.output(y)
        XCTAssertEqual([x, w, y], [0, 1, 2])
        return b.graph
    }

    /// A KV-cache-like state: `cache.next = write_slice[axis=1](cache, upd, pos)`, bound as state.
    /// Values: cache = 0, upd = 1, pos = 2, cache.next = 3, view = 4 (a reader of the new value).
    func stateGraph() throws -> Graph {
        let b = GraphBuilder(name: "s", constants: [:])
        let cache = b.input("cache", TensorType(.float32, [.batch, 6, 2]))
        let upd = b.input("upd", TensorType(.float32, [.batch, 1, 2]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        let next = try b.apply(.writeSlice(axis: 1), cache, upd, pos, name: "cache.next")
        let view = try b.apply(.scale(2), next, name: "view")
        b.output(view)
        b.output(next)
        var g = b.graph
        g.state = [StateBinding(input: cache, output: next)]
        XCTAssertEqual([cache, upd, pos, next, view], [0, 1, 2, 3, 4])
        return g
    }

    /// Asserts that verifying `g` throws an `IRError` citing `rule` (and, if given, a message part).
    func assertRule(_ rule: String, _ g: Graph, constants: [String: TensorType]? = VerifierTests.constants,
                    says fragment: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        do {
            try Verifier.verify(g, constants: constants)
            XCTFail("expected a \(rule) error, the graph verified", file: file, line: line)
        } catch {
            XCTAssertEqual(error.rule, rule, "wrong rule: \(error)", file: file, line: line)
            if let fragment {
                XCTAssertTrue(error.description.contains(fragment), "'\(error)' does not say '\(fragment)'", file: file, line: line)
            }
            XCTAssertTrue(error.description.hasSuffix("[rule \(rule), see Spec/IR.md]"), "\(error)", file: file, line: line)
        }
    }

    // MARK: - Valid graphs

    func testValidGraphsPass() throws {
        XCTAssertNoThrow(try Verifier.verify(try simpleGraph(), constants: Self.constants))
        XCTAssertNoThrow(try Verifier.verify(try simpleGraph()))
        XCTAssertNoThrow(try Verifier.verify(try stateGraph(), constants: [:]))
        // A value that is neither defined nor read is allowed and ignored.
        var h = try simpleGraph()
        h.values.append(Value(name: "orphan", type: TensorType(.float32, [.symbol("Q")])))
        XCTAssertNoThrow(try Verifier.verify(h, constants: Self.constants))
        // A graph output may be a graph input or a constant.
        var k = try simpleGraph()
        k.outputs = [0, 1, 2]
        XCTAssertNoThrow(try Verifier.verify(k, constants: Self.constants))
    }

    // MARK: - One test per rule

    func testW1IndicesInRange() throws {
        var g = try simpleGraph()
        g.nodes[1].inputs[1] = 3
        assertRule("W1", g, says: "value index 3 out of range (3 values)")

        g = try simpleGraph()
        g.outputs = [7]
        assertRule("W1", g, says: "graph input/output index 7 out of range (3 values)")

        g = try simpleGraph()
        g.inputs = [-1]
        assertRule("W1", g)

        g = try simpleGraph()
        g.nodes[0].outputs = [9]
        assertRule("W1", g)

        var s = try stateGraph()
        s.state = [StateBinding(input: 0, output: 99)]
        assertRule("W1", s, constants: [:], says: "state binding index out of range")
    }

    func testW2SingleDefinition() throws {
        var g = try simpleGraph()
        g.inputs = [0, 0]
        assertRule("W2", g, says: "value 'x' is a graph input twice")

        // The add node redefines the graph input x.
        g = try simpleGraph()
        g.values[0].type = TensorType(.float32, [.batch, 4])
        g.nodes[1].outputs = [0]
        g.outputs = [0]
        assertRule("W2", g, says: "value 'x' is defined twice")

        // Two nodes define the same value.
        g = try simpleGraph()
        g.nodes.append(Node(op: .add, inputs: [0, 1], outputs: [2]))
        assertRule("W2", g, says: "value 'y' is defined twice")
    }

    func testW3TopologicalOrder() throws {
        var g = try simpleGraph()
        g.nodes.swapAt(0, 1)
        // The builder names the constant's value t1.
        assertRule("W3", g, says: "input 't1' is used before it is defined")

        // A node reading its own output.
        g = try simpleGraph()
        g.nodes[1].inputs = [0, 2]
        assertRule("W3", g, says: "input 'y' is used before it is defined")

        // A graph output that nothing defines.
        g = try simpleGraph()
        g.values.append(Value(name: "ghost", type: TensorType(.float32, [4])))
        g.outputs.append(3)
        assertRule("W3", g, says: "output 'ghost' is never defined")
    }

    func testW4Arity() throws {
        var g = try simpleGraph()
        g.nodes[1].inputs = [0]
        assertRule("W4", g, says: "add cannot take 1 inputs")

        g = try simpleGraph()
        g.values.append(Value(name: "y2", type: TensorType(.float32, [.batch, 4])))
        g.nodes[1].outputs = [2, 3]
        assertRule("W4", g, says: "add has exactly one output, has 2")

        g = try simpleGraph()
        g.nodes[0].outputs = []
        assertRule("W4", g, says: "constant has exactly one output, has 0")

        // concat takes at least one input.
        g = try simpleGraph()
        g.nodes[1] = Node(op: .concat(axis: 0), inputs: [], outputs: [2])
        assertRule("W4", g, says: "concat cannot take 0 inputs")
    }

    func testW5Types() throws {
        // Declared type differs from the shape rule's (dims compared exactly).
        var g = try simpleGraph()
        g.values[2].type = TensorType(.float32, [.batch, 5])
        assertRule("W5", g, says: "declared type f32[B,5] differs from the op's result type f32[B,4]")

        g = try simpleGraph()
        g.values[2].type = TensorType(.float32, [2, 4])
        assertRule("W5", g)

        // The shape rule itself refuses: a slice past the end.
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, 8]))
        let y = try b.apply(.slice(axis: 1, start: 0, end: 8), x, name: "y")
        b.output(y)
        var h = b.graph
        h.nodes[0].op = .slice(axis: 1, start: 0, end: 9)
        assertRule("W5", h, constants: [:], says: "slice: range 0..<9 outside 0..<8")
    }

    func testW6Constants() throws {
        let g = try simpleGraph()
        assertRule("W6", g, constants: [:], says: "constant 'w' is not in the tensor table")
        assertRule("W6", g, constants: ["w": TensorType(.float32, [5])], says: "declared type f32[4] differs from the op's result type f32[5]")
        // An i64 table entry is not an f32 constant.
        assertRule("W6", g, constants: ["w": TensorType(.int64, [4])])

        var h = try simpleGraph()
        h.values[1].type = TensorType(.float32, [.batch])
        assertRule("W6", h, constants: nil, says: "constant 'w' must have a fixed shape")
    }

    func testW7Names() throws {
        var g = try simpleGraph()
        g.values[2].name = "x"
        assertRule("W7", g, says: "value name 'x' is used twice")

        g = try simpleGraph()
        g.values[1].name = ""
        assertRule("W7", g, says: "value %1 has an empty name")
    }

    func testW8Symbols() throws {
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        let f = try b.apply(.full(value: 1, shape: [.symbol("S"), 4]), name: "f")
        b.output(x)
        b.output(f)
        assertRule("W8", b.graph, constants: [:], says: "symbol 'S' does not appear in any graph input's shape")

        // The same fill over B is fine.
        let c = GraphBuilder(name: "g", constants: [:])
        let x2 = c.input("x", TensorType(.float32, [.batch, 4]))
        c.output(try c.apply(.full(value: 1, shape: [.batch, 4]), name: "f"))
        c.output(x2)
        XCTAssertNoThrow(try Verifier.verify(c.graph, constants: [:]))
    }

    func testW9DTypes() throws {
        var g = try simpleGraph()
        g.values[0].type = TensorType(.float16, [.batch, 4])
        assertRule("W9", g, says: "graph input 'x' must be f32 or i64")

        g = try simpleGraph()
        g.values[0].type = TensorType(.int64, [.batch, 4])
        assertRule("W9", g, says: "add: lhs must be f32, is i64")

        // write_slice's position must be i64[1].
        var s = try stateGraph()
        s.values[2].type = TensorType(.int64, [2])
        assertRule("W9", s, constants: [:], says: "write_slice: position must be i64[1], is i64[2]")
    }

    func testW10State() throws {
        // The state's input is not a graph input.
        var s = try stateGraph()
        s.state = [StateBinding(input: 4, output: 3)]
        assertRule("W10", s, constants: [:], says: "state 'view' must bind a graph input to a graph output")

        // The state's output is not a graph output.
        s = try stateGraph()
        s.outputs = [4]
        assertRule("W10", s, constants: [:], says: "state 'cache' must bind a graph input to a graph output")

        // I = O: a state must be updated by its chain (and its buffer cannot be both).
        s = try stateGraph()
        s.outputs.append(0)
        s.state = [StateBinding(input: 0, output: 0)]
        assertRule("W10", s, constants: [:], says: "state 'cache' is bound to itself")

        // The state input is also returned as a graph output: it would alias the updated buffer.
        s = try stateGraph()
        s.outputs.append(0)
        assertRule("W10", s, constants: [:], says: "state 'cache' is also a graph output")

        // Bound twice.
        s = try stateGraph()
        s.state.append(StateBinding(input: 0, output: 3))
        assertRule("W10", s, constants: [:], says: "state 'cache' is bound twice")

        // Changes type: bound to an output of another shape.
        s = try stateGraph()
        s.outputs.append(1)
        s.state = [StateBinding(input: 0, output: 1)]
        assertRule("W10", s, constants: [:], says: "state 'cache' changes type")

        // Another node reads the old value of the state.
        s = try stateGraph()
        s.values.append(Value(name: "peek", type: TensorType(.float32, [.batch, 6, 2])))
        s.nodes.append(Node(op: .neg, inputs: [0], outputs: [5]))
        s.outputs.append(5)
        assertRule("W10", s, constants: [:], says: "state 'cache': 'cache' must be read only by the write_slice that updates it")

        // The chain is not a write_slice: a scale of the state bound as its new value.
        let b = GraphBuilder(name: "s", constants: [:])
        let c = b.input("c", TensorType(.float32, [3]))
        let d = try b.apply(.scale(2), c, name: "d")
        b.output(d)
        var t = b.graph
        t.state = [StateBinding(input: c, output: d)]
        assertRule("W10", t, constants: [:], says: "state 'c': 'c' must be read only by the write_slice that updates it")

        // The state is its own update (the state is an operand other than `state`).
        let e = GraphBuilder(name: "s", constants: [:])
        let st = e.input("st", TensorType(.float32, [4, 2]))
        let pos = e.input("pos", TensorType(.int64, [1]))
        let w = try e.apply(.writeSlice(axis: 0), st, st, pos, name: "w")
        e.output(w)
        var u = e.graph
        u.state = [StateBinding(input: st, output: w)]
        assertRule("W10", u, constants: [:])
    }

    // MARK: - Order and messages

    /// The verifier reports the first failure in the documented order: W7 before W1.
    func testFirstFailureWinsInDocumentedOrder() throws {
        var g = try simpleGraph()
        g.values[1].name = "x"
        g.outputs = [42]
        assertRule("W7", g)
    }

    func testErrorNamesGraphAndNode() throws {
        var g = try simpleGraph()
        g.values[2].type = TensorType(.float32, [.batch, 5])
        do {
            try Verifier.verify(g, constants: Self.constants)
            XCTFail("expected W5")
        } catch {
            XCTAssertEqual(error.location, "graph 'g', node 1 (add -> %y)")
            XCTAssertEqual(error.description,
                           "graph 'g', node 1 (add -> %y): declared type f32[B,5] differs from the op's result type f32[B,4] [rule W5, see Spec/IR.md]")
        }
    }
}
