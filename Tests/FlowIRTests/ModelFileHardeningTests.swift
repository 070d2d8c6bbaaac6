import Foundation
import XCTest
@testable import FlowIR

/// The model-file reader and the verifier against hostile or broken files: every refusal is an
/// `IRError` naming its rule, never a trap, an overflow or an absurd allocation.
final class ModelFileHardeningTests: XCTestCase {
    /// y = x · 2 + w, with one 4-float weight and metadata.
    func smallModel() throws -> Model {
        let w = WeightTensor(name: "w", dtype: .float32, shape: [4], bytes: TensorBytes(floats: [1, 2, 3, 4]))
        let b = GraphBuilder(name: "g", constants: ["w": w.graphType])
        let x = b.input("x", TensorType(.float32, [.batch, 4]))
        let y = try b.apply(.add, try b.apply(.scale(2), x), try b.constant("w"), name: "y")
        b.output(y)
        return Model(graphs: [b.graph], tensors: [w], metadata: ["a.key": .int(1), "b.key": .string("s")])
    }

    func assertRule(_ rule: String, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            guard let e = e as? IRError else { return XCTFail("not an IRError: \(e)", file: file, line: line) }
            XCTAssertEqual(e.rule, rule, "\(e)", file: file, line: line)
            XCTAssertFalse("\(e)".contains("\n"), file: file, line: line)
        }
    }

    /// Re-encodes a file whose header was changed by `edit` (prefix kept, data section kept).
    func withHeader(_ bytes: [UInt8], _ edit: (inout Flowir_ModelHeader) -> Void) throws -> [UInt8] {
        let n = Int(bytes[16]) | Int(bytes[17]) << 8 | Int(bytes[18]) << 16
        var h = try Flowir_ModelHeader(serializedBytes: Array(bytes[24..<(24 + n)]))
        edit(&h)
        let hb: [UInt8] = try h.serializedBytes()
        let dataOffset = ModelFile.align(24 + n), newOffset = ModelFile.align(24 + hb.count)
        var out = Array(bytes[0..<16])
        withUnsafeBytes(of: UInt64(hb.count).littleEndian) { out += $0 }
        out += hb
        out += [UInt8](repeating: 0, count: newOffset - out.count)
        out += bytes[dataOffset...]
        return out
    }

    func testIntactModelRoundTrips() throws {
        let bytes = try ModelFile.encode(try smallModel())
        XCTAssertEqual(try ModelFile.encode(try ModelFile.decode(bytes)), bytes)
    }

    func testNonzeroFlagsAreRefusedLikeFlowinfo() throws {
        var bytes = try ModelFile.encode(try smallModel())
        bytes[12] = 1
        assertRule("F2") { _ = try ModelFile.decode(bytes) }
        bytes[12] = 0
        bytes[15] = 0x80
        assertRule("F2") { _ = try ModelFile.decode(bytes) }
    }

    func testMetadataMustBeUniqueAndSorted() throws {
        let bytes = try ModelFile.encode(try smallModel())
        let dup = try withHeader(bytes) { h in h.metadata.append(h.metadata[1]) }
        assertRule("F9") { _ = try ModelFile.decode(dup) }
        XCTAssertThrowsError(try ModelFile.decode(dup)) { XCTAssertTrue("\($0)".contains("appears twice"), "\($0)") }
        let unsorted = try withHeader(bytes) { h in h.metadata.reverse() }
        assertRule("F9") { _ = try ModelFile.decode(unsorted) }
        let empty = try withHeader(bytes) { h in h.metadata[0].value = nil }
        assertRule("F9") { _ = try ModelFile.decode(empty) }
    }

    func testTensorOffsetsNearTheTopOfUInt64() throws {
        let bytes = try ModelFile.encode(try smallModel())
        for offset: UInt64 in [UInt64.max & ~63, 1 << 63, UInt64(bytes.count) << 6] {
            let bad = try withHeader(bytes) { h in h.tensors[0].offset = offset }
            assertRule("F4") { _ = try ModelFile.decode(bad) }
        }
        let huge = try withHeader(bytes) { h in
            h.tensors[0].shape = [Int64(Int32.max), Int64(Int32.max), 4]
            h.tensors[0].byteSize = 1 << 63
        }
        assertRule("F5") { _ = try ModelFile.decode(huge) }
        let overlap = try withHeader(bytes) { h in
            var t = h.tensors[0]
            t.name = "w2"
            h.tensors.append(t)
        }
        assertRule("F8") { _ = try ModelFile.decode(overlap) }
    }

    func testWriteRefusesATensorTableAReaderWouldRefuse() throws {
        var m = try smallModel()
        m.tensors[0].bytes = TensorBytes(floats: [1, 2, 3])  // 12 bytes for shape [4]
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("hardening-\(UUID()).tflow")
        try Data("keep".utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        assertRule("F5") { try ModelFile.write(m, to: url) }
        assertRule("F5") { _ = try ModelFile.encode(m) }
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), "keep")
        m = try smallModel()
        m.tensors.append(m.tensors[0])
        assertRule("F5") { _ = try ModelFile.encode(m) }
    }

    /// The reviewer's case: `full` of shape [2^31 − 1, 3] passed the verifier and then trapped
    /// in the executor. Sizes are now bounded (W11) in memory and in files.
    func testValueSizesAreBounded() throws {
        var m = try smallModel()
        var g = m.graphs[0]
        let big = TensorType(.float32, [.fixed(Int(Int32.max)), 3])
        g.values.append(Value(name: "big", type: big))
        g.nodes.append(Node(op: .full(value: 1, shape: big.shape), inputs: [], outputs: [g.values.count - 1]))
        g.outputs.append(g.values.count - 1)
        assertRule("W11") { try Verifier.verify(g) }
        m.graphs = [g]
        let file = try ModelFile.encode(m)  // encode does not verify; the reader must refuse it
        assertRule("W11") { _ = try ModelFile.decode(file) }

        var perRow = try smallModel().graphs[0]
        let wide = TensorType(.float32, [.batch, .fixed(1 << 30), 64])
        perRow.values.append(Value(name: "wide", type: wide))
        perRow.nodes.append(Node(op: .full(value: 0, shape: wide.shape), inputs: [], outputs: [perRow.values.count - 1]))
        assertRule("W11") { try Verifier.verify(perRow) }

        var deep = try smallModel().graphs[0]
        deep.values.append(Value(name: "deep", type: TensorType(.float32, [Dim](repeating: 1, count: 9))))
        assertRule("W11") { try Verifier.verify(deep) }

        var negative = try smallModel().graphs[0]
        negative.values.append(Value(name: "neg", type: TensorType(.float32, [-1])))
        assertRule("W11") { try Verifier.verify(negative) }
    }

    /// A graph with state `s` (f32[B,4,2]) updated by write_slice at a run-time position.
    func stateGraph() throws -> (GraphBuilder, ValueID, ValueID) {
        let b = GraphBuilder(name: "step", constants: [:])
        let s = b.input("s", TensorType(.float32, [.batch, 4, 2]))
        let u = b.input("u", TensorType(.float32, [.batch, 1, 2]))
        let p = b.input("p", TensorType(.int64, [1]))
        let next = try b.apply(.writeSlice(axis: 1), s, u, p, name: "s.next")
        return (b, s, next)
    }

    func testStateBindingsMustNotAlias() throws {
        do {  // well-formed
            let (b, s, next) = try stateGraph()
            b.output(next)
            var g = b.graph
            g.state = [StateBinding(input: s, output: next)]
            XCTAssertNoThrow(try Verifier.verify(g))
        }
        do {  // the old value is also a graph output
            let (b, s, next) = try stateGraph()
            b.output(next)
            b.output(s)
            var g = b.graph
            g.state = [StateBinding(input: s, output: next)]
            assertRule("W10") { try Verifier.verify(g) }
        }
        do {  // input bound to itself
            let (b, s, _) = try stateGraph()
            b.output(s)
            var g = b.graph
            g.state = [StateBinding(input: s, output: s)]
            assertRule("W10") { try Verifier.verify(g) }
        }
        do {  // an intermediate value of the chain is a graph output
            let (b, s, next) = try stateGraph()
            let u = b.graph.value(named: "u")!, p = b.graph.value(named: "p")!
            let next2 = try b.apply(.writeSlice(axis: 1), next, u, p, name: "s.next2")
            b.output(next)
            b.output(next2)
            var g = b.graph
            g.state = [StateBinding(input: s, output: next2)]
            assertRule("W10") { try Verifier.verify(g) }
        }
        do {  // two states share one new value
            let (b, s, next) = try stateGraph()
            let t = b.input("t", TensorType(.float32, [.batch, 4, 2]))
            b.output(next)
            var g = b.graph
            g.state = [StateBinding(input: s, output: next), StateBinding(input: t, output: next)]
            assertRule("W10") { try Verifier.verify(g) }
        }
    }

    func testShapeRulesDoNotOverflow() throws {
        let x = TensorType(.float32, [.fixed(Int(Int32.max))])
        XCTAssertThrowsError(try Op.pad(axis: 0, before: Int.max, after: 1).resultType([x]))
        XCTAssertThrowsError(try Op.concat(axis: 0).resultType([TensorType(.float32, [.fixed(Int.max)]), x]))
    }
}
