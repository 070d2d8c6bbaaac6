import FlowCompiler
import FlowIR
import XCTest

/// `DeadCodeElimination`: an input graph and the exact graph expected after the pass.
final class DeadCodeEliminationTests: XCTestCase {
    static let constants: [String: TensorType] = ["w": TensorType(.float32, [4]), "u": TensorType(.float32, [2])]

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    func runPass(_ g: inout Graph) throws -> Bool {
        try DeadCodeElimination().run(&g, context: PassContext(constants: Self.constants))
    }

    func testRemovesDeadNodesAndRenumbers() throws {
        let B = Dim.batch
        let input = Graph(
            name: "g",
            values: [
                Value(name: "x", type: f32([B, 4])),     // 0: input
                Value(name: "dead1", type: f32([B, 4])), // 1: neg(x), unused but by dead2
                Value(name: "c", type: f32([4])),        // 2: constant w
                Value(name: "e", type: f32([B, 4])),     // 3: exp(x)
                Value(name: "y", type: f32([B, 4])),     // 4: add(e, c), output
                Value(name: "dead2", type: f32([2])),    // 5: constant u, unused
                Value(name: "orphan", type: f32([7])),   // 6: neither defined nor read
                Value(name: "dead3", type: f32([B, 4])), // 7: neg(dead1)
            ],
            nodes: [
                Node(op: .neg, inputs: [0], outputs: [1]),
                Node(op: .constant(tensor: "w"), inputs: [], outputs: [2]),
                Node(op: .exp, inputs: [0], outputs: [3]),
                Node(op: .neg, inputs: [1], outputs: [7]),
                Node(op: .add, inputs: [3, 2], outputs: [4]),
                Node(op: .constant(tensor: "u"), inputs: [], outputs: [5]),
            ],
            inputs: [0], outputs: [4])
        try Verifier.verify(input, constants: Self.constants)

        let expected = Graph(
            name: "g",
            values: [
                Value(name: "x", type: f32([B, 4])),
                Value(name: "c", type: f32([4])),
                Value(name: "e", type: f32([B, 4])),
                Value(name: "y", type: f32([B, 4])),
            ],
            nodes: [
                Node(op: .constant(tensor: "w"), inputs: [], outputs: [1]),
                Node(op: .exp, inputs: [0], outputs: [2]),
                Node(op: .add, inputs: [2, 1], outputs: [3]),
            ],
            inputs: [0], outputs: [3])

        var g = input
        XCTAssertTrue(try runPass(&g))
        XCTAssertEqual(g, expected)
        XCTAssertNoThrow(try Verifier.verify(g, constants: Self.constants))
        // A second run finds nothing to do.
        XCTAssertFalse(try runPass(&g))
        XCTAssertEqual(g, expected)
    }

    /// State bindings are renumbered with the values; unused graph inputs are kept.
    func testRemapsStateBindings() throws {
        let input = Graph(
            name: "decode",
            values: [
                Value(name: "junk", type: f32([2])),            // 0: full, dead
                Value(name: "cache", type: f32([4, 2])),        // 1: input, state
                Value(name: "upd", type: f32([1, 2])),          // 2: input
                Value(name: "pos", type: TensorType(.int64, [1])), // 3: input
                Value(name: "junk2", type: f32([1, 2])),        // 4: neg(upd), dead
                Value(name: "cache.next", type: f32([4, 2])),   // 5: write_slice, output, state
                Value(name: "out", type: f32([4, 2])),          // 6: scale(cache.next), output
                Value(name: "unused_in", type: f32([3])),       // 7: input nobody reads
            ],
            nodes: [
                Node(op: .full(value: 1, shape: [2]), inputs: [], outputs: [0]),
                Node(op: .neg, inputs: [2], outputs: [4]),
                Node(op: .writeSlice(axis: 0), inputs: [1, 2, 3], outputs: [5]),
                Node(op: .scale(3), inputs: [5], outputs: [6]),
            ],
            inputs: [1, 2, 3, 7], outputs: [6, 5],
            state: [StateBinding(input: 1, output: 5)])
        try Verifier.verify(input, constants: Self.constants)

        let expected = Graph(
            name: "decode",
            values: [
                Value(name: "cache", type: f32([4, 2])),
                Value(name: "upd", type: f32([1, 2])),
                Value(name: "pos", type: TensorType(.int64, [1])),
                Value(name: "cache.next", type: f32([4, 2])),
                Value(name: "out", type: f32([4, 2])),
                Value(name: "unused_in", type: f32([3])),
            ],
            nodes: [
                Node(op: .writeSlice(axis: 0), inputs: [0, 1, 2], outputs: [3]),
                Node(op: .scale(3), inputs: [3], outputs: [4]),
            ],
            inputs: [0, 1, 2, 5], outputs: [4, 3],
            state: [StateBinding(input: 0, output: 3)])

        var g = input
        XCTAssertTrue(try runPass(&g))
        XCTAssertEqual(g, expected)
        XCTAssertNoThrow(try Verifier.verify(g, constants: Self.constants))
    }

    func testLiveGraphIsUnchanged() throws {
        let b = GraphBuilder(name: "live", constants: Self.constants)
        let x = b.input("x", f32([.batch, 4]))
        let y = try b.apply(.add, x, try b.constant("w"))
        b.output(y)
        // An output that is a graph input, and a value read twice.
        b.output(x)
        b.output(try b.apply(.mul, y, y))
        var g = b.graph
        XCTAssertFalse(try runPass(&g))
        XCTAssertEqual(g, b.graph)
    }

    /// Values that nothing defines or reads are dropped even when every node is live.
    func testDropsOrphanValuesOnly() throws {
        var g = Graph(name: "o", values: [Value(name: "orphan", type: f32([1])), Value(name: "x", type: f32([2])),
                                          Value(name: "y", type: f32([2]))],
                      nodes: [Node(op: .neg, inputs: [1], outputs: [2])], inputs: [1], outputs: [2])
        XCTAssertTrue(try runPass(&g))
        XCTAssertEqual(g, Graph(name: "o", values: [Value(name: "x", type: f32([2])), Value(name: "y", type: f32([2]))],
                                nodes: [Node(op: .neg, inputs: [0], outputs: [1])], inputs: [0], outputs: [1]))
    }

    /// A graph with no outputs keeps only its inputs.
    func testNoOutputsKeepsOnlyInputs() throws {
        var g = Graph(name: "n", values: [Value(name: "x", type: f32([2])), Value(name: "y", type: f32([2]))],
                      nodes: [Node(op: .neg, inputs: [0], outputs: [1])], inputs: [0], outputs: [])
        XCTAssertTrue(try runPass(&g))
        XCTAssertEqual(g, Graph(name: "n", values: [Value(name: "x", type: f32([2]))], inputs: [0]))
    }

    func testName() {
        XCTAssertEqual(DeadCodeElimination().name, "dead-code-elimination")
    }
}
