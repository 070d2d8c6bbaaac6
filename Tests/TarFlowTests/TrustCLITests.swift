import Foundation
import XCTest
import FlowIR
@testable import FlowRuntime
@testable import TarFlow
@testable import tarflow

/// Issue 12 ("no crash on any input, bounded memory, never a silent NaN"), from the command
/// line: every case there and its neighbours end in one `error:` line and exit 1 (or a
/// warning), never a signal, a non-finite result with exit 0 or a lost file. Hostile inputs are
/// made here from `Models/mnist.tflow` and the tiny models, never stored.
extension CLIHardeningTests {
    var mnist: URL { repo.appendingPathComponent("Models/mnist.tflow") }

    /// A copy of Models/mnist.tflow with `edit` applied (metadata, tensors), written to `name`.
    func editedMNIST(_ name: String, _ edit: (inout Model) -> Void) throws -> String {
        var m = try ModelFile.read(contentsOf: mnist)
        edit(&m)
        let url = tmp.appendingPathComponent(name)
        try ModelFile.write(m, to: url)
        return url.path
    }

    func mnistImages(_ name: String, count: Int, value: (Int) -> Float) throws -> String {
        try npy(name, shape: [count, 1, 28, 28], (0..<(count * 784)).map(value))
    }

    // MARK: Sizes from outside

    /// img_size = 2^40 in a model file's metadata trapped (SIGILL) computing the patch count.
    func testHugeMetadataSizesAreOneLineErrorsNamingTheKey() throws {
        let cases: [(String, Int64)] = [("img_size", 1 << 40), ("patch_size", 1 << 40), ("channels", 1 << 40), ("num_blocks", 1 << 40),
                                        ("in_channels", 1 << 62), ("head_dim", 1 << 40), ("expansion", 1 << 40), ("layers_per_block", -1),
                                        ("num_classes", -1), ("img_size", -28), ("num_classes", 1 << 40), ("img_size", Int64.max)]
        for (key, value) in cases {
            let path = try editedMNIST("big-\(key).tflow") { $0.metadata["tarflow.\(key)"] = .int(value) }
            try assertFails(["sample", path, "--count", "1", "-o", keep.path], mentions: [path, key, "out of range"])
        }
    }

    /// A config JSON with img_size = 2^32 (patch 1) trapped in `compile --config`.
    func testHugeConfigSizesAreOneLineErrorsNamingTheKey() throws {
        let base: [String: Any] = ["in_channels": 1, "img_size": 28, "patch_size": 4, "channels": 128, "num_blocks": 4, "layers_per_block": 4]
        let cases: [(String, Int64)] = [("img_size", 1 << 32), ("patch_size", 1 << 40), ("channels", 1 << 62), ("in_channels", Int64.max),
                                        ("num_blocks", -4), ("head_dim", 0), ("expansion", 1 << 33), ("num_classes", -1)]
        for (key, value) in cases {
            var d = base
            d[key] = value
            if key == "img_size" { d["patch_size"] = 1 }
            let config = tmp.appendingPathComponent("c-\(key).json")
            try JSONSerialization.data(withJSONObject: d).write(to: config)
            try assertFails(["compile", "--config", config.path, "--random-weights", "0", "-o", keep.path], mentions: [config.path, key])
        }
    }

    /// Negative numbers given to size flags were read as flags ("Missing value").
    func testNegativeSizeFlagsMustBePositive() throws {
        let images = try npy("x.npy", shape: [2, 1, 4, 4], [Float](repeating: 0.1, count: 32))
        for (args, flag) in [(["convert", cond, "-o", keep.path, "--image-size", "-8"], "--image-size -8"),
                             (["convert", cond, "-o", keep.path, "--patch-size", "-2"], "--patch-size -2"),
                             (["convert", cond, "-o", keep.path, "--in-channels", "-1"], "--in-channels -1"),
                             (["likelihood", uncond, "--images", images, "--batch-size", "-8"], "--batch-size -8"),
                             (["likelihood", uncond, "--images", images, "--limit", "-2"], "--limit -2"),
                             (["sample", uncond, "--count", "2", "--grid-columns", "-3", "-o", keep.path], "--grid-columns -3"),
                             (["classify", cond, "--images", images, "--batch-size", "-1"], "--batch-size -1"),
                             (["denoise", cond, "--images", images, "--batch-size", "-1", "-o", keep.path], "--batch-size -1"),
                             (["compile", uncond, "-o", keep.path, "--batch", "-8"], "-8")] {
            try assertFails(args, mentions: [flag, "must be positive"])
        }
        try assertFails(["likelihood", uncond, "--images", images, "--offset", "-1"], mentions: ["--offset -1", ">= 0"])
        try assertFails(["likelihood", uncond, "--images", images, "--threads", "-1"], mentions: ["--threads -1"])
    }

    // MARK: Metadata agrees with tensors and graphs

    /// Setting num_blocks to 2 in the 4-block MNIST file made `sample` run two blocks.
    func testEditedMetadataIsRefusedNamingTheKey() throws {
        let edits: [(String, MetadataValue)] = [("num_blocks", .int(2)), ("num_blocks", .int(5)), ("channels", .int(256)), ("nvp", .bool(false)),
                                                ("num_classes", .int(3)), ("num_classes", .int(0)), ("head_dim", .int(32)), ("patch_size", .int(2)),
                                                ("in_channels", .int(3)), ("img_size", .int(32)), ("layers_per_block", .int(2)), ("expansion", .int(2))]
        for (key, value) in edits {
            let path = try editedMNIST("edit-\(key).tflow") { $0.metadata["tarflow.\(key)"] = value }
            try assertFails(["sample", path, "--count", "1", "-o", keep.path], mentions: [path, "'tarflow.\(key)'"])
            if key == "num_blocks" { try assertFails(["compile", path, "-o", keep.path], mentions: ["'tarflow.\(key)'"]) }
        }
        // The file as shipped still runs.
        let r = try tarflow(["sample", mnist.path, "--count", "1", "-o", tmp.appendingPathComponent("ok.npy").path, "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
    }

    // MARK: Never a non-finite result

    /// A model with one NaN weight: every command that computes refuses to write or print.
    func testNaNWeightIsAnErrorNamingTheFirstImageAndNothingIsWritten() throws {
        var m = try TinyModels.model(classes: 3)
        let i = try XCTUnwrap(m.tensors.firstIndex { $0.name == "blocks.1.proj_out.bias" })
        var values = [Float](repeating: 0, count: elementCount(m.tensors[i].shape)!)
        values[0] = .nan
        m.tensors[i] = WeightTensor(name: m.tensors[i].name, dtype: .float32, shape: m.tensors[i].shape, bytes: TensorBytes(floats: values))
        let bad = tmp.appendingPathComponent("nan.tflow").path
        try ModelFile.write(m, to: URL(fileURLWithPath: bad))
        let images = try npy("x.npy", shape: [2, 1, 4, 4], (0..<32).map { Float($0 % 7) / 7 - 0.5 })
        let png = tmp.appendingPathComponent("s.png")
        try assertFails(["sample", bad, "--count", "2", "--label", "1", "-o", keep.path], mentions: ["sample of image 0", "NaN", "nothing was written"])
        try assertFails(["sample", bad, "--count", "2", "-o", png.path], mentions: ["image 0", "NaN"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: png.path))
        try assertFails(["likelihood", bad, "--images", images, "--json"], mentions: ["image 0", "NaN"])
        let save = tmp.appendingPathComponent("l.safetensors")
        try assertFails(["likelihood", bad, "--images", images, "--save", save.path], mentions: ["image 0"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: save.path))
        try assertFails(["denoise", bad, "--images", images, "-o", keep.path], mentions: ["image 0", "NaN"])
        try assertFails(["classify", bad, "--images", images, "--json"], mentions: ["image 0", "loss", "NaN"])
    }

    /// Float images in [0, 255] gave "bits_per_dim": inf with exit 0; they are refused with the
    /// conversion to apply. A batch in [0, 1] gets a one-line warning.
    func testFloatImagesOutsideModelSpaceAreRefusedWithTheConversion() throws {
        let bytes = try mnistImages("x255.npy", count: 2) { Float($0 % 256) }
        for cmd in [["likelihood", mnist.path, "--images", bytes, "--json"], ["classify", mnist.path, "--images", bytes],
                    ["denoise", mnist.path, "--images", bytes, "-o", keep.path]] {
            try assertFails(cmd, mentions: [bytes, "x/127.5 - 1", "uint8"])
        }
        let unit = try mnistImages("x01.npy", count: 2) { Float($0 % 11) / 10 }
        let r = try tarflow(["likelihood", mnist.path, "--images", unit, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
        XCTAssertTrue(r.err.hasPrefix("warning: ") && r.err.contains("[0, 1]") && r.err.contains("2x - 1"), r.err)
        XCTAssertFalse(r.out.contains("nan") || r.out.contains("inf"), r.out)
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(r.out.utf8)))
        // Model-space images: no warning.
        let ok = try mnistImages("xm.npy", count: 2) { Float($0 % 11) / 5 - 1 }
        XCTAssertEqual(try tarflow(["likelihood", mnist.path, "--images", ok]).err, "")
    }

    func testConvertRefusesNonFiniteWeightsNamingTheTensor() throws {
        let tensors = try Checkpoint.read(contentsOf: Fixtures.url("tiny_uncond", "model.safetensors"))
        for (k, bad) in [Float.nan, .infinity, -.infinity].enumerated() {
            let name = tensors[k + 2].name
            let arrays = tensors.map { t -> (name: String, array: Tensor) in
                var f = t.tensor.floats
                if t.name == name { f[f.count - 1] = bad }
                return (t.name, Tensor(shape: t.tensor.shape, floats: f))
            }
            XCTAssertTrue(tensors.allSatisfy { $0.tensor.dtype == .float32 })
            let ckpt = tmp.appendingPathComponent("bad\(k).safetensors")
            try SafetensorsWriter.write(arrays, to: ckpt)
            try assertFails(["convert", ckpt.path, "-o", keep.path, "--image-size", "8"], mentions: [name, "NaN or Inf"])
        }
    }

    // MARK: Nothing lost

    func testAnOutputThatIsAnInputIsRefusedBeforeWork() throws {
        let ckpt = tmp.appendingPathComponent("ckpt.safetensors")
        try FileManager.default.copyItem(at: Fixtures.url("tiny_uncond", "model.safetensors"), to: ckpt)
        let images = try npy("x.npy", shape: [2, 1, 4, 4], [Float](repeating: 0.1, count: 32))
        let link = tmp.appendingPathComponent("link.tflow").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: cond)
        let z = try npy("z.npy", shape: [2, 4, 4], [Float](repeating: 0.1, count: 32))
        let before = try [ckpt.path, images, cond, z].map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        // A likelihood --save that is the model or the images is refused by its extension first.
        for args in [["likelihood", cond, "--images", images, "--save", cond], ["likelihood", cond, "--images", images, "--save", images]] {
            try assertFails(args, mentions: ["--save", "must end in .safetensors or .npz"])
        }
        for args in [["convert", ckpt.path, "-o", ckpt.path, "--image-size", "8"], ["compile", cond, "-o", cond], ["compile", cond, "-o", link],
                     ["sample", uncond, "--noise", z, "-o", z], ["denoise", cond, "--images", images, "-o", images],
                     ["denoise", cond, "--images", images, "-o", keep.path, "--save-grad", keep.path],
                     ["classify", cond, "--images", images, "--save", images], ["inspect", cond, "--dot", link]] {
            try assertFails(args, mentions: ["same file"])
        }
        XCTAssertEqual(try [ckpt.path, images, cond, z].map { try Data(contentsOf: URL(fileURLWithPath: $0)) }, before)
    }

    func testOutputPathsAreCheckedBeforeWork() throws {
        try assertFails(["sample", uncond, "--count", "2", "--out-dir", keep.path], mentions: ["--out-dir", keep.path, "not a folder"])
        try assertFails(["sample", uncond, "--count", "2", "--out-dir", keep.path + "/sub"], mentions: ["--out-dir", "is a file"])
        try assertFails(["compile", uncond, "-o", tmp.appendingPathComponent("missing/x.tflow").path], mentions: ["-o", "does not exist"])
        try assertFails(["compile", uncond, "-o", tmp.path], mentions: ["-o", "is a folder"])
        try assertFails(["inspect", uncond, "--dot", tmp.appendingPathComponent("missing/g.dot").path], mentions: ["--dot", "does not exist"])
        // A folder that does not exist yet is created.
        let dir = tmp.appendingPathComponent("new/pngs")
        XCTAssertEqual(try tarflow(["sample", uncond, "--count", "2", "--out-dir", dir.path, "--quiet"]).status, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["000000.png", "000001.png"])
    }

    func testTrueLabelsOutOfRangeAreAnError() throws {
        let images = try npy("x.npy", shape: [2, 1, 4, 4], [Float](repeating: 0.1, count: 32))
        try assertFails(["classify", cond, "--images", images, "--true-labels", try labels("t.npy", [0, 3])], mentions: ["--true-labels", "3", "0...2"])
        try assertFails(["classify", cond, "--images", images, "--true-labels", try labels("t2.npy", [-1, 0])], mentions: ["--true-labels", "-1"])
        XCTAssertEqual(try tarflow(["classify", cond, "--images", images, "--true-labels", try labels("t3.npy", [2, 0])]).status, 0)
    }

    /// Ctrl-C (or kill) while `compile` writes its output removes the temporary file.
    func testInterruptedWriteLeavesNoTemporaryFile() throws {
        // ~100 MB of generated weights: writing and syncing takes long enough to be caught.
        let config = tmp.appendingPathComponent("c.json")
        try Data(#"{"in_channels": 1, "img_size": 16, "patch_size": 2, "channels": 256, "num_blocks": 4, "layers_per_block": 8}"#.utf8).write(to: config)
        for sig in [SIGINT, SIGTERM] {
            let out = tmp.appendingPathComponent("big-\(sig).tflow")
            let p = Process()
            p.executableURL = tarflowExecutable()
            p.arguments = ["compile", "--config", config.path, "--random-weights", "0", "-o", out.path, "--functions", "none"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            var caught = false
            let deadline = Date().addingTimeInterval(120)
            while p.isRunning && Date() < deadline {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? []
                if names.contains(where: { $0.hasPrefix(".big-\(sig).tflow.tmp-") }) {
                    kill(p.processIdentifier, sig)
                    caught = true
                    break
                }
                usleep(200)
            }
            p.waitUntilExit()
            XCTAssertTrue(caught, "the write finished before the signal could be sent")
            XCTAssertEqual(p.terminationReason, .uncaughtSignal)
            XCTAssertEqual(p.terminationStatus, sig)
            let left = try FileManager.default.contentsOfDirectory(atPath: tmp.path).filter { $0.contains(".tmp-") }
            XCTAssertEqual(left, [], "temporary files left behind after signal \(sig)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
    }

    /// A model file truncated while `sample` runs: SIGBUS on the mapped file becomes one line
    /// naming the file, and exit 1, and nothing is written. The model is read while the run
    /// loads and prepares its plans (weights are packed and the file's pages dropped then), so
    /// the cut comes early, at growing delays until one lands inside those reads; a run cut
    /// before it opened the file is refused as a short file, a run cut after its last read
    /// finishes normally.
    func testModelFileTruncatedDuringARunIsAnError() throws {
        let path = tmp.appendingPathComponent("victim.tflow").path
        var hit = false
        for delay in [5_000, 15_000, 30_000, 60_000, 100_000, 160_000, 250_000, 400_000, 700_000] as [UInt32] where !hit {
            try? FileManager.default.removeItem(atPath: path)
            try FileManager.default.copyItem(atPath: mnist.path, toPath: path)
            let out = tmp.appendingPathComponent("cut-\(delay).png")
            let p = Process()
            p.executableURL = tarflowExecutable()
            p.arguments = ["sample", path, "--count", "64", "-o", out.path, "--quiet"]
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            usleep(delay)
            XCTAssertEqual(truncate(path, 0), 0)
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            XCTAssertEqual(p.terminationReason, .exit, "killed by signal \(p.terminationStatus): \(text)")
            guard p.terminationStatus != 0 else { continue }  // every read was done before the cut
            XCTAssertEqual(p.terminationStatus, 1, text)
            XCTAssertEqual(text.split(separator: "\n").count, 1, text)
            XCTAssertTrue(text.hasPrefix("error: ") && text.contains(path), text)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "a failed run wrote \(out.path)")
            hit = text.contains("SIGBUS")
        }
        XCTAssertTrue(hit, "no run read the truncated file")
    }

    /// Under `ulimit -v` the estimate compares with the address-space limit, not RAM: a batch
    /// whose estimate lies between the limit and this machine's RAM is refused with the numbers.
    func testMemoryEstimateHonoursTheAddressSpaceLimit() throws {
        let limitKB = 4_000_000, limit = limitKB * 1024
        let m = try TarFlowModel(model: try TinyModels.model())
        let per = try m.memoryNeed(.sample(images: 1000, options: SamplingOptions(), denoise: false)).bytes / 1000
        let n = 2 * limit / per
        let estimate = try m.memoryNeed(.sample(images: n, options: SamplingOptions(), denoise: false)).bytes
        XCTAssertGreaterThan(estimate, limit)
        try XCTSkipUnless(estimate < MemoryLimit.physicalRAM(), "this machine has less RAM than the batch chosen to exceed the limit")
        let exe = tarflowExecutable().path
        let r = try runProcess(URL(fileURLWithPath: "/bin/bash"),
                               ["-c", "ulimit -v \(limitKB) && exec \"$0\" sample \"$1\" --count \(n) -o \"$2\"", exe, uncond, keep.path])
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertTrue(r.err.hasPrefix("error: --count \(n)") && r.err.contains("RLIMIT_AS (ulimit -v) \(limit) bytes"), r.err)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
        XCTAssertEqual(try String(contentsOf: keep, encoding: .utf8), "precious")
    }

    func tarflowExecutable() -> URL {
        let exe = Bundle.main.bundleURL.appendingPathComponent("tarflow")
        return FileManager.default.fileExists(atPath: exe.path) ? exe : repo.appendingPathComponent(".build/debug/tarflow")
    }
}
