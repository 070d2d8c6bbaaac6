import FlowIR
import Foundation
import TarFlow
import XCTest

/// A config, model, checkpoint, input or result the TarFlow layer refuses is a `TarFlowError`
/// whose failure has a closed kind with the key, tensor or index as data, so a caller branches
/// without reading text; the text is checked too, since the CLI prints it unchanged.
final class TarFlowFailureKindTests: XCTestCase {
    func error(_ body: () throws -> Any) -> TarFlowError? {
        do { _ = try body() } catch { return error as? TarFlowError }
        return nil
    }

    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Models/mnist.tflow with `tarflow.num_blocks` edited from 4 to 3: the key is named, with
    /// both values and the file.
    func testEditedMetadataKeyOfTheShippedModel() throws {
        var m = try ModelFile.read(contentsOf: repo.appendingPathComponent("Models/mnist.tflow"))
        XCTAssertEqual(m.metadata["tarflow.num_blocks"], .int(4))
        m.metadata["tarflow.num_blocks"] = .int(3)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("failure-kinds-\(getpid()).tflow")
        defer { try? FileManager.default.removeItem(at: url) }
        try ModelFile.write(m, to: url)
        let e = error { try TarFlowModel(contentsOf: url) }
        guard case .invalidModel(let f)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(f.file, url.path)
        XCTAssertEqual(f.kind, .metadataDisagrees(key: "tarflow.num_blocks", metadata: "3", found: "4", source: "the tensors blocks.K.proj_in.weight"))
        XCTAssertEqual(e?.description, "invalid model: \(url.path): metadata 'tarflow.num_blocks' is 3 but the tensors blocks.K.proj_in.weight says 4; "
                       + "the metadata, tensors and graphs disagree: re-convert the checkpoint with `tarflow convert`")
    }

    /// A metadata value out of range is the config's own failure inside the model's.
    func testOutOfRangeMetadataCarriesTheConfigFailure() throws {
        var m = try TinyModels.model()
        m.metadata["tarflow.head_dim"] = .int(0)
        let e = error { try TarFlowModel(model: m) }
        XCTAssertEqual(e, .invalidModel(ModelFailure(.invalidMetadata(ConfigFailure(.outOfRange(key: "head_dim", value: 0, range: 1...65536))))))
        XCTAssertEqual(e?.description, "invalid model: metadata (tarflow.*): head_dim 0 is out of range: use 1...65536; "
                       + "the file was damaged or edited: re-convert the checkpoint with `tarflow convert`")
        m.metadata["tarflow.head_dim"] = nil
        XCTAssertEqual(error { try TarFlowModel(model: m) }, .invalidModel(ModelFailure(.missingMetadata(key: "tarflow.head_dim"))))
    }

    /// A graph whose signature does not fit the metadata's config names the graph, the value and the config.
    func testGraphMismatchNamesGraphAndValue() throws {
        var m = try TinyModels.model()
        let f = try XCTUnwrap(m.graphs.firstIndex { $0.name == "forward" })
        let logdets = try XCTUnwrap(m.graphs[f].value(named: "logdets"))
        m.graphs[f].outputs.removeAll { $0 == logdets }
        let e = error { try TarFlowModel(model: m) }
        XCTAssertEqual(e, .invalidModel(ModelFailure(.graphMismatch(graph: "forward", .missingOutput(name: "logdets"), config: TinyModels.config(classes: 0)))))
        XCTAssertEqual(e?.description, "invalid model: graph 'forward': output 'logdets' is missing (config 1x4x4, patch 2, 0 classes); "
                       + "the file's metadata and graphs disagree: re-convert the checkpoint with `tarflow convert`")
    }

    func testConfigJSONFailuresNameTheKey() {
        func parse(_ json: String) -> TarFlowError? { error { try AheadOfTime.parseConfig(Data(json.utf8), path: "cfg.json") } }
        let base = #""in_channels": 1, "img_size": 28, "patch_size": 4, "num_blocks": 2, "layers_per_block": 1"#
        let range = parse("{\(base), \"channels\": 70000}")
        XCTAssertEqual(range, .invalidConfig(ConfigFailure(.outOfRange(key: "channels", value: 70000, range: 1...65536), file: "cfg.json")))
        XCTAssertEqual(range?.description, "invalid config: cfg.json: channels 70000 is out of range: use 1...65536")
        let multiple = parse("{\(base), \"channels\": 96, \"head_dim\": 64}")
        XCTAssertEqual(multiple, .invalidConfig(ConfigFailure(.notMultiple(key: "channels", value: 96, divisorKey: "head_dim", divisor: 64), file: "cfg.json")))
        XCTAssertEqual(multiple?.description, "invalid config: cfg.json: channels 96 is not a multiple of head_dim 64")
        let missing = parse("{\(base)}")
        XCTAssertEqual(missing, .invalidConfig(ConfigFailure(.missingKey("channels"), file: "cfg.json")))
        XCTAssertEqual(missing?.description, "invalid config: cfg.json: missing key 'channels'")
        let noise = parse("{\(base), \"channels\": 64, \"noise_std\": -1}")
        XCTAssertEqual(noise, .invalidConfig(ConfigFailure(.badNoiseStd, file: "cfg.json")))
        XCTAssertEqual(noise?.description, "invalid config: cfg.json: noise_std must be a finite number >= 0")
    }

    /// A NaN weight makes a NaN result: the quantity and the first image are data.
    func testNonFiniteResultNamesQuantityAndImage() throws {
        let model = try TarFlowModel(model: try TinyModels.model(nanIn: "blocks.0.proj_out.bias", at: 1))
        let set = ImageSet(count: 5, channels: 1, size: 4, pixels: .float([Float](repeating: 0.1, count: 80)))
        let e = error { try model.likelihood(images: set, labels: nil, range: 3..<5, batchSize: 1) }
        guard case .nonFinite(let r)? = e else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(r.quantity, "z")
        XCTAssertEqual(r.image, 3)
        XCTAssertTrue(r.value.isNaN)
        XCTAssertEqual(e?.description, "non-finite result: z of image 3 is NaN; the model file's weights or the images are damaged "
                       + "(images must be in model space [-1, 1]); nothing was written")
        let inf = error { try Finite.check([Float(1), 2, .infinity], rowSize: 1, what: "logdets", firstImage: 10) }
        XCTAssertEqual(inf, .nonFinite(NonFiniteResult(quantity: "logdets", value: .infinity, image: 12)))
        XCTAssertEqual(inf?.description, "non-finite result: logdets of image 12 is inf; the model file's weights or the images are damaged "
                       + "(images must be in model space [-1, 1]); nothing was written")
    }

    func testInvalidInputsCarryTheirData() throws {
        let model = try TarFlowModel(model: try TinyModels.model(classes: 3))
        let set = ImageSet(count: 2, channels: 1, size: 4, pixels: .float([Float](repeating: 0.1, count: 32)))
        let label = error { try model.likelihood(images: set, labels: [0, 5]) }
        XCTAssertEqual(label, .invalidInput(InputFailure(.labelOutOfRange(label: 5, classes: 3))))
        XCTAssertEqual(label?.description, "invalid input: label 5 is out of range: use 0...2, or -1 for no label")
        let count = error { try model.likelihood(images: set, labels: [0]) }
        XCTAssertEqual(count, .invalidInput(InputFailure(.labelCount(labels: 1, images: 2))))
        XCTAssertEqual(count?.description, "invalid input: 1 labels for 2 images")

        let shard = error { try Shard.parse("3/2") }
        XCTAssertEqual(shard, .invalidInput(InputFailure(.shardIndex(index: 3, count: 2))))
        XCTAssertEqual(shard?.description, "invalid input: --shard 3/2: K must be in 0...1 (shards are numbered from 0)")
        let env = error { try Shard.parse("auto", environment: ["SLURM_ARRAY_TASK_ID": "x1"]) }
        XCTAssertEqual(env, .invalidInput(InputFailure(.environmentNotInteger(name: "SLURM_ARRAY_TASK_ID", value: "x1"))))
        XCTAssertEqual(env?.description, "invalid input: --shard auto: SLURM_ARRAY_TASK_ID=x1 is not a non-negative integer")

        // Noise from a file: the failure of the noise itself, located in the file.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("failure-kinds-noise-\(getpid()).npy")
        defer { try? FileManager.default.removeItem(at: url) }
        try NPY.write(Tensor(shape: [1, 4, 4], floats: [0, 0, .infinity] + [Float](repeating: 0, count: 13)), to: url)
        let noise = error { try model.noise(contentsOf: url) }
        XCTAssertEqual(noise, .invalidInput(InputFailure(.noiseNotFinite(element: 2, value: .infinity), file: url.path)))
        XCTAssertEqual(noise?.description, "invalid input: \(url.path): element 2 is inf; noise must be finite")
        // Noise that is not float32, given as a tensor and as a file: one rendering (the dtype's
        // name, as NumPy spells it), located in the file when it came from one.
        let f64 = Tensor(shape: [1, 4, 4], doubles: [Double](repeating: 0, count: 16))
        let given = error { try model.sample(noise: f64) }
        XCTAssertEqual(given, .invalidInput(InputFailure(.noiseDType(.float64))))
        XCTAssertEqual(given?.description, "invalid input: noise must be float32, is float64")
        try NPY.write(f64, to: url)
        let read = error { try model.noise(contentsOf: url) }
        XCTAssertEqual(read, .invalidInput(InputFailure(.noiseDType(.float64), file: url.path)))
        XCTAssertEqual(read?.description, "invalid input: \(url.path): noise must be float32, is float64")

        let batches = error { try AheadOfTime.parseBatches("1,x") }
        XCTAssertEqual(batches, .invalidInput(InputFailure(.batchNotWhole("x"))))
        XCTAssertEqual(batches?.description, "invalid input: batch size 'x' is not a whole number in 1...1073741823 (give a list like 1,16,64)")
    }

    func testStateDictFailure() {
        let e = error { try Converter.convert(tensors: [], options: .init()) }
        XCTAssertEqual(e, .invalidCheckpoint(StateDictFailure(.notTarFlow)))
        XCTAssertEqual(e?.description, "invalid checkpoint: no 'blocks.0.proj_in.weight': not a TarFlow state_dict")
    }

    /// The checkpoint failure of `body`, with its case, subject and text.
    func checkpointFailure(_ body: () throws -> Any) throws -> TarFlowError.CheckpointFailure {
        let e = error(body)
        if case .checkpoint(let f)? = e { return f }
        return try XCTUnwrap(nil, "not a checkpoint failure: \(String(describing: e))")
    }

    func temporaryFile(_ bytes: [UInt8], _ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("failure-kinds-\(getpid())-\(name)")
        try Data(bytes).write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Hostile pickles fail at the opcode that refuses them, with the global, opcode byte or
    /// view as data and the subject naming the opcode and its offset.
    func testHostilePicklesGiveTheirCaseAndText() throws {
        let archive = try temporaryFile(StoredZip.make([("archive/data.pkl", PickleWriter.osSystem.bytes), ("archive/byteorder", Array("little".utf8))]), "os.pth")
        var f = try checkpointFailure { try Checkpoint.read(contentsOf: archive) }
        XCTAssertEqual(f, .init(.refusedGlobal(module: "os", name: "system"), file: archive.path, subject: "data.pkl opcode GLOBAL (0x63) at offset 2"))
        XCTAssertEqual(f.kind, .refusedGlobal)
        XCTAssertEqual(f.description, "checkpoint \(archive.path): data.pkl opcode GLOBAL (0x63) at offset 2: refusing global os.system: "
                       + "a state_dict pickle only needs collections.OrderedDict and torch._utils tensor rebuilders (the file may be malicious, "
                       + "or is a training checkpoint holding Python objects; never load it with torch.load(weights_only=False) — re-save "
                       + "model.state_dict() (or a dict of state dicts, numbers and strings) from a trusted source, or use safetensors)")

        func pickle(_ bytes: [UInt8]) throws -> TarFlowError.CheckpointFailure {
            try checkpointFailure { try Checkpoint.read(pickle: bytes) { _, n in [UInt8](repeating: 0, count: n) } }
        }
        f = try pickle([0x80, 0x02, 0x69])
        XCTAssertEqual(f.reason, .unsupportedOpcode(0x69))
        XCTAssertEqual(f.kind, .unsupportedOpcode)
        XCTAssertEqual(f.description, "checkpoint data.pkl: data.pkl opcode INST (0x69) at offset 2: opcode is not needed by a torch state_dict "
                       + "and is not supported (the file is not a torch.save(state_dict) pickle, or it is corrupted)")
        XCTAssertEqual(try pickle([0x80, 0x02, 0xFF]).description, "checkpoint data.pkl: data.pkl opcode UNKNOWN (0xff) at offset 2: "
                       + "unknown pickle opcode (the file is not a torch.save(state_dict) pickle, or it is corrupted)")
        f = try pickle([0x80, 0x02, 0x2E])
        XCTAssertEqual(f.reason, .malformedPickle(.stackUnderflow))
        XCTAssertEqual(f.kind, .malformedPickle)
        XCTAssertEqual(f.description, "checkpoint data.pkl: data.pkl opcode STOP (0x2e) at offset 2: stack underflow "
                       + "(the pickle is corrupted or was not written by torch.save(state_dict))")

        // A (2, 3) view at offset 1 with strides (3, 1) reaches element 6 of a 6-element storage:
        // refused at its _rebuild_tensor_v2 REDUCE, the third-last byte.
        var view = PickleWriter()
        view.beginStateDict()
        view.tensor("w", storage: "0", type: "FloatStorage", numel: 6, offset: 1, size: [2, 3], stride: [3, 1])
        view.endStateDict()
        f = try pickle(view.bytes)
        XCTAssertEqual(f.reason, .viewBeyondStorage(offset: 1, shape: [2, 3], stride: [3, 1], last: 6, storage: "0", numel: 6))
        XCTAssertEqual(f.kind, .malformedTensor)
        XCTAssertEqual(f.description, "checkpoint data.pkl: data.pkl opcode REDUCE (0x52) at offset \(view.bytes.count - 3): "
                       + "view (offset 1, size [2, 3], stride [3, 1]) reaches element 6 of storage '0' which has 6 (the checkpoint is corrupted)")
    }

    /// Damaged archives and safetensors name the entry or tensor, with sizes, checksums and the
    /// zip library's own words as data.
    func testDamagedFilesGiveTheirCaseAndText() throws {
        var p = PickleWriter()
        p.beginStateDict()
        p.endStateDict()
        let zip = StoredZip.make(entries: [
            .init(name: "archive/data.pkl", method: 0, crc: 0x1234_5678, data: p.bytes, size: p.bytes.count),
        ])
        let crc = try temporaryFile(zip, "crc.pth")
        var f = try checkpointFailure { try Checkpoint.read(contentsOf: crc) }
        let computed = StoredZip.crc32(p.bytes)
        XCTAssertEqual(f, .init(.crcMismatch(computed: computed, recorded: 0x1234_5678), file: crc.path, subject: "archive/data.pkl"))
        XCTAssertEqual(f.kind, .malformedArchive)
        XCTAssertEqual(f.description, "checkpoint \(crc.path): archive/data.pkl: CRC-32 mismatch (computed \(String(format: "%08x", computed)), "
                       + "recorded 12345678) (the file is corrupted; download or save it again)")

        // Without its end-of-central-directory record the zip cannot be opened at all.
        let truncated = try temporaryFile(Array(zip.dropLast(22)), "truncated.pth")
        f = try checkpointFailure { try Checkpoint.read(contentsOf: truncated) }
        XCTAssertEqual(f.reason, .notAZipArchive(.noEndOfCentralDirectory))
        XCTAssertEqual(f.kind, .truncated)
        XCTAssertEqual(f.description, "checkpoint \(truncated.path): not a readable zip archive (no end-of-central-directory record); the end-of-archive directory "
                       + "is missing or damaged (the file is truncated or corrupted; download or save it again)")

        // A deflated entry whose stream is not deflate: the zip library's refusal, by name.
        let garbage: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        let inflate = try temporaryFile(StoredZip.make(entries: [
            .init(name: "archive/data.pkl", method: 8, crc: 0, data: garbage, size: 12),
        ]), "inflate.pth")
        f = try checkpointFailure { try Checkpoint.read(contentsOf: inflate) }
        XCTAssertEqual(f.reason, .cannotExtract(.other(name: "CompressionError.corruptedData")), "\(f)")
        XCTAssertEqual(f.kind, .truncated)
        XCTAssertEqual(f.description, "checkpoint \(inflate.path): archive/data.pkl: cannot extract entry (CompressionError.corruptedData) "
                       + "(the file is truncated or corrupted; download or save it again)")

        let header = Array(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.utf8)
        let length = UInt64(header.count)
        let safetensors = try temporaryFile((0..<8).map { UInt8((length >> (8 * UInt64($0))) & 0xFF) } + header + [UInt8](repeating: 0, count: 8),
                                            "short.safetensors")
        f = try checkpointFailure { try Checkpoint.read(contentsOf: safetensors) }
        XCTAssertEqual(f, .init(.offsetsOutsideData(begin: 0, end: 16, dataLength: 8), file: safetensors.path, subject: "w"))
        XCTAssertEqual(f.kind, .truncated)
        XCTAssertEqual(f.description, "checkpoint \(safetensors.path): w: data_offsets [0, 16] fall outside the 8-byte data buffer "
                       + "(the file is truncated or corrupted)")
    }
}
