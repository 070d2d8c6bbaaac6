import FlowCompiler
import FlowIR
import XCTest

/// `BatchRows.check`: graphs whose batch rows stay apart pass (through layout ops that move
/// the batch axis, reductions over other axes, per-row gathers); each rule R1–R7 refuses a
/// graph that mixes rows, naming the node.
final class BatchRowsTests: XCTestCase {
    static let constants: [String: TensorType] = [
        "w": TensorType(.float32, [6, 4]), "b": TensorType(.float32, [6]), "m": TensorType(.float32, [4, 4]),
        "emb": TensorType(.float32, [5, 4]), "ln": TensorType(.float32, [4]),
    ]
    let B = Dim.batch

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    /// A graph over x f32[B, 3, 4] built by `body`, returning its outputs.
    func graph(_ body: (GraphBuilder, ValueID) throws -> [ValueID]) throws -> Graph {
        let b = GraphBuilder(name: "g", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        for o in try body(b, x) { b.output(o) }
        try Verifier.verify(b.graph, constants: Self.constants)
        return b.graph
    }

    func assertRefused(_ g: Graph, _ kind: BatchRows.Rule, node: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try BatchRows.check(g, symbol: "B"), file: file, line: line) { e in
            guard let e = e as? CompilerError else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertEqual(e.kind, .rowsNotIndependent, "\(e)", file: file, line: line)
            XCTAssertEqual(e.batchRowRule, kind, "\(e)", file: file, line: line)
            XCTAssertTrue(e.description.hasPrefix("graph ") && e.description.contains(node), "\(e) should name \(node)", file: file, line: line)
            XCTAssertTrue(e.description.contains("[rule \(kind.rawValue), see Spec/IR.md §6]"), e.description, file: file, line: line)
        }
    }

    /// Layout ops that move the batch axis and back, reductions and softmax over other axes,
    /// a matmul broadcast over the rows, a per-row gather, and outputs without rows.
    func testRowIndependentGraphPasses() throws {
        let b = GraphBuilder(name: "rows", constants: Self.constants)
        let x = b.input("x", f32([B, 3, 4]))
        let labels = b.input("y", TensorType(.int64, [B]))
        let scale = b.input("s", f32([1]))
        let n = try b.apply(.layerNorm(eps: 1e-5), x, try b.constant("ln"), try b.constant("ln"))
        let l = try b.apply(.linear, try b.apply(.mul, n, scale), try b.constant("w"), try b.constant("b"))   // [B,3,6]
        let t = try b.apply(.transpose(perm: [1, 0, 2]), try b.apply(.softmax(axis: 2), l))                   // [3,B,6]
        let back = try b.apply(.transpose(perm: [1, 0, 2]), try b.apply(.scale(2), t))                        // [B,3,6]
        let perRow = try b.apply(.reduceSum(axes: [1], keepDims: false), try b.apply(.reshape(shape: [B, 18]), back))
        let e = try b.apply(.reshape(shape: [B, 1, 4]), try b.apply(.gather, try b.constant("emb"), labels))
        let mm = try b.apply(.matmul(transposeA: false, transposeB: false), x, try b.constant("m"))           // [B,3,4]
        let cat = try b.apply(.concat(axis: 1), try b.apply(.add, mm, e), try b.apply(.flip(axis: 2), x))      // [B,6,4]
        b.output(perRow)
        b.output(try b.apply(.reduceMean(axes: [1, 2], keepDims: true), cat))
        b.output(cat)
        b.output(try b.apply(.reduceMean(axes: [0], keepDims: false), try b.constant("w")))                  // the same for all rows
        try Verifier.verify(b.graph, constants: Self.constants)
        XCTAssertNoThrow(try BatchRows.check(b.graph, symbol: "B"))
        // Another symbol's rows: B is just a dimension then, and nothing holds rows of "N".
        XCTAssertNoThrow(try BatchRows.check(b.graph, symbol: "N"))
    }

    func testGraphsThatMixRowsAreRefused() throws {
        // R2: the loss of a batch, a mean over its rows.
        assertRefused(try graph { b, x in [try b.apply(.reduceMean(axes: [0, 1, 2], keepDims: false), x, name: "loss")] }, .reducesRows, node: "%loss")
        assertRefused(try graph { b, x in [try b.apply(.softmax(axis: 0), x, name: "p")] }, .reducesRows, node: "softmax -> %p")
        // R3: a Gram matrix over the rows.
        assertRefused(try graph { b, x in
            let a = try b.apply(.reshape(shape: [B, 12]), x)
            return [try b.apply(.matmul(transposeA: true, transposeB: false), a, a, name: "gram")]
        }, .contractsRows, node: "%gram")
        // R4: a reshape that moves the rows into the middle.
        assertRefused(try graph { b, x in [try b.apply(.reshape(shape: [3, B, 4]), x, name: "r")] }, .reshapesRows, node: "%r")
        // R5: reversing the batch.
        assertRefused(try graph { b, x in [try b.apply(.flip(axis: 0), x, name: "f")] }, .indexesRows, node: "%f")
        // R6: every row against every other (an outer product), by matmul and by broadcasting.
        assertRefused(try graph { b, x in
            let a = try b.apply(.reshape(shape: [B, 12]), x)
            return [try b.apply(.matmul(transposeA: false, transposeB: true), a, a, name: "pairs")]
        }, .operandsDisagree, node: "%pairs")
        assertRefused(try graph { b, x in
            let r = try b.apply(.reshape(shape: [B, 1]), try b.apply(.reduceSum(axes: [1, 2], keepDims: false), x))
            return [try b.apply(.sub, r, try b.apply(.transpose(perm: [1, 0]), r), name: "d")]
        }, .operandsDisagree, node: "%d")
        // R1: a fill over rows × rows; an input with the rows on its second axis.
        assertRefused(try graph { b, x in [x, try b.apply(.full(value: 1, shape: [B, B]), inputs: [], name: "ones")] }, .symbolPlacement, node: "%ones")
        let b = GraphBuilder(name: "g", constants: Self.constants)
        b.output(try b.apply(.neg, b.input("cols", f32([4, B]))))
        assertRefused(b.graph, .symbolPlacement, node: "input 'cols'")
        // R7: rows returned on axis 1.
        assertRefused(try graph { b, x in [try b.apply(.transpose(perm: [1, 0, 2]), x, name: "t")] }, .outputLayout, node: "output 't'")
    }

    /// The first node that mixes rows is the one named, even when later ones do too.
    func testErrorNamesTheFirstMixingNode() throws {
        let g = try graph { b, x in
            let fine = try b.apply(.neg, x, name: "fine")
            let first = try b.apply(.softmax(axis: 0), fine, name: "first")
            return [first, try b.apply(.reduceSum(axes: [0], keepDims: false), x, name: "second")]
        }
        assertRefused(g, .reducesRows, node: "node 1 (softmax -> %first)")
    }
}
