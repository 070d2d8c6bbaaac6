import Foundation
import XCTest
import FlowIR
import TarFlow

/// Checkpoints as training scripts save them: the state dict under `model`, `state_dict`, `ema`
/// or `model_ema` next to optimizer state, numbers, strings and RNG state, names prefixed by
/// `module.` or `_orig_mod.`. Built opcode by opcode, as torch.save would write them.
/// (An extension of CheckpointTests, for its pickle and zip writers.)
extension CheckpointTests {
    var repo: URL { Self.fixtures.deletingLastPathComponent().deletingLastPathComponent() }

    /// The tiny fixture's state dict, its tensors and one float32 storage per tensor.
    func fixture() throws -> [CheckpointTensor] {
        try Checkpoint.read(contentsOf: Fixtures.url("tiny_uncond", "model.safetensors"))
    }

    /// A state dict (OrderedDict of tensors) of `tensors`, storages keyed `\(storagePrefix)\(i)`.
    static func stateDict(_ p: inout PickleWriter, _ tensors: [CheckpointTensor], prefix: String = "", storagePrefix: String) {
        p.global("collections", "OrderedDict")
        p.op(0x29)
        p.op(0x52)
        p.op(0x28)
        for (i, t) in tensors.enumerated() {
            let shape = t.tensor.shape
            var stride = [Int](repeating: 1, count: shape.count)
            for d in stride.indices.reversed().dropFirst() { stride[d] = stride[d + 1] * shape[d + 1] }
            p.tensor(prefix + t.name, storage: "\(storagePrefix)\(i)", type: "FloatStorage", numel: t.tensor.count, offset: 0,
                     size: shape, stride: stride)
        }
        p.op(0x75)
    }

    /// {"model": sd, ["ema": sd,] "optimizer": {"state": {0: {"step": tensor, "exp_avg": tensor}},
    ///  "param_groups": [{"lr": 0.001, "betas": (0.9, 0.95), "params": [0, 1], "foreach": None,
    ///  "amsgrad": False}]}, "step": 1200, "args": "lr=2e-3", "rng": ByteTensor}
    func trainingCheckpoint(_ tensors: [CheckpointTensor], entries: [String], prefix: String = "") throws -> URL {
        try writeTemp(Data(Self.trainingCheckpointBytes(tensors, entries: entries, prefix: prefix)), ext: "pth")
    }

    /// The archive bytes of `trainingCheckpoint` (also the README test's `checkpoint.pth`).
    static func trainingCheckpointBytes(_ tensors: [CheckpointTensor], entries: [String], prefix: String = "") -> [UInt8] {
        func floatBytes(_ v: [Float]) -> [UInt8] { v.flatMap { f in withUnsafeBytes(of: f.bitPattern.littleEndian) { Array($0) } } }
        var p = PickleWriter()
        var storages: [String: [UInt8]] = [:]
        p.op(0x7D)  // EMPTY_DICT
        p.op(0x28)
        for (k, name) in entries.enumerated() {
            p.string(name)
            stateDict(&p, tensors, prefix: prefix, storagePrefix: "m\(k)_")
            for (i, t) in tensors.enumerated() { storages["m\(k)_\(i)"] = t.tensor.littleEndianBytes() }
        }
        p.string("optimizer")
        p.op(0x7D); p.op(0x28)
        p.string("state")
        p.op(0x7D); p.op(0x28)
        p.int(0)
        p.op(0x7D); p.op(0x28)
        p.string("step")
        p.tensor("", storage: "o0", type: "FloatStorage", numel: 1, offset: 0, size: [], stride: [], keyless: true)
        p.string("exp_avg")
        p.tensor("", storage: "o1", type: "FloatStorage", numel: 2, offset: 0, size: [2], stride: [1], keyless: true)
        p.op(0x75)
        p.op(0x75)
        p.string("param_groups")
        p.op(0x5D); p.op(0x28)
        p.op(0x7D); p.op(0x28)
        p.string("lr"); p.float(0.001)
        p.string("betas"); p.float(0.9); p.float(0.95); p.op(0x86)
        p.string("params"); p.op(0x5D); p.op(0x28); p.int(0); p.int(1); p.op(0x65)
        p.string("foreach"); p.op(0x4E)
        p.string("amsgrad"); p.op(0x89)
        p.op(0x75)
        p.op(0x65)
        p.op(0x75)
        p.string("step"); p.int(1200)
        p.string("args"); p.string("lr=2e-3")
        p.string("rng")
        p.tensor("", storage: "r0", type: "ByteStorage", numel: 4, offset: 0, size: [4], stride: [1], keyless: true)
        p.op(0x75)
        p.op(0x2E)
        storages["o0"] = floatBytes([1200])
        storages["o1"] = floatBytes([0.5, -0.5])
        storages["r0"] = [1, 2, 3, 4]
        var entries: [(String, [UInt8])] = [("archive/data.pkl", p.bytes), ("archive/byteorder", Array("little".utf8))]
        for key in storages.keys.sorted() { entries.append(("archive/data/\(key)", storages[key] ?? [])) }
        entries.append(("archive/version", Array("3\n".utf8)))
        return StoredZip.make(entries)
    }

    func assertSameTensors(_ a: [CheckpointTensor], _ b: [CheckpointTensor], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.map(\.name), b.map(\.name), file: file, line: line)
        XCTAssertEqual(a.map(\.tensor.shape), b.map(\.tensor.shape), file: file, line: line)
        XCTAssertEqual(a.map { $0.tensor.littleEndianBytes() }, b.map { $0.tensor.littleEndianBytes() }, file: file, line: line)
    }

    func testStateDictUnderModelIsFoundAndTheRestSkipped() throws {
        let sd = try fixture()
        for entry in ["model", "state_dict", "ema", "model_ema"] {
            let url = try trainingCheckpoint(sd, entries: [entry])
            assertSameTensors(try Checkpoint.read(contentsOf: url), sd)
            assertSameTensors(try Checkpoint.read(contentsOf: url, key: entry), sd)
        }
        // The converted model is the one converted from the plain state dict.
        let url = try trainingCheckpoint(sd, entries: ["model"])
        let a = try Converter.convert(tensors: try Checkpoint.read(contentsOf: url), options: .init(imageSize: 8))
        let b = try Converter.convert(tensors: sd, options: .init(imageSize: 8))
        XCTAssertEqual(try ModelFile.encode(a), try ModelFile.encode(b))
    }

    func testWrapperPrefixesAreStripped() throws {
        let sd = try fixture()
        for prefix in ["module.", "_orig_mod.", "_orig_mod.module."] {
            assertSameTensors(try Checkpoint.read(contentsOf: try trainingCheckpoint(sd, entries: ["ema"], prefix: prefix)), sd)
        }
        // Two names that become one are refused.
        var p = PickleWriter()
        p.beginStateDict()
        p.tensor("module.w", storage: "0", type: "FloatStorage", numel: 1, offset: 0, size: [1], stride: [1])
        p.tensor("w", storage: "1", type: "FloatStorage", numel: 1, offset: 0, size: [1], stride: [1])
        p.endStateDict()
        let url = try writeTorchZip(pickle: p.bytes, storages: ["0": floatBytes([1]), "1": floatBytes([2])])
        try expectError(.notAStateDict, mentioning: ["'module.w' and 'w'"]) { try Checkpoint.read(contentsOf: url) }
    }

    func testSeveralCandidatesNeedKey() throws {
        let sd = try fixture()
        let url = try trainingCheckpoint(sd, entries: ["model", "ema"])
        try expectError(.notAStateDict, mentioning: ["several state dicts: model, ema", "--key"]) { try Checkpoint.read(contentsOf: url) }
        assertSameTensors(try Checkpoint.read(contentsOf: url, key: "ema"), sd)
        try expectError(.notAStateDict, mentioning: ["--key nope", "model, ema"]) { try Checkpoint.read(contentsOf: url, key: "nope") }
        // --key names a dict entry holding tensors; optimizer state is not one.
        try expectError(.notAStateDict, mentioning: ["state", "dict"]) { try Checkpoint.read(contentsOf: url, key: "optimizer") }
    }

    func testNoCandidateListsTheEntries() throws {
        let url = try trainingCheckpoint(try fixture(), entries: ["net"])
        try expectError(.notAStateDict, mentioning: ["no state dict found", "'net' (dict)", "'step' (int)", "--key with one of: net"]) {
            try Checkpoint.read(contentsOf: url)
        }
        assertSameTensors(try Checkpoint.read(contentsOf: url, key: "net"), try fixture())
    }

    func testDangerousGlobalsStayRefusedInsideTrainingCheckpoints() throws {
        // {"model": sd, "args": argparse.Namespace()} - a class instance is code, refused by name.
        var p = PickleWriter()
        p.op(0x7D); p.op(0x28)
        p.string("args")
        p.global("argparse", "Namespace")
        p.op(0x29); p.op(0x52)
        p.op(0x75); p.op(0x2E)
        let url = try writeTorchZip(pickle: p.bytes, storages: [:])
        try expectError(.refusedGlobal, mentioning: ["argparse.Namespace"]) { try Checkpoint.read(contentsOf: url) }
        // A tensor of another element type inside the state dict is refused by its storage name.
        var q = PickleWriter()
        q.op(0x7D); q.op(0x28)
        q.string("model")
        q.beginStateDict()
        q.tensor("w", storage: "0", type: "DoubleStorage", numel: 1, offset: 0, size: [1], stride: [1])
        q.op(0x75)
        q.op(0x75); q.op(0x2E)
        let u2 = try writeTorchZip(pickle: q.bytes, storages: ["0": [UInt8](repeating: 0, count: 8)])
        try expectError(.unsupportedDType, mentioning: ["torch.DoubleStorage", "w"]) { try Checkpoint.read(contentsOf: u2) }
    }

    func testConvertCommandWithKey() throws {
        let url = try trainingCheckpoint(try fixture(), entries: ["model", "ema"], prefix: "module.")
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-train-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let out = tmp.appendingPathComponent("m.tflow").path
        let bad = try runTarflow(["convert", url.path, "-o", out, "--image-size", "8"], repo: repo)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.err.contains("several state dicts: model, ema"), bad.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let ok = try runTarflow(["convert", url.path, "-o", out, "--image-size", "8", "--key", "ema"], repo: repo)
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssertEqual(ok.err, "", "no progress bar when stderr is not a terminal")
        let m = try ModelFile.read(contentsOf: URL(fileURLWithPath: out))
        let plain = try Converter.convert(tensors: try fixture(), options: .init(imageSize: 8))
        XCTAssertEqual(m.tensors.map(\.name), plain.tensors.map(\.name))
        XCTAssertEqual(m.tensors.map { $0.floats() }, plain.tensors.map { $0.floats() })
    }
}

extension PickleWriter {
    /// BINFLOAT: a big-endian double.
    mutating func float(_ v: Double) {
        op(0x47)
        let bits = v.bitPattern
        raw((0..<8).map { UInt8((bits >> (56 - 8 * UInt64($0))) & 0xFF) })
    }

    /// A tensor value alone (no key before it), e.g. inside optimizer state.
    mutating func tensor(_ unused: String, storage: String, type: String, numel: Int, offset: Int, size: [Int], stride: [Int], keyless: Bool) {
        let start = bytes.count
        tensor("", storage: storage, type: type, numel: numel, offset: offset, size: size, stride: stride)
        // Drop the BINUNICODE of the empty key the keyed form writes first (5 bytes).
        bytes.removeSubrange(start..<(start + 5))
    }
}
