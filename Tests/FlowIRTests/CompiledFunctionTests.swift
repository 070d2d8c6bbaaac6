import XCTest
@testable import FlowIR

/// SHA-256 against FIPS 180-4 examples, and compiled functions through the file format.
final class CompiledFunctionTests: XCTestCase {
    func testSHA256KnownAnswers() {
        XCTAssertEqual(SHA256.hex(SHA256.hash([])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(SHA256.hash(Array("abc".utf8))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hex(SHA256.hash([UInt8](repeating: 0x61, count: 1_000_000))),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Lengths around the padding boundary (55, 56, 64 bytes) differ from each other.
        let ds = [55, 56, 63, 64, 65].map { SHA256.hash([UInt8](repeating: 1, count: $0)) }
        XCTAssertEqual(Set(ds.map { SHA256.hex($0) }).count, 5)
    }

    func model() throws -> Model { try Self.model() }

    /// A one-linear model with a hand-made compiled function: round trip, determinism, F11/F12.
    static func model() throws -> Model {
        let c: [String: TensorType] = ["w": TensorType(.float32, [6, 8])]
        let b = GraphBuilder(name: "forward", constants: c)
        let x = b.input("x", TensorType(.float32, [.batch, 4, 8]))
        let w = try b.constant("w")
        b.rename(w, "w")
        b.output(try b.apply(.linear, x, w, name: "y"))
        var m = Model(graphs: [b.graph], tensors: [WeightTensor(name: "w", dtype: .float32, shape: [6, 8], bytes: TensorBytes(floats: [Float](repeating: 0.5, count: 48)))], metadata: [:])
        let plan = CompiledFunction.Plan(bindings: ["B": 2], buffer: [0, nil, 1], offsets: [0, 256], sizes: [256, 192], arenaBytes: 448, naiveBytes: 448)
        m.compiled = [CompiledFunction(name: "forward", source: "forward", sourceDigest: try XCTUnwrap(m.sourceDigest(of: "forward")),
                                       graph: b.graph, passes: [], plans: [plan])]
        return m
    }

    func testRoundTripAndDeterminism() throws {
        let m = try model()
        let bytes = try ModelFile.encode(m)
        let back = try ModelFile.decode(bytes)
        XCTAssertEqual(back.compiled, m.compiled)
        XCTAssertEqual(try ModelFile.encode(back), bytes)
        // The same digest as `Tools/flowinfo/testdata/compiled.txtpb` states (computed there with protoc).
        XCTAssertEqual(SHA256.hex(m.compiled[0].sourceDigest), "964d1abf9ce96971a3a13bbc08120596e29ce09d111c3079bb4176493818f7c3")
        // A file without compiled functions is unchanged by the new field.
        var plain = m
        plain.compiled = []
        XCTAssertEqual(try ModelFile.decode(try ModelFile.encode(plain)).compiled, [])
        XCTAssertEqual(try ModelFile.decode(bytes, compiledFunctions: .drop).compiled, [])
        // Streaming encode gives the same bytes as the array form.
        var streamed: [UInt8] = []
        try ModelFile.encode(m) { streamed += $0 }
        XCTAssertEqual(streamed, bytes)
    }

    func testRulesOnReading() throws {
        var m = try model()
        m.compiled[0].sourceDigest[0] ^= 1
        XCTAssertThrowsError(try ModelFile.decode(try ModelFile.encode(m))) { XCTAssertEqual(($0 as? IRError)?.rule, "F12") }
        m = try model()
        m.compiled[0].sourceDigest = [1, 2, 3]
        XCTAssertThrowsError(try ModelFile.decode(try ModelFile.encode(m))) { XCTAssertEqual(($0 as? IRError)?.rule, "F11") }
        m = try model()
        m.compiled[0].graph.name = "other"
        XCTAssertThrowsError(try ModelFile.decode(try ModelFile.encode(m))) { XCTAssertEqual(($0 as? IRError)?.rule, "F11") }
        m = try model()
        m.compiled[0].plans[0].buffer.append(nil)
        XCTAssertThrowsError(try ModelFile.decode(try ModelFile.encode(m))) { XCTAssertEqual(($0 as? IRError)?.rule, "F14") }
        m = try model()
        m.compiled[0].plans[0].buffer[0] = 7
        XCTAssertThrowsError(try ModelFile.decode(try ModelFile.encode(m))) { XCTAssertEqual(($0 as? IRError)?.rule, "F14") }
        m = try model()
        m.compiled[0].plans[0].bindings = ["B": -1]
        XCTAssertThrowsError(try ModelFile.decode(try ModelFile.encode(m))) { XCTAssertEqual(($0 as? IRError)?.rule, "F13") }
    }

    /// The hand-written encoding behind the digest equals SwiftProtobuf's, edge cases included.
    func testCanonicalEncodingMatchesSwiftProtobuf() throws {
        var g = Flowir_Graph()
        g.name = "édge"
        var v = Flowir_Value()
        v.name = "x"
        v.dtype = .int64
        var d0 = Flowir_Dim(); d0.size = 0
        var d1 = Flowir_Dim(); d1.symbol = "B"
        var d2 = Flowir_Dim(); d2.size = Int64(Int32.max)
        v.shape = [d0, d1, d2, Flowir_Dim()]
        g.values = [v, Flowir_Value()]
        var n = Flowir_Node()
        n.op = .opAttention
        n.inputs = [0, 1, 300, 0]
        n.outputs = [70000]
        n.tensor = "w"
        n.value = -0.0
        n.shape = [d1, d0]
        n.axis = -1
        n.axes = [0, -5, 1 << 40]
        n.perm = [3, 2]
        n.start = -(1 << 31); n.end = 1 << 31; n.before = 1; n.after = -2
        n.eps = .infinity
        n.transposeA = true; n.keepDims = true
        n.heads = 12; n.mask = .afterPosition; n.offsets = [0, 64, 128]; n.rowScale = true
        n.activation = .gelu; n.withBias = true; n.withResidual = true; n.withScale = true; n.flip = true
        var n2 = Flowir_Node()
        n2.value = -.infinity
        n2.op = .UNRECOGNIZED(-3)
        g.nodes = [n, n2, Flowir_Node()]
        g.inputs = [0]
        g.outputs = [1, 0]
        var st = Flowir_StateBinding(); st.input = 0; st.output = 5
        g.state = [st, Flowir_StateBinding()]
        XCTAssertEqual(CanonicalEncoding.graph(g), try CanonicalEncoding.reference(g))
        XCTAssertEqual(CanonicalEncoding.graph(Flowir_Graph()), try CanonicalEncoding.reference(Flowir_Graph()))
        var t = Flowir_TensorInfo()
        t.name = "blocks.0.w"; t.dtype = .bfloat16; t.shape = [0, 3, 1 << 33]; t.offset = 64; t.byteSize = 1 << 40
        XCTAssertEqual(CanonicalEncoding.tensorInfo(t), try CanonicalEncoding.reference(t))
        XCTAssertEqual(CanonicalEncoding.tensorInfo(Flowir_TensorInfo()), try CanonicalEncoding.reference(Flowir_TensorInfo()))
    }
}
