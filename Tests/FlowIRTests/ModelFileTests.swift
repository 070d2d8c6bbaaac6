import Foundation
import SwiftProtobuf
import XCTest

@testable import FlowIR

/// The model file format (Spec/ModelFile.md): round trip, determinism, byte layout, every
/// reader rule F1–F10 on crafted files, widening of f16/bf16, reading by `mmap`, truncation.
final class ModelFileTests: XCTestCase {
    // MARK: - A model that uses every op, every dtype and every kind of metadata

    static func f32Tensor(_ name: String, _ shape: [Int], seed: Int) -> WeightTensor {
        let n = elementCount(shape)!
        let v = (0..<n).map { Float(($0 * 7 + seed * 13) % 23) / 8 - 1.25 }
        return WeightTensor(name: name, dtype: .float32, shape: shape, bytes: TensorBytes(floats: v))
    }

    static func rawTensor<T>(_ name: String, _ dtype: DType, _ shape: [Int], _ elements: [T]) -> WeightTensor {
        WeightTensor(name: name, dtype: dtype, shape: shape, bytes: TensorBytes(copying: elements.withUnsafeBytes { $0 }))
    }

    /// Tensors in table order: f32 (48 bytes, so padded), f16, bf16, i64, an empty one, f32.
    static func sampleTensors() -> [WeightTensor] {
        [
            f32Tensor("bias", [6], seed: 1),
            rawTensor("emb", .bfloat16, [3, 6], (0..<18).map { UInt16(0x3F80 + $0 * 3) }),
            rawTensor("half", .float16, [6], [UInt16(0x3C00), 0x3555, 0x0001, 0x8000, 0x7BFF, 0xC000]),
            rawTensor("idx", .int64, [3], [Int64(-1), 0, Int64.max]),
            f32Tensor("nothing", [0, 3], seed: 2),
            f32Tensor("w", [6, 6], seed: 3),
        ]
    }

    /// A graph that applies every op of the closed set, with every attribute field set.
    static func kitchenGraph(_ constants: [String: TensorType]) throws -> Graph {
        let B = Dim.batch
        let b = GraphBuilder(name: "kitchen", constants: constants)
        let x = b.input("x", TensorType(.float32, [B, 4, 6]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        let ids = b.input("ids", TensorType(.int64, [B]))
        let cache = b.input("cache", TensorType(.float32, [B, 8, 6]))
        let w = try b.constant("w"), bias = try b.constant("bias"), half = try b.constant("half")
        let t1 = try b.apply(.linear, x, w, bias)
        let t1b = try b.apply(.linear, t1, w)
        let t2 = try b.apply(.layerNorm(eps: 1e-5), t1b, half, bias)
        let t3 = try b.apply(.matmul(transposeA: false, transposeB: true), t2, t2)
        let t4 = try b.apply(.causalMask(value: -.infinity), t3)
        let t5 = try b.apply(.softmax(axis: 2), t4)
        let t6 = try b.apply(.matmul(transposeA: true, transposeB: false), t5, t2)
        var u = try b.apply(.gelu, t6)
        for op in [Op.exp, .sqrt, .log, .erf, .neg, .scale(0.5)] { u = try b.apply(op, u) }
        let t8 = try b.apply(.div, try b.apply(.mul, try b.apply(.sub, u, t6), t2), try b.apply(.add, t6, t2))
        let t10 = try b.apply(.reshape(shape: [B, 4, 6]), try b.apply(.reshape(shape: [24, B]), t8))
        let t11 = try b.apply(.transpose(perm: [0, 2, 1]), t10)
        let t12 = try b.apply(.slice(axis: 2, start: 1, end: 3), t11)
        let t13 = try b.apply(.concat(axis: 2), t12, t12, t12)
        let t14 = try b.apply(.flip(axis: 1), t13)
        let t15 = try b.apply(.pad(axis: 2, before: 1, after: 2), t14)
        let g = try b.apply(.gather, try b.constant("emb"), ids)
        let r = try b.apply(.add, try b.apply(.reduceSum(axes: [2], keepDims: false), t15), g)
        let rm = try b.apply(.reduceMean(axes: [1, 2], keepDims: true), t15)
        let f = try b.apply(.full(value: 2, shape: [B, 1, 1]), name: "two")
        let m = try b.apply(.maskAfter(value: -1e9), try b.apply(.mul, rm, f), pos)
        let next = try b.apply(.writeSlice(axis: 1), cache, x, pos, name: "cache.next")
        let idx = try b.apply(.reshape(shape: [1, 3]), try b.constant("idx"))
        b.rename(r, "r")
        b.rename(m, "m")
        b.rename(idx, "indices")
        for o in [r, m, idx, next] { b.output(o) }
        var graph = b.graph
        graph.state = [StateBinding(input: cache, output: next)]
        return graph
    }

    static func sampleModel() throws -> Model {
        let tensors = sampleTensors()
        var m = Model(graphs: [], tensors: tensors, metadata: [
            "tarflow.img_size": .int(8),
            "neg": .int(-5),
            "source.file": .string("model_ünïcode.pth"),
            "tarflow.noise_std": .double(0.07),
            "tarflow.nvp": .bool(true),
        ])
        let small = GraphBuilder(name: "small", constants: m.constantTypes)
        let sx = small.input("x", TensorType(.float32, [.batch, 6]))
        small.output(try small.apply(.linear, sx, try small.constant("w"), name: "y"))
        m.graphs = [try kitchenGraph(m.constantTypes), small.graph]
        try m.verify()
        return m
    }

    /// Two models hold the same content: graphs, tensor table with bytes, metadata.
    func assertSameModel(_ a: Model, _ b: Model, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.graphs, b.graphs, "graphs", file: file, line: line)
        XCTAssertEqual(a.metadata, b.metadata, "metadata", file: file, line: line)
        XCTAssertEqual(a.tensors.map(\.name), b.tensors.map(\.name), file: file, line: line)
        for (s, t) in zip(a.tensors, b.tensors) {
            XCTAssertEqual(s.dtype, t.dtype, s.name, file: file, line: line)
            XCTAssertEqual(s.shape, t.shape, s.name, file: file, line: line)
            XCTAssertEqual(s.layout, t.layout, s.name, file: file, line: line)
            XCTAssertEqual(Array(s.bytes.buffer), Array(t.bytes.buffer), "bytes of \(s.name)", file: file, line: line)
        }
    }

    // MARK: - Crafting files by hand

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    /// Prefix + header bytes + zero padding to 64 + data, with every prefix field overridable.
    static func assemble(headerBytes: [UInt8], data: [UInt8] = [], magic: [UInt8] = ModelFile.magic, version: UInt32 = 1,
                         flags: UInt32 = 0, headerLength: UInt64? = nil, pad: Bool = true) -> [UInt8] {
        var out = magic + le(version) + le(flags) + le(headerLength ?? UInt64(headerBytes.count)) + headerBytes
        if pad { out += [UInt8](repeating: 0, count: (64 - out.count % 64) % 64) }
        return out + data
    }

    static func assemble(_ h: Flowir_ModelHeader, data: [UInt8] = [], version: UInt32 = 1, flags: UInt32 = 0) throws -> [UInt8] {
        assemble(headerBytes: try h.serializedBytes(), data: data, version: version, flags: flags)
    }

    static func info(_ name: String, _ dtype: Flowir_DType = .float32, shape: [Int64], offset: UInt64, byteSize: UInt64) -> Flowir_TensorInfo {
        var t = Flowir_TensorInfo()
        t.name = name
        t.dtype = dtype
        t.shape = shape
        t.offset = offset
        t.byteSize = byteSize
        return t
    }

    /// A valid header: one f32[4] tensor "t" at offset 0 (the data is 64 bytes).
    static func baseHeader() -> Flowir_ModelHeader {
        var h = Flowir_ModelHeader()
        h.formatVersion = 1
        h.tensors = [info("t", shape: [4], offset: 0, byteSize: 16)]
        return h
    }

    static let baseData = le(Float(1.5).bitPattern) + [UInt8](repeating: 0, count: 60)

    /// A graph `y = neg(x)` over f32[B,4] in protobuf form, to mutate.
    static func protoGraph(_ name: String = "g") -> Flowir_Graph {
        var g = Flowir_Graph()
        g.name = name
        var x = Flowir_Value(), y = Flowir_Value()
        x.name = "x"
        y.name = "y"
        x.dtype = .float32
        y.dtype = .float32
        var b = Flowir_Dim(), four = Flowir_Dim()
        b.symbol = "B"
        four.size = 4
        x.shape = [b, four]
        y.shape = [b, four]
        g.values = [x, y]
        var n = Flowir_Node()
        n.op = .opNeg
        n.inputs = [0]
        n.outputs = [1]
        g.nodes = [n]
        g.inputs = [0]
        g.outputs = [1]
        return g
    }

    /// Asserts that decoding `bytes` throws an IRError citing `rule` and saying `fragment`.
    func assertRule(_ rule: String, _ bytes: [UInt8], says fragment: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try ModelFile.decode(bytes)
            XCTFail("expected a \(rule) error, the file decoded", file: file, line: line)
        } catch let e as IRError {
            XCTAssertEqual(e.rule, rule, "wrong rule: \(e)", file: file, line: line)
            if let fragment { XCTAssertTrue(e.description.contains(fragment), "'\(e)' does not say '\(fragment)'", file: file, line: line) }
        } catch {
            XCTFail("expected IRError \(rule), got \(type(of: error)): \(error)", file: file, line: line)
        }
    }

    // MARK: - Round trip and determinism

    func testRoundTrip() throws {
        let m = try Self.sampleModel()
        let bytes = try ModelFile.encode(m)
        let back = try ModelFile.decode(bytes)
        assertSameModel(m, back)
        XCTAssertEqual(back.tensor(named: "half")?.dtype, .float16)
        XCTAssertEqual(back.tensor(named: "idx")?.int64s(), [-1, 0, Int64.max])
        XCTAssertEqual(try ModelFile.encode(back), bytes)
    }

    func testEncodingIsDeterministic() throws {
        let m = try Self.sampleModel()
        let a = try ModelFile.encode(m)
        XCTAssertEqual(try ModelFile.encode(m), a)
        // The same metadata built in another order, and fresh copies of the tensor bytes.
        var n = try Self.sampleModel()
        n.metadata = [:]
        for k in m.metadata.keys.sorted().reversed() { n.metadata[k] = m.metadata[k] }
        n.tensors = Self.sampleTensors()
        XCTAssertEqual(try ModelFile.encode(n), a)
    }

    func testByteLayout() throws {
        let m = try Self.sampleModel()
        let bytes = try ModelFile.encode(m)
        XCTAssertEqual(Array(bytes[0..<8]), Array("TFLOWMDL".utf8))
        XCTAssertEqual(Array(bytes[8..<12]), [1, 0, 0, 0])
        XCTAssertEqual(Array(bytes[12..<16]), [0, 0, 0, 0])
        let n = bytes[16..<24].reversed().reduce(0) { $0 << 8 | Int($1) }
        let header = try Flowir_ModelHeader(serializedBytes: Array(bytes[24..<(24 + n)]))
        XCTAssertEqual(header.formatVersion, 1)
        let dataOffset = (24 + n + 63) / 64 * 64
        XCTAssertTrue(bytes[(24 + n)..<dataOffset].allSatisfy { $0 == 0 }, "header padding is zero")
        XCTAssertEqual(bytes.count % 64, 0)
        XCTAssertEqual(header.metadata.map(\.key), m.metadata.keys.sorted())
        // Tensors in table order, 64-aligned, each at the end of the previous rounded up.
        var expected: UInt64 = 0
        XCTAssertEqual(header.tensors.map(\.name), m.tensors.map(\.name))
        for (info, t) in zip(header.tensors, m.tensors) {
            XCTAssertEqual(info.offset, expected, info.name)
            XCTAssertEqual(info.byteSize, UInt64(t.bytes.count), info.name)
            let start = dataOffset + Int(info.offset), end = start + t.bytes.count
            XCTAssertEqual(Array(bytes[start..<end]), Array(t.bytes.buffer), info.name)
            let padEnd = (end + 63) / 64 * 64
            XCTAssertTrue(bytes[end..<padEnd].allSatisfy { $0 == 0 }, "padding after \(info.name)")
            expected = (info.offset + info.byteSize + 63) / 64 * 64
        }
        XCTAssertEqual(bytes.count, dataOffset + Int(expected))
        // Writers leave attribute fields an op does not read at their defaults.
        let neg = header.graphs[0].nodes.first { $0.op == .opNeg }
        XCTAssertEqual(neg?.value, 0)
        XCTAssertEqual(neg?.axis, 0)
        XCTAssertEqual(neg?.shape, [])
    }

    /// A reader accepts tensors in any order, gaps, trailing bytes and unknown header fields.
    func testReaderAcceptsAnyValidPlacement() throws {
        var h = Self.baseHeader()
        h.tensors = [Self.info("late", shape: [2], offset: 128, byteSize: 8), Self.info("early", shape: [1], offset: 0, byteSize: 4)]
        var data = [UInt8](repeating: 0, count: 200)
        data.replaceSubrange(0..<4, with: Self.le(Float(3).bitPattern))
        data.replaceSubrange(128..<136, with: Self.le(Float(-1).bitPattern) + Self.le(Float(2).bitPattern))
        // Field 99 (varint 1), unknown to this reader.
        var headerBytes: [UInt8] = try h.serializedBytes()
        headerBytes += [0x98, 0x06, 0x01]
        let m = try ModelFile.decode(Self.assemble(headerBytes: headerBytes, data: data))
        XCTAssertEqual(m.tensors.map(\.name), ["late", "early"])
        XCTAssertEqual(m.tensor(named: "late")?.floats(), [-1, 2])
        XCTAssertEqual(m.tensor(named: "early")?.floats(), [3])
        // A repeated metadata key is refused (F9): a key has one meaning.
        var k1 = Flowir_Metadata(), k2 = Flowir_Metadata()
        k1.key = "k"
        k1.intValue = 1
        k2.key = "k"
        k2.intValue = 2
        h = Self.baseHeader()
        h.metadata = [k1, k2]
        XCTAssertThrowsError(try ModelFile.decode(Self.assemble(h, data: Self.baseData))) { XCTAssertEqual(($0 as? IRError)?.rule, "F9") }
        // A zero-size tensor may share an offset with the tensor after it (ties keep table order).
        h = Self.baseHeader()
        h.tensors.insert(Self.info("empty", shape: [0], offset: 0, byteSize: 0), at: 0)
        XCTAssertEqual(try ModelFile.decode(Self.assemble(h, data: Self.baseData)).tensors.count, 2)
        // No tensors, no data section at all.
        var bare = Flowir_ModelHeader()
        bare.formatVersion = 1
        let empty = try ModelFile.decode(Self.assemble(headerBytes: try bare.serializedBytes(), pad: false))
        XCTAssertTrue(empty.tensors.isEmpty && empty.graphs.isEmpty)
    }

    // MARK: - Rules F1–F10

    func testBaseFileIsValid() throws {
        let m = try ModelFile.decode(try Self.assemble(Self.baseHeader(), data: Self.baseData))
        XCTAssertEqual(m.tensors.first?.floats(), [1.5, 0, 0, 0])
    }

    func testF1Magic() throws {
        let good = try Self.assemble(Self.baseHeader(), data: Self.baseData)
        assertRule("F1", Array(good[0..<23]), says: "file is 23 bytes, too short for a model file")
        assertRule("F1", [], says: "file is 0 bytes")
        assertRule("F1", Self.assemble(headerBytes: try Self.baseHeader().serializedBytes(), data: Self.baseData, magic: Array("TFLOWMDX".utf8)),
                   says: "not a model file (bad magic)")
        var swapped = good
        swapped.swapAt(0, 1)
        assertRule("F1", swapped)
    }

    func testF2Version() throws {
        assertRule("F2", try Self.assemble(Self.baseHeader(), data: Self.baseData, version: 2),
                   says: "format version 2 is not supported (this build reads version 1)")
        assertRule("F2", try Self.assemble(Self.baseHeader(), data: Self.baseData, version: 0))
        var h = Self.baseHeader()
        h.formatVersion = 2
        assertRule("F2", try Self.assemble(h, data: Self.baseData), says: "header says format version 2, file prefix says 1")
        h.formatVersion = 0
        assertRule("F2", try Self.assemble(h, data: Self.baseData))
    }

    func testF3Header() throws {
        let hb: [UInt8] = try Self.baseHeader().serializedBytes()
        // Header length one past the end of the file.
        let exact = Self.assemble(headerBytes: hb, pad: false)
        assertRule("F3", Self.assemble(headerBytes: hb, headerLength: UInt64(hb.count + 1), pad: false),
                   says: "header length \(hb.count + 1) runs past the end of the \(exact.count)-byte file (truncated?)")
        assertRule("F3", Self.assemble(headerBytes: hb, data: Self.baseData, headerLength: UInt64.max))
        assertRule("F3", Self.assemble(headerBytes: hb, data: Self.baseData, headerLength: UInt64(Int.max) + 1))
        // Bytes that are not a protobuf message: a truncated varint, then a length past the end.
        assertRule("F3", Self.assemble(headerBytes: [0x08, 0xFF], data: Self.baseData), says: "header is not a valid ModelHeader protobuf")
        assertRule("F3", Self.assemble(headerBytes: [0x12, 0x7F, 0x01], data: Self.baseData))
        // A header length shorter than the real header cuts the message.
        assertRule("F3", Self.assemble(headerBytes: hb, data: Self.baseData, headerLength: UInt64(hb.count - 1)))
    }

    func testF4TensorInsideDataSection() throws {
        var h = Self.baseHeader()
        h.tensors = [Self.info("t", shape: [4], offset: 64, byteSize: 16)]
        assertRule("F4", try Self.assemble(h, data: Self.baseData), says: "tensor 't': bytes 64..<80 lie outside the 64-byte data section")
        h.tensors = [Self.info("t", shape: [17], offset: 0, byteSize: 68)]
        assertRule("F4", try Self.assemble(h, data: Self.baseData))
        // An offset near UInt64.max must be refused, not overflow.
        h.tensors = [Self.info("t", shape: [32], offset: UInt64.max - 63, byteSize: 128)]
        assertRule("F4", try Self.assemble(h, data: Self.baseData), says: "tensor 't': bytes 18446744073709551552..<")
        h.tensors = [Self.info("t", shape: [4], offset: UInt64(Int.max) + 1, byteSize: 16)]
        assertRule("F4", try Self.assemble(h, data: Self.baseData))
        // The file ends before the data section starts.
        let hb: [UInt8] = try Self.baseHeader().serializedBytes()
        XCTAssertNotEqual((24 + hb.count) % 64, 0)
        assertRule("F4", Self.assemble(headerBytes: hb, pad: false), says: "data section starts past the end of the file (truncated?)")
    }

    func testF5TensorEntries() throws {
        func with(_ t: Flowir_TensorInfo, _ extra: [Flowir_TensorInfo] = []) throws -> [UInt8] {
            var h = Self.baseHeader()
            h.tensors = extra + [t]
            return try Self.assemble(h, data: Self.baseData + Self.baseData)
        }
        assertRule("F5", try with(Self.info("", shape: [4], offset: 0, byteSize: 16)), says: "tensor name '' is empty or used twice")
        assertRule("F5", try with(Self.info("t", shape: [4], offset: 64, byteSize: 16), [Self.info("t", shape: [4], offset: 0, byteSize: 16)]),
                   says: "tensor name 't' is empty or used twice")
        assertRule("F5", try with(Self.info("t", .unspecified, shape: [4], offset: 0, byteSize: 16)), says: "tensor 't': unknown dtype 0")
        assertRule("F5", try with(Self.info("t", .UNRECOGNIZED(9), shape: [4], offset: 0, byteSize: 16)), says: "unknown dtype 9")
        assertRule("F5", try with(Self.info("t", shape: [-1], offset: 0, byteSize: 16)), says: "tensor 't': invalid shape [-1]")
        assertRule("F5", try with(Self.info("t", shape: [1 << 31], offset: 0, byteSize: 16)), says: "invalid shape")
        assertRule("F5", try with(Self.info("t", shape: [1, 1, 1, 1, 1, 1, 1, 1, 4], offset: 0, byteSize: 16)), says: "invalid shape")
        let big = Int64(Int32.max)
        assertRule("F5", try with(Self.info("t", shape: [big, big, big], offset: 0, byteSize: 16)), says: "invalid shape")
        assertRule("F5", try with(Self.info("t", shape: [4], offset: 0, byteSize: 15)), says: "tensor 't': byte_size 15 but shape [4] of f32 needs 16")
        assertRule("F5", try with(Self.info("t", .float16, shape: [4], offset: 0, byteSize: 16)), says: "needs 8")
        assertRule("F5", try with(Self.info("t", .int64, shape: [4], offset: 0, byteSize: 16)), says: "needs 32")
        // F5 is checked before F6 and F4 of the same entry.
        assertRule("F5", try with(Self.info("t", shape: [4], offset: 1 << 40, byteSize: 15)))
    }

    func testF6Alignment() throws {
        var h = Self.baseHeader()
        h.tensors = [Self.info("t", shape: [4], offset: 32, byteSize: 16)]
        assertRule("F6", try Self.assemble(h, data: Self.baseData), says: "tensor 't': offset 32 is not a multiple of 64")
        // F6 is checked before F4: misaligned and outside the data section.
        h.tensors = [Self.info("t", shape: [4], offset: 1000, byteSize: 16)]
        assertRule("F6", try Self.assemble(h, data: Self.baseData))
    }

    func testF7GraphNames() throws {
        var h = Self.baseHeader()
        h.graphs = [Self.protoGraph("g"), Self.protoGraph("h"), Self.protoGraph("g")]
        assertRule("F7", try Self.assemble(h, data: Self.baseData), says: "graph name 'g' is used twice")
        h.graphs = [Self.protoGraph("g"), Self.protoGraph("h")]
        XCTAssertEqual(try ModelFile.decode(try Self.assemble(h, data: Self.baseData)).graphs.map(\.name), ["g", "h"])
        // The writer checks F7 too.
        var m = try Self.sampleModel()
        m.graphs.append(m.graphs[1])
        XCTAssertThrowsError(try ModelFile.write(m, to: FileManager.default.temporaryDirectory.appendingPathComponent("f7-\(UUID()).tflow"))) {
            XCTAssertEqual(($0 as? IRError)?.rule, "F7")
        }
    }

    func testF8Overlap() throws {
        var h = Self.baseHeader()
        h.tensors = [Self.info("a", shape: [32], offset: 0, byteSize: 128), Self.info("b", shape: [16], offset: 64, byteSize: 64)]
        let data = Self.baseData + Self.baseData
        assertRule("F8", try Self.assemble(h, data: data), says: "tensors 'a' and 'b' overlap")
        // Sorted by offset, whatever the table order.
        h.tensors.reverse()
        assertRule("F8", try Self.assemble(h, data: data), says: "tensors 'a' and 'b' overlap")
        // The same bytes twice.
        h.tensors = [Self.info("a", shape: [4], offset: 0, byteSize: 16), Self.info("b", shape: [4], offset: 0, byteSize: 16)]
        assertRule("F8", try Self.assemble(h, data: data))
        // Adjacent tensors do not overlap.
        h.tensors = [Self.info("a", shape: [16], offset: 0, byteSize: 64), Self.info("b", shape: [16], offset: 64, byteSize: 64)]
        XCTAssertNoThrow(try ModelFile.decode(try Self.assemble(h, data: data)))
    }

    func testF9MetadataValue() throws {
        var h = Self.baseHeader()
        var m = Flowir_Metadata()
        m.key = "tarflow.channels"
        h.metadata = [m]
        assertRule("F9", try Self.assemble(h, data: Self.baseData), says: "metadata 'tarflow.channels' has no value")
        m.boolValue = false
        h.metadata = [m]
        XCTAssertEqual(try ModelFile.decode(try Self.assemble(h, data: Self.baseData)).metadata, ["tarflow.channels": .bool(false)])
    }

    /// The base file with its graph edited.
    static func file(_ edit: (inout Flowir_Graph) -> Void) throws -> [UInt8] {
        var h = baseHeader()
        var g = protoGraph()
        edit(&g)
        h.graphs = [g]
        return try assemble(h, data: baseData)
    }

    func testF10GraphDecoding() throws {
        let file = Self.file
        XCTAssertNoThrow(try ModelFile.decode(try file { _ in }))
        assertRule("F10", try file { $0.nodes[0].op = .UNRECOGNIZED(99) }, says: "unknown op code 99; the file may come from a newer tarflow")
        assertRule("F10", try file { $0.nodes[0].op = .opUnspecified }, says: "unknown op code 0")
        assertRule("F10", try file { $0.values[1].dtype = .unspecified }, says: "value 'y' has unknown dtype")
        assertRule("F10", try file { $0.values[1].dtype = .UNRECOGNIZED(5) })
        assertRule("F10", try file { $0.values[1].shape = [Flowir_Dim](repeating: $0.values[1].shape[1], count: 9) }, says: "value 'y' has rank 9 > 8")
        assertRule("F10", try file { $0.values[1].shape[1] = Flowir_Dim() }, says: "dimension has neither size nor symbol")
        assertRule("F10", try file { $0.values[1].shape[1].size = -1 }, says: "dimension size -1 out of range")
        assertRule("F10", try file { $0.values[1].shape[1].size = 1 << 31 }, says: "out of range")
        assertRule("F10", try file { $0.values[1].shape[0].symbol = "" }, says: "empty dimension symbol")
        assertRule("F10", try file { $0.nodes[0].op = .opSoftmax; $0.nodes[0].axis = (1 << 31) + 1 }, says: "axis 2147483649 out of range")
        assertRule("F10", try file { $0.nodes[0].op = .opSlice; $0.nodes[0].end = -(1 << 32) })
        assertRule("F10", try file { $0.nodes[0].op = .opTranspose; $0.nodes[0].perm = Array(0..<9) }, says: "perm has more than 8 entries")
        assertRule("F10", try file { $0.nodes[0].op = .opReduceSum; $0.nodes[0].axes = Array(0..<9) })
        assertRule("F10", try file {
            var d = Flowir_Dim()
            d.size = 1
            $0.nodes[0].op = .opReshape
            $0.nodes[0].shape = [Flowir_Dim](repeating: d, count: 9)
        }, says: "shape attribute has rank > 8")
    }

    /// After F1–F10 the reader runs the graph rules, against the file's tensor table.
    func testGraphRulesRunOnRead() throws {
        let file = Self.file
        assertRule("W1", try file { $0.nodes[0].inputs = [7] }, says: "value index 7 out of range (2 values)")
        assertRule("W1", try file { $0.outputs = [UInt32.max] })
        assertRule("W4", try file { $0.nodes[0].outputs = [] })
        assertRule("W5", try file { $0.values[1].shape[1].size = 5 })
        // A constant not in the tensor table, and one whose type differs from its entry.
        assertRule("W6", try file { $0.nodes[0] = Flowir_Node(); $0.nodes[0].op = .opConstant; $0.nodes[0].tensor = "nope"; $0.nodes[0].outputs = [1] })
        assertRule("W6", try file {
            $0.nodes[0] = Flowir_Node()
            $0.nodes[0].op = .opConstant
            $0.nodes[0].tensor = "t"
            $0.nodes[0].outputs = [1]
            $0.values[1].shape = [$0.values[1].shape[1]]
            $0.values[1].shape[0].size = 5
        })
    }

    // MARK: - Widening f16 and bf16

    func testFloat16Widening() {
        let cases: [(UInt16, Float)] = [
            (0x3C00, 1), (0xC000, -2), (0x3555, 0.333251953125), (0x0000, 0),
            (0x0001, 0x1p-24), (0x8001, -0x1p-24), (0x03FF, 1023 * 0x1p-24), (0x0200, 0x1p-15),
            (0x0400, 0x1p-14), (0x7BFF, 65504), (0xFBFF, -65504),
            (0x7C00, .infinity), (0xFC00, -.infinity),
        ]
        let t = Self.rawTensor("h", .float16, [cases.count], cases.map(\.0))
        let f = t.floats()
        XCTAssertEqual(f.count, cases.count)
        for (v, (bits, want)) in zip(f, cases) {
            XCTAssertEqual(v.bitPattern, want.bitPattern, "f16 0x\(String(bits, radix: 16)) gave \(v), want \(want)")
        }
        // Negative zero keeps its sign; NaNs stay NaN (quiet and signaling).
        let z = Self.rawTensor("z", .float16, [3], [UInt16(0x8000), 0x7E00, 0x7C01]).floats()
        XCTAssertEqual(z[0].bitPattern, (-Float(0)).bitPattern)
        XCTAssertTrue(z[1].isNaN && z[2].isNaN)
        XCTAssertEqual(z[1].bitPattern & 0x8000_0000, 0)
        XCTAssertEqual(Float(halfBits: 0xFE00).sign, .minus)
    }

    /// Every one of the 65536 half values against the platform's own conversion.
    func testFloat16WideningExhaustive() throws {
        #if !(os(macOS) && arch(x86_64))
        let bits = (0...UInt16.max).map { $0 }
        let f = Self.rawTensor("all", .float16, [bits.count], bits).floats()
        var mismatches = 0
        for (b, v) in zip(bits, f) {
            let want = Float(Float16(bitPattern: b))
            if want.isNaN ? !v.isNaN : v.bitPattern != want.bitPattern { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
        #else
        throw XCTSkip("Float16 is unavailable on macOS x86_64")
        #endif
    }

    func testBFloat16Widening() {
        let cases: [(UInt16, Float)] = [
            (0x3F80, 1), (0xC040, -3), (0x4049, 3.140625), (0x0000, 0), (0x8000, -0.0),
            (0x0001, 0x1p-133), (0x807F, -Float(bitPattern: 0x007F_0000)), (0x0080, 0x1p-126),
            (0x7F7F, Float(bitPattern: 0x7F7F_0000)), (0x7F80, .infinity), (0xFF80, -.infinity),
        ]
        let f = Self.rawTensor("b", .bfloat16, [cases.count], cases.map(\.0)).floats()
        for (v, (bits, want)) in zip(f, cases) {
            XCTAssertEqual(v.bitPattern, want.bitPattern, "bf16 0x\(String(bits, radix: 16)) gave \(v), want \(want)")
        }
        let nan = Self.rawTensor("n", .bfloat16, [2], [UInt16(0x7FC0), 0xFFC1]).floats()
        XCTAssertTrue(nan.allSatisfy(\.isNaN))
    }

    func testOtherDTypesAsFloats() {
        XCTAssertEqual(Self.rawTensor("i", .int64, [3], [Int64(-3), 0, 1 << 40]).floats(), [-3, 0, 0x1p40])
        XCTAssertEqual(Self.rawTensor("i", .int64, [2], [Int64(-3), 7]).int64s(), [-3, 7])
        XCTAssertEqual(Self.rawTensor("f", .float32, [2], [Float(-0.5), 4]).floats(), [-0.5, 4])
        // Empty tensors of every dtype.
        for dt in DType.allCases {
            XCTAssertEqual(WeightTensor(name: "e", dtype: dt, shape: [0], bytes: TensorBytes([])).floats(), [], "\(dt)")
        }
    }

    /// f16/bf16 tensors decoded from a file widen like in-memory ones.
    func testWideningAfterDecode() throws {
        let m = try ModelFile.decode(try ModelFile.encode(try Self.sampleModel()))
        XCTAssertEqual(m.tensor(named: "half")?.floats(), [1, 0.333251953125, 0x1p-24, -0.0, 65504, -2])
        XCTAssertEqual(m.tensor(named: "half")?.floats()[3].sign, .minus)
        XCTAssertEqual(m.tensor(named: "emb")?.floats().prefix(3), [1, Float(bitPattern: 0x3F83_0000), Float(bitPattern: 0x3F86_0000)])
        XCTAssertEqual(m.constantTypes["half"], TensorType(.float32, [6]))
        XCTAssertEqual(m.constantTypes["idx"], TensorType(.int64, [3]))
    }

    // MARK: - Files on disk

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ModelFileTests-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func testReadMapsAWrittenFile() throws {
        let dir = try temporaryDirectory()
        let url = dir.appendingPathComponent("model.tflow")
        let m = try Self.sampleModel()
        try ModelFile.write(m, to: url)
        let bytes = try ModelFile.encode(m)
        XCTAssertEqual(Array(try Data(contentsOf: url)), bytes)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["model.tflow"], "no temporary file is left")
        let perms = try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? Int
        XCTAssertEqual(perms, 0o644)

        let back = try ModelFile.read(contentsOf: url)
        assertSameModel(m, back)
        // Every tensor is a window of one private mapping of the file, not a copy.
        let n = bytes[16..<24].reversed().reduce(0) { $0 << 8 | Int($1) }
        let dataOffset = (24 + n + 63) / 64 * 64
        guard let first = back.tensors.first else { return XCTFail("no tensors") }
        let base = first.bytes.pointer - dataOffset
        var offset = 0
        for t in back.tensors {
            XCTAssertNil(t.bytes.owned, "\(t.name) is a window, not an owned copy")
            XCTAssertTrue(t.bytes.owner is MappedFile, "\(t.name) is kept alive by the mapping")
            XCTAssertEqual(t.bytes.pointer, base + dataOffset + offset, "\(t.name) lies where the file has it")
            offset = (offset + t.bytes.count + 63) / 64 * 64
        }
        XCTAssertEqual(Int(bitPattern: base) % 4096, 0, "the mapping starts on a page")
        // The tensors outlive the model value that held them.
        let w = back.tensor(named: "w")
        XCTAssertEqual(w?.floats(), m.tensor(named: "w")?.floats())
    }

    func testReadErrorsNameTheFile() throws {
        let dir = try temporaryDirectory()
        let url = dir.appendingPathComponent("bad.tflow")
        var h = Self.baseHeader()
        h.formatVersion = 3
        try Data(try Self.assemble(h, data: Self.baseData)).write(to: url)
        XCTAssertThrowsError(try ModelFile.read(contentsOf: url)) { e in
            XCTAssertEqual((e as? IRError)?.rule, "F2")
            XCTAssertTrue("\(e)".hasPrefix(url.path + ": header says format version 3"), "\(e)")
            XCTAssertTrue("\(e)".hasSuffix("[rule F2, see Spec/ModelFile.md]"), "\(e)")
        }
        // An empty file, a directory and a missing file.
        let empty = dir.appendingPathComponent("empty.tflow")
        try Data().write(to: empty)
        XCTAssertThrowsError(try ModelFile.read(contentsOf: empty)) { XCTAssertEqual(($0 as? IRError)?.rule, "F1") }
        XCTAssertThrowsError(try ModelFile.read(contentsOf: dir)) {
            XCTAssertEqual($0 as? FileAccessError, .modelFile(.notRegularFile(path: dir.path)), "\($0)")
        }
        XCTAssertThrowsError(try ModelFile.read(contentsOf: dir.appendingPathComponent("missing.tflow"))) {
            guard case .modelFile(.system(.open, _, ENOENT))? = $0 as? FileAccessError else { return XCTFail("\($0)") }
        }
    }

    /// A model that breaks a graph rule is not written, and an existing file stays as it was.
    func testWriteRefusesAnInvalidModelAndKeepsTheOldFile() throws {
        let dir = try temporaryDirectory()
        let url = dir.appendingPathComponent("model.tflow")
        let m = try Self.sampleModel()
        try ModelFile.write(m, to: url)
        var bad = m
        bad.graphs[1].values[2].type = TensorType(.float32, [3])
        XCTAssertThrowsError(try ModelFile.write(bad, to: url)) { XCTAssertEqual(($0 as? IRError)?.rule, "W5") }
        XCTAssertEqual(Array(try Data(contentsOf: url)), try ModelFile.encode(m))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["model.tflow"])
    }

    // MARK: - Truncation

    /// Every prefix of a valid file either throws the rule of the part it cuts (never crashes)
    /// or, when only trailing padding is cut, still decodes to the same model.
    func testTruncatedFilesThrow() throws {
        let m = try Self.sampleModel()
        let bytes = try ModelFile.encode(m)
        let n = bytes[16..<24].reversed().reduce(0) { $0 << 8 | Int($1) }
        let dataOffset = (24 + n + 63) / 64 * 64
        let header = try Flowir_ModelHeader(serializedBytes: Array(bytes[24..<(24 + n)]))
        let needed = dataOffset + Int(header.tensors.map { $0.offset + $0.byteSize }.max() ?? 0)
        XCTAssertLessThan(needed, bytes.count, "the last tensor is followed by padding")
        var lengths = Array(0..<min(bytes.count, 200)) + Array(stride(from: 200, to: bytes.count, by: 7))
        lengths += [23, 24, 24 + n - 1, 24 + n, dataOffset - 1, dataOffset, needed - 1, needed, bytes.count - 1]
        for len in Set(lengths).sorted() where len >= 0 && len < bytes.count {
            let cut = Array(bytes[0..<len])
            let rule = len < 24 ? "F1" : len < 24 + n ? "F3" : "F4"
            if len >= needed {
                do { assertSameModel(m, try ModelFile.decode(cut)) } catch { XCTFail("length \(len): \(error)") }
                continue
            }
            do {
                _ = try ModelFile.decode(cut)
                XCTFail("length \(len) of \(bytes.count) decoded")
            } catch let e as IRError {
                XCTAssertEqual(e.rule, rule, "length \(len): \(e)")
            } catch {
                XCTFail("length \(len): not an IRError: \(error)")
            }
        }
    }

    // MARK: - Layouts (panels32, flag 0x1)

    /// panels32 holds W [n, k] as ⌈n/32⌉ panels of k groups of 32 (Spec/ModelFile.md, "Layouts"):
    /// checked element by element against the definition, for every dtype it allows, with n not
    /// a multiple of 32 (padding zero) and back to row-major bit for bit.
    func testPanelLayoutIsTheSpecifiedPermutation() throws {
        let (n, k) = (37, 5)
        for dtype in [DType.float32, .float16, .bfloat16] {
            let rowMajor: WeightTensor
            switch dtype {
            case .float32: rowMajor = Self.f32Tensor("w", [n, k], seed: 4)
            default: rowMajor = Self.rawTensor("w", dtype, [n, k], (0..<(n * k)).map { UInt16(0x3C00 + $0) })
            }
            let packed = rowMajor.inLayout(.panels32)
            XCTAssertEqual(packed.layout, .panels32)
            XCTAssertEqual(packed.bytes.count, 64 * k * dtype.byteSize, "\(dtype): two panels of 32 rows")
            let es = dtype.byteSize
            func element(_ t: WeightTensor, _ i: Int) -> [UInt8] { Array(t.bytes.buffer[(i * es)..<((i + 1) * es)]) }
            for p in 0..<2 {
                for c in 0..<k {
                    for j in 0..<32 {
                        let stored = element(packed, p * k * 32 + c * 32 + j)
                        let row = 32 * p + j
                        XCTAssertEqual(stored, row < n ? element(rowMajor, row * k + c) : [UInt8](repeating: 0, count: es),
                                       "\(dtype): panel \(p), group \(c), element \(j)")
                    }
                }
            }
            let back = packed.inLayout(.rowMajor)
            XCTAssertEqual(back.layout, .rowMajor)
            XCTAssertEqual(Array(back.bytes.buffer), Array(rowMajor.bytes.buffer), "\(dtype): round trip")
            XCTAssertEqual(packed.floats().map(\.bitPattern), rowMajor.floats().map(\.bitPattern), "\(dtype): floats() are row-major")
        }
        // Tensors the layout does not allow are returned as they are.
        let idx = Self.rawTensor("i", .int64, [2, 3], [Int64](repeating: 1, count: 6))
        XCTAssertEqual(idx.inLayout(.panels32).layout, .rowMajor)
        XCTAssertEqual(Self.f32Tensor("v", [6], seed: 1).inLayout(.panels32).layout, .rowMajor)
    }

    /// A model with packed linear weights round-trips, sets flag 0x1, and keeps its values; a
    /// model without keeps flags 0 (files from before layouts are byte for byte the same).
    func testPackedModelRoundTripsWithTheLayoutFlag() throws {
        let m = try Self.sampleModel()
        XCTAssertEqual(try ModelFile.encode(m)[12], 0, "row-major only: flags 0")
        let packed = m.packingLinearWeights()
        XCTAssertEqual(packed.tensors.filter { $0.layout == .panels32 }.map(\.name), ["w"], "only the linear weight")
        let bytes = try ModelFile.encode(packed)
        XCTAssertEqual(Array(bytes[12..<16]), [1, 0, 0, 0], "flag 0x1")
        let back = try ModelFile.decode(bytes)
        assertSameModel(packed, back)
        let w0 = try XCTUnwrap(m.tensor(named: "w")), w1 = try XCTUnwrap(back.tensor(named: "w"))
        XCTAssertEqual(w1.floats(), w0.floats())
        // Mapped from a file, too.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("layout-\(getpid()).tflow")
        defer { try? FileManager.default.removeItem(at: url) }
        try ModelFile.write(packed, to: url)
        let mapped = try ModelFile.read(contentsOf: url)
        XCTAssertEqual(mapped.tensor(named: "w")?.layout, .panels32)
        XCTAssertEqual(mapped.tensor(named: "w")?.floats(), w0.floats())
        XCTAssertTrue(mapped.tensor(named: "w")?.bytes.isMapped ?? false)
    }

    /// Rules F5 (layout and its byte size) and F2 (flag 0x1 agrees with the table) on crafted
    /// files.
    func testLayoutRules() throws {
        func packedHeader(_ layout: Flowir_Layout = .panels32, dtype: Flowir_DType = .float32, shape: [Int64] = [6, 2],
                          byteSize: UInt64 = 256) -> Flowir_ModelHeader {
            var h = Self.baseHeader()
            var t = Self.info("t", dtype, shape: shape, offset: 0, byteSize: byteSize)
            t.layout = layout
            h.tensors = [t]
            return h
        }
        let data = [UInt8](repeating: 0, count: 256)
        // A valid packed [6, 2] f32 tensor: 32 × 2 × 4 = 256 bytes.
        let ok = try ModelFile.decode(try Self.assemble(packedHeader(), data: data, flags: 1))
        XCTAssertEqual(ok.tensors.first?.layout, .panels32)
        XCTAssertEqual(ok.tensors.first?.floats().count, 12)
        assertRule("F5", try Self.assemble(packedHeader(.UNRECOGNIZED(7)), data: data, flags: 1), says: "tensor 't': unknown layout 7")
        assertRule("F5", try Self.assemble(packedHeader(byteSize: 48), data: data, flags: 1),
                   says: "byte_size 48 but shape [6, 2] of f32 in layout panels32 needs 256")
        assertRule("F5", try Self.assemble(packedHeader(dtype: .int64, byteSize: 512), data: data + data, flags: 1),
                   says: "layout panels32 needs a rank-2 f32, f16 or bf16 tensor")
        assertRule("F5", try Self.assemble(packedHeader(shape: [12], byteSize: 48), data: data, flags: 1), says: "needs a rank-2")
        assertRule("F2", try Self.assemble(packedHeader(), data: data, flags: 0), says: "has layout panels32 but the prefix lacks flag 0x1")
        assertRule("F2", try Self.assemble(Self.baseHeader(), data: Self.baseData, flags: 1), says: "has flag 0x1 (tensor layouts) but every tensor is row-major")
        assertRule("F2", try Self.assemble(packedHeader(), data: data, flags: 3), says: "flags 0x3 are not supported")
        // In memory, the writer refuses a packed tensor without its padding (F5).
        var m = try Self.sampleModel()
        let i = try XCTUnwrap(m.tensors.firstIndex { $0.name == "w" })
        m.tensors[i].layout = .panels32  // 36 elements, but panels32 of [6, 6] stores 192
        XCTAssertThrowsError(try ModelFile.encode(m)) { XCTAssertTrue("\($0)".contains("in layout panels32 needs 768"), "\($0)") }
    }
}
