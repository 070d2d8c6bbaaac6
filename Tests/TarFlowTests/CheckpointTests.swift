import Foundation
import XCTest
import TarFlow

/// Checkpoint readers: the official fixtures in both formats must agree byte for byte, and
/// hostile or damaged files must be refused with an error that names the problem.
final class CheckpointTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let cases = ["tiny_uncond", "cond_guided", "vp_prior", "mnist_trained"]

    // MARK: - Fixtures: .pth and .safetensors agree

    func testPthAndSafetensorsAgreeForAllFixtures() throws {
        for name in Self.cases {
            let dir = Self.fixtures.appendingPathComponent(name)
            let pth = try Checkpoint.read(contentsOf: dir.appendingPathComponent("model.pth"))
            let st = try Checkpoint.read(contentsOf: dir.appendingPathComponent("model.safetensors"))
            XCTAssertGreaterThan(pth.count, 10, name)
            XCTAssertEqual(pth.count, st.count, name)
            XCTAssertEqual(Set(pth.map(\.name)).count, pth.count, "\(name): duplicate names")
            let byName = Dictionary(uniqueKeysWithValues: st.map { ($0.name, $0) })
            for tensor in pth {
                guard let other = byName[tensor.name] else {
                    XCTFail("\(name): \(tensor.name) missing from safetensors")
                    continue
                }
                XCTAssertEqual(tensor.tensor.dtype, other.tensor.dtype, "\(name) \(tensor.name)")
                XCTAssertEqual(tensor.tensor.shape, other.tensor.shape, "\(name) \(tensor.name)")
                XCTAssertTrue(tensor.tensor.littleEndianBytes() == other.tensor.littleEndianBytes(), "\(name) \(tensor.name): bytes differ")
            }
        }
    }

    func testFixtureShapesAndOrder() throws {
        func shapes(_ name: String, _ file: String = "model.pth") throws -> (order: [String], shapes: [String: [Int]]) {
            let tensors = try Checkpoint.read(contentsOf: Self.fixtures.appendingPathComponent(name).appendingPathComponent(file))
            return (tensors.map(\.name), Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.tensor.shape) }))
        }
        let tiny = try shapes("tiny_uncond")
        // state_dict order: the prior's `var` buffer is registered before the blocks.
        XCTAssertEqual(tiny.order.first, "var")
        XCTAssertEqual(tiny.order.dropFirst().first, "blocks.0.pos_embed")
        XCTAssertEqual(tiny.shapes["var"], [16, 12])
        XCTAssertEqual(tiny.shapes["blocks.0.proj_in.weight"], [64, 12])
        XCTAssertEqual(tiny.shapes["blocks.0.proj_in.bias"], [64])
        XCTAssertEqual(tiny.shapes["blocks.0.pos_embed"], [16, 64])
        XCTAssertEqual(tiny.shapes["blocks.0.attn_mask"], [16, 16])
        XCTAssertEqual(tiny.shapes["blocks.1.attn_blocks.1.attention.qkv.weight"], [192, 64])
        XCTAssertEqual(tiny.shapes["blocks.0.attn_blocks.0.mlp.main.0.weight"], [256, 64])
        XCTAssertEqual(tiny.shapes["blocks.1.proj_out.weight"], [24, 64])
        XCTAssertNil(tiny.shapes["blocks.0.class_embed"])

        let cond = try shapes("cond_guided")
        XCTAssertEqual(cond.shapes["blocks.0.class_embed"], [5, 1, 128])
        XCTAssertEqual(cond.shapes["blocks.2.proj_in.weight"], [128, 48])

        let vp = try shapes("vp_prior")
        XCTAssertEqual(vp.shapes["var"], [16, 4])
        XCTAssertEqual(vp.shapes["blocks.2.proj_out.weight"], [4, 64])

        let mnist = try shapes("mnist_trained", "model.safetensors")
        XCTAssertEqual(mnist.shapes["blocks.3.class_embed"], [10, 1, 128])
        XCTAssertEqual(mnist.shapes["blocks.0.proj_in.weight"], [128, 16])
        XCTAssertEqual(mnist.shapes["blocks.0.attn_mask"], [49, 49])
        XCTAssertEqual(mnist.shapes["var"], [49, 16])
    }

    func testFixtureValuesAreSane() throws {
        let tensors = try Checkpoint.read(contentsOf: Self.fixtures.appendingPathComponent("tiny_uncond/model.pth"))
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
        // The causal mask buffer is lower-triangular ones.
        let variance = try XCTUnwrap(byName["var"]).tensor.floats
        XCTAssertEqual(variance.count, 16 * 12)
        let mask = try XCTUnwrap(byName["blocks.0.attn_mask"]).tensor.floats
        XCTAssertEqual(mask.count, 256)
        for i in 0..<16 {
            for j in 0..<16 { XCTAssertEqual(mask[i * 16 + j], j <= i ? 1 : 0, "mask[\(i),\(j)]") }
        }
        XCTAssertTrue(variance.allSatisfy { $0.isFinite })
    }

    // MARK: - Crafted .pth: strided views, shared storages, dtypes

    func testStridedSharedAndTypedViewsAreMadeContiguous() throws {
        var p = PickleWriter()
        p.beginStateDict()
        // storage "0": six float32 values 0...5, shared by four views.
        p.tensor("plain", storage: "0", type: "FloatStorage", numel: 6, offset: 0, size: [2, 3], stride: [3, 1])
        p.tensor("transposed", storage: "0", type: "FloatStorage", numel: 6, offset: 0, size: [3, 2], stride: [1, 3])
        p.tensor("tail", storage: "0", type: "FloatStorage", numel: 6, offset: 4, size: [2], stride: [1])
        p.tensor("expanded", storage: "0", type: "FloatStorage", numel: 6, offset: 1, size: [2, 2], stride: [0, 1])
        p.tensor("scalar", storage: "0", type: "FloatStorage", numel: 6, offset: 5, size: [], stride: [])
        p.tensor("half", storage: "1", type: "HalfStorage", numel: 3, offset: 0, size: [3], stride: [1])
        p.tensor("bf16", storage: "2", type: "BFloat16Storage", numel: 2, offset: 0, size: [2], stride: [1])
        p.tensor("long", storage: "3", type: "LongStorage", numel: 2, offset: 0, size: [2, 1], stride: [1, 7], v1: true)
        p.tensor("param", storage: "0", type: "FloatStorage", numel: 6, offset: 2, size: [2], stride: [2], parameter: true)
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: [
            "0": floatBytes([0, 1, 2, 3, 4, 5]),
            "1": [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B],  // 1, -2, 65504
            "2": [0x80, 0x3F, 0x40, 0xC0],  // 1, -3
            "3": [5, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],  // 5, -1
        ])
        let tensors = try Checkpoint.read(contentsOf: url)
        XCTAssertEqual(tensors.map(\.name), ["plain", "transposed", "tail", "expanded", "scalar", "half", "bf16", "long", "param"])
        let t = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
        XCTAssertEqual(t["plain"]?.tensor.floats, [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(t["transposed"]?.tensor.shape, [3, 2])
        XCTAssertEqual(t["transposed"]?.tensor.floats, [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(t["tail"]?.tensor.floats, [4, 5])
        XCTAssertEqual(t["expanded"]?.tensor.floats, [1, 2, 1, 2])
        XCTAssertEqual(t["scalar"]?.tensor.shape, [])
        XCTAssertEqual(t["scalar"]?.tensor.floats, [5])
        XCTAssertEqual(t["half"]?.tensor.dtype, .float16)
        XCTAssertEqual(t["half"]?.tensor.floats, [1, -2, 65504])
        XCTAssertEqual(t["bf16"]?.tensor.dtype, .bfloat16)
        XCTAssertEqual(t["bf16"]?.tensor.floats, [1, -3])
        XCTAssertEqual(t["long"]?.tensor.dtype, .int64)
        XCTAssertEqual(t["long"]?.tensor.shape, [2, 1])
        XCTAssertEqual(t["long"]?.tensor.floats, [5, -1])
        XCTAssertEqual(t["param"]?.tensor.floats, [2, 4])
    }

    func testViewOutsideStorageIsRefused() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.tensor("w", storage: "0", type: "FloatStorage", numel: 6, offset: 1, size: [2, 3], stride: [3, 1])
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: ["0": floatBytes([0, 1, 2, 3, 4, 5])])
        try expectError(.malformedTensor, mentioning: ["reaches element 6", "'0'"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testStorageSizeMismatchIsRefused() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.tensor("w", storage: "0", type: "FloatStorage", numel: 6, offset: 0, size: [6], stride: [1])
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: ["0": floatBytes([0, 1, 2, 3])])
        try expectError(.malformedArchive, mentioning: ["data/0", "16 bytes", "24"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testMissingStorageEntryIsRefused() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.tensor("w", storage: "7", type: "FloatStorage", numel: 1, offset: 0, size: [1], stride: [1])
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: ["0": floatBytes([0])])
        try expectError(.malformedArchive, mentioning: ["w", "archive/data/7"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testUnsupportedStorageTypeIsRefused() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.tensor("w", storage: "0", type: "DoubleStorage", numel: 1, offset: 0, size: [1], stride: [1])
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: ["0": [UInt8](repeating: 0, count: 8)])
        try expectError(.unsupportedDType, mentioning: ["torch.DoubleStorage"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testBigEndianArchiveIsRefused() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: [:], byteorder: "big")
        try expectError(.bigEndian, mentioning: ["big-endian"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testNonTensorEntryIsRefused() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.string("epoch")
        p.op(0x4B, 3)  // BININT1 3
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: [:])
        try expectError(.notAStateDict, mentioning: ["epoch", "int"]) { try Checkpoint.read(contentsOf: url) }
    }

    // MARK: - Hostile pickles

    func testOsSystemGlobalIsRefusedBeforeAnythingRuns() throws {
        let url = try writeTorchZip(pickle: PickleWriter.osSystem.bytes, storages: [:])
        let error = try expectError(.refusedGlobal, mentioning: ["os.system", "GLOBAL", "offset 2"]) {
            try Checkpoint.read(contentsOf: url)
        }
        XCTAssertEqual(error.file, url.path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/tarflow-pwned"))
    }

    func testOtherDangerousGlobalsAreRefused() throws {
        for (module, name) in [("posix", "system"), ("builtins", "eval"), ("subprocess", "Popen"),
                               ("torch", "load"), ("collections", "defaultdict"), ("__main__", "Model")] {
            // Protocol 4 style: FRAME, SHORT_BINUNICODE module/name, MEMOIZE, STACK_GLOBAL.
            var body = PickleWriter(protocolVersion: 4)
            body.bytes = []
            body.shortString(module)
            body.op(0x94)
            body.shortString(name)
            body.op(0x94)
            body.op(0x93)
            body.string("x")
            body.op(0x85)
            body.op(0x52)
            body.op(0x2E)
            var p = PickleWriter(protocolVersion: 4)
            p.op(0x95, UInt8(body.bytes.count), 0, 0, 0, 0, 0, 0, 0)
            p.raw(body.bytes)
            let url = try writeTorchZip(pickle: p.bytes, storages: [:])
            try expectError(.refusedGlobal, mentioning: ["\(module).\(name)", "STACK_GLOBAL"]) {
                try Checkpoint.read(contentsOf: url)
            }
        }
    }

    func testUnknownAndUnsupportedOpcodesAreRefused() throws {
        for (op, label) in [(UInt8(0xFF), "UNKNOWN (0xff) at offset 2"), (0x69, "INST (0x69) at offset 2"),
                            (0x82, "EXT1 (0x82) at offset 2")] {
            let url = try writeTorchZip(pickle: [0x80, 0x02, op, 0x2E], storages: [:])
            try expectError(.unsupportedOpcode, mentioning: [label]) { try Checkpoint.read(contentsOf: url) }
        }
    }

    func testPickleLimitsAndMalformedPrograms() throws {
        // Nesting: 100 TUPLE1 around an empty tuple exceeds the nesting limit.
        var deep = PickleWriter()
        deep.op(0x29)
        for _ in 0..<100 { deep.op(0x85) }
        deep.op(0x2E)
        try expectError(.limitExceeded, mentioning: ["nested"]) {
            try Checkpoint.read(contentsOf: try writeTorchZip(pickle: deep.bytes, storages: [:]))
        }
        // A list appended to itself (a cycle) is refused.
        let cycle: [UInt8] = [0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E]
        try expectError(.malformedPickle, mentioning: ["APPEND"]) {
            try Checkpoint.read(contentsOf: try writeTorchZip(pickle: cycle, storages: [:]))
        }
        // A string length past the end is refused before allocating.
        let huge: [UInt8] = [0x80, 0x02, 0x58, 0xF0, 0xFF, 0xFF, 0x03, 0x61, 0x62, 0x2E]
        try expectError(.truncated, mentioning: ["BINUNICODE", "runs past the end"]) {
            try Checkpoint.read(contentsOf: try writeTorchZip(pickle: huge, storages: [:]))
        }
        // Reading a memo slot that was never written.
        let badGet: [UInt8] = [0x80, 0x02, 0x68, 0x05, 0x2E]
        try expectError(.malformedPickle, mentioning: ["memo entry 5"]) {
            try Checkpoint.read(contentsOf: try writeTorchZip(pickle: badGet, storages: [:]))
        }
        // Stack underflow.
        let underflow: [UInt8] = [0x80, 0x02, 0x85, 0x2E]
        try expectError(.malformedPickle, mentioning: ["underflow"]) {
            try Checkpoint.read(contentsOf: try writeTorchZip(pickle: underflow, storages: [:]))
        }
        // No STOP.
        let noStop: [UInt8] = [0x80, 0x02, 0x7D]
        try expectError(.truncated, mentioning: ["without STOP"]) {
            try Checkpoint.read(contentsOf: try writeTorchZip(pickle: noStop, storages: [:]))
        }
    }

    // MARK: - Damaged .pth

    func testTruncatedPthIsRefused() throws {
        let original = try Data(contentsOf: Self.fixtures.appendingPathComponent("tiny_uncond/model.pth"))
        for keep in [original.count / 2, original.count - 10, 100] {
            let url = try writeTemp(Data(original.prefix(keep)), ext: "pth")
            try expectError(.truncated, mentioning: [url.lastPathComponent]) { try Checkpoint.read(contentsOf: url) }
        }
    }

    func testCorruptedPthStorageFailsChecksum() throws {
        var bytes = [UInt8](try Data(contentsOf: Self.fixtures.appendingPathComponent("tiny_uncond/model.pth")))
        let start = try XCTUnwrap(localEntryDataOffset(in: bytes, name: "model/data/1"))
        bytes[start + 100] ^= 0x40
        let url = try writeTemp(Data(bytes), ext: "pth")
        try expectError(.malformedArchive, mentioning: ["model/data/1", "CRC-32"]) { try Checkpoint.read(contentsOf: url) }
    }

    // MARK: - Safetensors

    func testSafetensorsTypesOrderAndConversions() throws {
        let url = try writeSafetensors(header: """
            {"__metadata__":{"format":"pt"},"z":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},\
            "a":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},"m":{"dtype":"I64","shape":[1,1],"data_offsets":[12,20]},\
            "e":{"dtype":"F32","shape":[0,3],"data_offsets":[20,20]},"s":{"dtype":"F32","shape":[],"data_offsets":[20,24]}}
            """ + "   ", data: [0x00, 0x3C, 0x01, 0x00, 0x00, 0x7C, 0x00, 0x80,  // 1, 2^-24, +inf, -0
                        0x80, 0x3F, 0x49, 0x40,  // 1, 3.140625
                        0xF9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]  // -7
                       + floatBytes([0.5]))
        let tensors = try Checkpoint.read(contentsOf: url)
        XCTAssertEqual(tensors.map(\.name), ["z", "a", "m", "e", "s"])
        XCTAssertEqual(tensors[0].tensor.floats, [1, Float(bitPattern: 0x3380_0000), .infinity, -0.0])
        XCTAssertEqual(tensors[0].tensor.floats[3].sign, .minus)
        XCTAssertEqual(tensors[1].tensor.floats, [1, 3.140625])
        XCTAssertEqual(tensors[2].tensor.dtype, .int64)
        XCTAssertEqual(tensors[2].tensor.floats, [-7])
        XCTAssertEqual(tensors[3].tensor.shape, [0, 3])
        XCTAssertEqual(tensors[3].tensor.count, 0)
        XCTAssertEqual(tensors[4].tensor.shape, [])
        XCTAssertEqual(tensors[4].tensor.floats, [0.5])
    }

    func testTruncatedSafetensorsIsRefused() throws {
        let original = try Data(contentsOf: Self.fixtures.appendingPathComponent("tiny_uncond/model.safetensors"))
        // Cut in the data, in the header, and in the length field.
        for keep in [original.count - 1, original.count / 2, 200, 5] {
            let url = try writeTemp(Data(original.prefix(keep)), ext: "safetensors")
            XCTAssertThrowsError(try Checkpoint.read(contentsOf: url), "kept \(keep) bytes") { error in
                let e = Self.checkpointFailure(error)
                XCTAssertNotNil(e)
                XCTAssertTrue(e?.kind == .truncated || e?.kind == .unknownFormat, "\(keep): \(String(describing: e))")
            }
        }
        let cutData = try writeTemp(Data(original.prefix(original.count - 1)), ext: "safetensors")
        try expectError(.truncated, mentioning: ["data_offsets", "outside"]) { try Checkpoint.read(contentsOf: cutData) }
    }

    func testOverlappingOffsetsAreRefused() throws {
        let url = try writeSafetensors(header: """
            {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}
            """, data: floatBytes([1, 2, 3]))
        try expectError(.malformedHeader, mentioning: ["overlap", "'a'", "b:"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testOutOfRangeOffsetsAreRefused() throws {
        let url = try writeSafetensors(header: """
            {"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}
            """, data: floatBytes([1, 2]))
        try expectError(.truncated, mentioning: ["a:", "[0, 16]", "8-byte"]) { try Checkpoint.read(contentsOf: url) }
        let reversed = try writeSafetensors(header: """
            {"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}
            """, data: floatBytes([1, 2]))
        try expectError(.truncated, mentioning: ["[8, 0]"]) { try Checkpoint.read(contentsOf: reversed) }
    }

    func testByteCountMismatchIsRefused() throws {
        let url = try writeSafetensors(header: """
            {"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}
            """, data: floatBytes([1, 2]))
        try expectError(.malformedHeader, mentioning: ["needs 12 bytes", "span 8"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testUnsupportedSafetensorsDTypeIsRefused() throws {
        // io.safetensors holds float64 reference outputs.
        let url = Self.fixtures.appendingPathComponent("tiny_uncond/io.safetensors")
        try expectError(.unsupportedDType, mentioning: ["F64", "F32, F16, BF16, I64"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testMalformedSafetensorsHeaders() throws {
        for header in ["{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",  // unterminated
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}",
                       "{\"a\":1}",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                       "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
                       "{\"a\":" + String(repeating: "[", count: 200)] {
            let url = try writeSafetensors(header: header, data: floatBytes([1]))
            try expectError(.malformedHeader, mentioning: []) { try Checkpoint.read(contentsOf: url) }
        }
        // Header length larger than the file.
        var bytes: [UInt8] = [0xFF, 0xFF, 0, 0, 0, 0, 0, 0]
        bytes += Array("{}".utf8)
        let url = try writeTemp(Data(bytes), ext: "safetensors")
        try expectError(.truncated, mentioning: ["header length 65535"]) { try Checkpoint.read(contentsOf: url) }
    }

    /// Each JSON damage is its own case, carrying its data, at the byte where the parser stopped,
    /// and reads as one fixed sentence.
    func testInvalidJSONHeadersNameTheDamageAndOffset() throws {
        typealias Damage = TarFlowError.CheckpointFailure.JSONDamage
        let digits40 = String(repeating: "1234567890", count: 4)
        let cases: [(header: String, damage: Damage, offset: Int, text: String)] = [
            ("{\"a\":" + String(repeating: "[", count: 40), .tooDeep(limit: 32), 36, "nested deeper than 32 levels"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
             .integerOutOfRange(text: "99999999999999999999"), 29, "integer 99999999999999999999 out of range"),
            ("{\"a\":[" + digits40 + "]}", .integerOutOfRange(text: digits40), 6,
             "integer \(digits40.prefix(32)) out of range"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", .unterminated(.object), 53, "unterminated object"),
            ("{\"a\":[1,2", .unterminated(.array), 9, "unterminated array"),
            ("{\"a\":1 \"b\":2}", .expectedCommaOr(.object), 7, "expected ',' or '}'"),
            ("{\"a\":[1;2]}", .expectedCommaOr(.array), 7, "expected ',' or ']'"),
            ("{\"a", .unterminatedString, 3, "unterminated string"),
            ("{1:2}", .expectedKey, 1, "expected a string key"),
            ("{\"a\" 1}", .expectedColon, 5, "expected ':'"),
            ("{} x", .trailingData, 3, "unexpected data after the header object"),
            ("{\"a\\q\":1}", .invalidEscape, 5, "invalid escape"),
        ]
        for c in cases {
            let url = try writeSafetensors(header: c.header, data: [])
            let e = try expectError(.malformedHeader, mentioning: []) { try Checkpoint.read(contentsOf: url) }
            XCTAssertEqual(e.reason, .invalidJSON(offset: c.offset, damage: c.damage), c.header)
            XCTAssertEqual(c.damage.description, c.text)
            XCTAssertEqual(e.description,
                           "checkpoint \(url.path): safetensors header: invalid JSON at byte \(c.offset): \(c.text) (the file is corrupted or not safetensors)",
                           c.header)
        }
    }

    func testUnknownFormatsAreRefused() throws {
        try expectError(.unknownFormat, mentioning: ["empty"]) {
            try Checkpoint.read(contentsOf: try writeTemp(Data(), ext: "bin"))
        }
        try expectError(.unknownFormat, mentioning: ["73 6f 6d 65"]) {
            try Checkpoint.read(contentsOf: try writeTemp(Data("something else entirely".utf8), ext: "bin"))
        }
        // Legacy (pre-1.6) torch.save: a bare pickle starting with PROTO 2.
        try expectError(.unknownFormat, mentioning: ["legacy"]) {
            try Checkpoint.read(contentsOf: try writeTemp(Data([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20]), ext: "pt"))
        }
        try expectError(.unreadableFile, mentioning: ["does-not-exist"]) {
            try Checkpoint.read(contentsOf: URL(fileURLWithPath: "/nonexistent/does-not-exist.pth"))
        }
    }

    // MARK: - Helpers

    /// The failure a checkpoint reader threw, nil for any other error.
    static func checkpointFailure(_ error: Error) -> TarFlowError.CheckpointFailure? {
        if case .checkpoint(let f)? = error as? TarFlowError { f } else { nil }
    }

    @discardableResult
    func expectError(_ kind: TarFlowError.CheckpointFailure.Kind, mentioning parts: [String], file: StaticString = #filePath,
                     line: UInt = #line, _ body: () throws -> Any) throws -> TarFlowError.CheckpointFailure {
        do {
            _ = try body()
        } catch TarFlowError.checkpoint(let error) {
            XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
            for part in parts {
                XCTAssertTrue(error.description.contains(part), "'\(part)' not in: \(error)", file: file, line: line)
            }
            XCTAssertFalse(error.description.contains("\n"), "error spans lines: \(error)", file: file, line: line)
            return error
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
            throw error
        }
        XCTFail("no error thrown", file: file, line: line)
        throw TarFlowError.checkpoint(.init(.noStop, file: ""))
    }

    func floatBytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { v -> [UInt8] in
            let bits = v.bitPattern.littleEndian
            return [UInt8(bits & 0xFF), UInt8((bits >> 8) & 0xFF), UInt8((bits >> 16) & 0xFF), UInt8(bits >> 24)]
        }
    }

    func writeTemp(_ data: Data, ext: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-ckpt-tests", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("\(UUID().uuidString).\(ext)")
        try data.write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func writeSafetensors(header: String, data: [UInt8]) throws -> URL {
        let json = Array(header.utf8)
        let n = UInt64(json.count)
        var bytes = (0..<8).map { UInt8((n >> (8 * UInt64($0))) & 0xFF) }
        bytes += json
        bytes += data
        return try writeTemp(Data(bytes), ext: "safetensors")
    }

    /// A torch.save-shaped zip: archive/data.pkl, archive/byteorder, archive/data/<key>.
    func writeTorchZip(pickle: [UInt8], storages: [String: [UInt8]], byteorder: String = "little") throws -> URL {
        var entries: [(String, [UInt8])] = [("archive/data.pkl", pickle), ("archive/byteorder", Array(byteorder.utf8))]
        for key in storages.keys.sorted() { entries.append(("archive/data/\(key)", storages[key] ?? [])) }
        entries.append(("archive/version", Array("3\n".utf8)))
        return try writeTemp(Data(StoredZip.make(entries)), ext: "pth")
    }

    /// Offset of an entry's data in a zip, from its local file header.
    func localEntryDataOffset(in bytes: [UInt8], name: String) -> Int? {
        let nameBytes = Array(name.utf8)
        var i = 0
        while i + 30 + nameBytes.count <= bytes.count {
            if bytes[i] == 0x50, bytes[i + 1] == 0x4B, bytes[i + 2] == 0x03, bytes[i + 3] == 0x04 {
                let nameLength = Int(bytes[i + 26]) | Int(bytes[i + 27]) << 8
                let extraLength = Int(bytes[i + 28]) | Int(bytes[i + 29]) << 8
                if nameLength == nameBytes.count, Array(bytes[(i + 30)..<(i + 30 + nameLength)]) == nameBytes {
                    return i + 30 + nameLength + extraLength
                }
            }
            i += 1
        }
        return nil
    }
}

/// Emits the pickle opcodes torch.save uses for a state_dict (protocol 2).
struct PickleWriter {
    var bytes: [UInt8]

    init(protocolVersion: UInt8 = 2) { bytes = [0x80, protocolVersion] }

    /// GLOBAL 'os\nsystem', 'touch /tmp/tarflow-pwned', TUPLE1, REDUCE, STOP: the classic
    /// malicious pickle, whose GLOBAL (at offset 2) must be refused before anything runs.
    static var osSystem: PickleWriter {
        var p = PickleWriter()
        p.raw(Array("cos\nsystem\n".utf8))
        p.string("touch /tmp/tarflow-pwned")
        p.op(0x85)
        p.op(0x52)
        p.op(0x2E)
        return p
    }

    mutating func op(_ code: UInt8, _ operands: UInt8...) { bytes.append(code); bytes += operands }
    mutating func raw(_ data: [UInt8]) { bytes += data }

    mutating func global(_ module: String, _ name: String) { raw(Array("c\(module)\n\(name)\n".utf8)) }

    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        let n = UInt32(utf8.count)
        op(0x58, UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24))
        raw(utf8)
    }

    mutating func shortString(_ s: String) {
        op(0x8C, UInt8(s.utf8.count))
        raw(Array(s.utf8))
    }

    mutating func int(_ v: Int) {
        let u = UInt32(bitPattern: Int32(v))
        op(0x4A, UInt8(u & 0xFF), UInt8((u >> 8) & 0xFF), UInt8((u >> 16) & 0xFF), UInt8(u >> 24))
    }

    mutating func intTuple(_ values: [Int]) {
        op(0x28)
        for v in values { int(v) }
        op(0x74)
    }

    mutating func beginStateDict() {
        global("collections", "OrderedDict")
        op(0x29)
        op(0x52)
        op(0x28)  // MARK for SETITEMS
    }

    mutating func endStateDict() {
        op(0x75)  // SETITEMS
        op(0x2E)
    }

    /// key, _rebuild_tensor_v2((persid storage), offset, size, stride, False, OrderedDict())
    /// or, with `v1`, _rebuild_tensor(storage, offset, size, stride).
    mutating func tensor(_ key: String, storage: String, type: String, numel: Int, offset: Int,
                         size: [Int], stride: [Int], v1: Bool = false, parameter: Bool = false) {
        string(key)
        if parameter {  // _rebuild_parameter(<tensor>, True, OrderedDict())
            global("torch._utils", "_rebuild_parameter")
            op(0x28)
        }
        global("torch._utils", v1 ? "_rebuild_tensor" : "_rebuild_tensor_v2")
        op(0x28)
        op(0x28)
        string("storage")
        global("torch", type)
        string(storage)
        string("cpu")
        int(numel)
        op(0x74)
        op(0x51)  // BINPERSID
        int(offset)
        intTuple(size)
        intTuple(stride)
        if !v1 {
            op(0x89)  // NEWFALSE
            global("collections", "OrderedDict")
            op(0x29)
            op(0x52)
        }
        op(0x74)
        op(0x52)
        if parameter {
            op(0x88)  // NEWTRUE
            global("collections", "OrderedDict")
            op(0x29)
            op(0x52)
            op(0x74)
            op(0x52)
        }
    }
}

/// Writes a zip of stored (uncompressed) entries, independent of the reader's zip library.
enum StoredZip {
    static func make(_ entries: [(String, [UInt8])]) -> [UInt8] {
        make(entries: entries.map { Entry(name: $0.0, method: 0, crc: crc32($0.1), data: $0.1, size: $0.1.count) })
    }

    /// One entry as written: `data` is stored (method 0) or raw deflate (method 8) of `size`
    /// bytes with checksum `crc`; a hostile file declares what it likes.
    struct Entry {
        var name: String
        var method: Int
        var crc: UInt32
        var data: [UInt8]
        var size: Int
    }

    static func make(entries: [Entry]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        func u16(_ v: Int, _ buf: inout [UInt8]) { buf += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func u32(_ v: UInt32, _ buf: inout [UInt8]) {
            buf += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)]
        }
        for e in entries {
            let nameBytes = Array(e.name.utf8)
            let offset = UInt32(out.count)
            u32(0x0403_4B50, &out)
            u16(20, &out); u16(0, &out); u16(e.method, &out); u16(0, &out); u16(0x21, &out)
            u32(e.crc, &out); u32(UInt32(e.data.count), &out); u32(UInt32(e.size), &out)
            u16(nameBytes.count, &out); u16(0, &out)
            out += nameBytes
            out += e.data
            u32(0x0201_4B50, &central)
            u16(20, &central); u16(20, &central); u16(0, &central); u16(e.method, &central); u16(0, &central); u16(0x21, &central)
            u32(e.crc, &central); u32(UInt32(e.data.count), &central); u32(UInt32(e.size), &central)
            u16(nameBytes.count, &central); u16(0, &central); u16(0, &central); u16(0, &central); u16(0, &central)
            u32(0, &central); u32(offset, &central)
            central += nameBytes
        }
        let centralOffset = UInt32(out.count)
        out += central
        u32(0x0605_4B50, &out)
        u16(0, &out); u16(0, &out); u16(entries.count, &out); u16(entries.count, &out)
        u32(UInt32(central.count), &out); u32(centralOffset, &out); u16(0, &out)
        return out
    }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        return ~crc
    }
}

extension CheckpointTests {
    /// Random byte corruption of a crafted .pth and a safetensors file must end in success or a
    /// `TarFlowError.checkpoint`, never a crash (deterministic generator, so failures reproduce).
    func testCorruptedFilesNeverCrash() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.tensor("a", storage: "0", type: "FloatStorage", numel: 6, offset: 0, size: [3, 2], stride: [1, 3])
        p.tensor("b", storage: "1", type: "HalfStorage", numel: 2, offset: 0, size: [2], stride: [1])
        p.endStateDict()
        func zipped(_ pickle: [UInt8]) -> [UInt8] {
            StoredZip.make([("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8)),
                            ("archive/data/0", floatBytes([0, 1, 2, 3, 4, 5])), ("archive/data/1", [0, 0x3C, 0, 0x3C])])
        }
        let zip = zipped(p.bytes)
        let json = Array(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}}"#.utf8)
        let st = (0..<8).map { UInt8((UInt64(json.count) >> (8 * UInt64($0))) & 0xFF) } + json + floatBytes([1, 2]) + [0, 0x3C]
        let iterations = Int(ProcessInfo.processInfo.environment["CKPT_FUZZ_ITERATIONS"] ?? "") ?? 300
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: state >> 33)
        }
        XCTAssertEqual(try Checkpoint.read(contentsOf: try writeTemp(Data(zip), ext: "pth")).count, 2)
        XCTAssertEqual(try Checkpoint.read(contentsOf: try writeTemp(Data(st), ext: "safetensors")).count, 2)
        var refused = 0
        for i in 0..<iterations {
            // Mode 0 corrupts the zip, 1 the safetensors file, 2 the pickle inside a valid zip
            // (so the unpickler, not the zip checksum, has to catch it).
            let mode = i % 3
            var bytes = mode == 0 ? zip : mode == 1 ? st : p.bytes
            let protected = mode == 0 ? 4 : 0  // keep the zip magic so format detection passes
            for _ in 0..<(1 + next() % 4) {
                let at = protected + next() % (bytes.count - protected)
                bytes[at] = next() % 3 == 0 ? UInt8(truncatingIfNeeded: next()) : bytes[at] ^ UInt8(1 << (next() % 8))
            }
            if next() % 5 == 0 { bytes.removeLast((next() % bytes.count) / 2) }
            if mode == 2 { bytes = zipped(bytes) }
            do {
                _ = try Checkpoint.read(contentsOf: try writeTemp(Data(bytes), ext: "bin"))
            } catch TarFlowError.checkpoint {
                refused += 1
            } catch {
                XCTFail("iteration \(i): not a checkpoint failure: \(error)")
            }
        }
        XCTAssertGreaterThan(refused, iterations / 4)
    }
}
