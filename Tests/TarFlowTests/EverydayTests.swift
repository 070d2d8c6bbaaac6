import Foundation
import XCTest
import FlowIR
@testable import TarFlow
@testable import tarflow

/// Everyday use of the tool (issue 14): output formats chosen by extension, guidance flags,
/// `bench --what load`, the `inspect` summary, progress bars, the shipped MNIST test set.
final class EverydayTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tmp: URL!
    var cond: String { tmp.appendingPathComponent("cond.tflow").path }
    var mnist: String { repo.appendingPathComponent("Models/mnist.tflow").path }
    var mnistImages: String { repo.appendingPathComponent("Models/data/mnist/t10k-images-idx3-ubyte.gz").path }
    var mnistLabels: String { repo.appendingPathComponent("Models/data/mnist/t10k-labels-idx1-ubyte.gz").path }

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-everyday-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        try ModelFile.write(try TinyModels.model(classes: 3), to: URL(fileURLWithPath: cond))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    @discardableResult
    func tarflow(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try runTarflow(args, repo: repo) }

    func path(_ name: String) -> String { tmp.appendingPathComponent(name).path }

    func assertFails(_ args: [String], mentions: [String], status: Int32 = 1, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try tarflow(args)
        XCTAssertEqual(r.status, status, "\(args): \(r.err)", file: file, line: line)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.err.contains(m), "'\(m)' missing from: \(r.err)", file: file, line: line) }
    }

    /// Samples of the random-weight fixture model reach ±5; as likelihood inputs they must lie
    /// in model space (the CLI refuses floats beyond ±4), so they are clamped to [-1, 1].
    func clampToModelSpace(_ p: String) throws {
        let a = try NPY.read(contentsOf: URL(fileURLWithPath: p))
        try NPY.write(Tensor(shape: a.shape, floats: a.floats.map { min(1, max(-1, $0)) }), to: URL(fileURLWithPath: p))
    }

    func npz(_ p: String) throws -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: try NPZ.read(contentsOf: URL(fileURLWithPath: p)).map { ($0.name, $0.array) })
    }

    // MARK: - .npz

    func testNPZRoundTripAndLayout() throws {
        let arrays: [(name: String, array: Tensor)] = [
            ("z", Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, -6])),
            ("labels", Tensor(shape: [2], int64s: [7, -1])),
            ("scalar", Tensor(shape: [], floats: [0.5])),
        ]
        let bytes = try NPZ.encode(arrays)
        XCTAssertEqual(Array(bytes[0..<4]), [0x50, 0x4B, 0x03, 0x04])
        XCTAssertEqual(try NPZ.encode(arrays), bytes, "same arrays, same bytes")
        let url = tmp.appendingPathComponent("a.npz")
        try NPZ.write(arrays, to: url)
        let back = try NPZ.read(contentsOf: url)
        XCTAssertEqual(back.map(\.name), ["z", "labels", "scalar"])
        for (a, b) in zip(arrays, back) {
            XCTAssertEqual(a.array.shape, b.array.shape)
            XCTAssertEqual(a.array.asDoubles(), b.array.asDoubles())
            XCTAssertEqual(a.array.dtype, b.array.dtype)
        }
        // Each member is byte for byte the .npy of its array.
        XCTAssertNotNil(bytes.firstRange(of: try NPY.encode(arrays[0].array)))
        XCTAssertThrowsError(try NPZ.encode([("a", arrays[0].array), ("a", arrays[1].array)]))
        XCTAssertThrowsError(try NPZ.encode([("x/y", arrays[0].array)]))
        // Not an archive, and an archive whose member is not .npy.
        let junk = tmp.appendingPathComponent("junk.npz")
        try Data("not a zip at all".utf8).write(to: junk)
        XCTAssertThrowsError(try NPZ.read(contentsOf: junk)) { XCTAssertTrue("\($0)".contains("not an .npz"), "\($0)") }
        let other = tmp.appendingPathComponent("other.npz")
        try Data(StoredZip.make([("readme.txt", Array("hi".utf8))])).write(to: other)
        XCTAssertThrowsError(try NPZ.read(contentsOf: other)) { XCTAssertTrue("\($0)".contains("readme.txt"), "\($0)") }
    }

    /// numpy.savez's own output (Tests/Fixtures/io/numpy-savez.npz: np.savez(f, a=np.arange(6,
    /// dtype='<f4').reshape(2, 3), b=np.array([3, -1], dtype='<i8'))).
    func testNPZReadsNumpyFiles() throws {
        let a = try npz(repo.appendingPathComponent("Tests/Fixtures/io/numpy-savez.npz").path)
        XCTAssertEqual(Set(a.keys), ["a", "b"])
        XCTAssertEqual(a["a"]?.shape, [2, 3])
        XCTAssertEqual(a["a"]?.floats, [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try a["b"]?.asInt64s(), [3, -1])
    }

    // MARK: - Output formats follow the extension

    func testOutputFormatsFollowTheExtension() throws {
        let images = path("x.npy")
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "3", "--label", "1", "-o", images, "--quiet"]).status, 0)
        try clampToModelSpace(images)
        // sample -o .npz: member 'images', the same values as the .npy.
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "3", "--label", "1", "-o", path("x.npz"), "--quiet"]).status, 0)
        let x = try NPZ.read(contentsOf: URL(fileURLWithPath: path("x.npz")))[0].array.floats.map { min(1, max(-1, $0)) }
        XCTAssertEqual(try NPY.read(contentsOf: URL(fileURLWithPath: images)).floats, x)
        // likelihood --save .npz: z, logdets, bpd; .safetensors still works.
        let l = try tarflow(["likelihood", cond, "--images", images, "--json", "--save", path("l.npz")])
        XCTAssertEqual(l.status, 0, l.err)
        let saved = try npz(path("l.npz"))
        XCTAssertEqual(Set(saved.keys), ["z", "logdets", "bpd", "bits_per_dim", "nll"])
        XCTAssertEqual(saved["z"]?.shape, [3, 4, 4])
        let obj = try JSONSerialization.jsonObject(with: Data(l.out.utf8)) as! [String: Any]
        let bpd = saved["bpd"]!.asDoubles()
        XCTAssertEqual(bpd.reduce(0, +) / 3, obj["bits_per_dim"] as! Double, accuracy: 1e-5)
        XCTAssertEqual(try tarflow(["likelihood", cond, "--images", images, "--save", path("l.safetensors")]).status, 0)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: path("l.safetensors")))[8..<9]), [UInt8(ascii: "{")])
        // classify --save / --save-losses: .npy or .npz.
        XCTAssertEqual(try tarflow(["classify", cond, "--images", images, "--save", path("p.npz"), "--save-losses", path("loss.npy")]).status, 0)
        XCTAssertEqual(try npz(path("p.npz"))["predictions"]?.shape, [3])
        XCTAssertEqual(try NPY.read(contentsOf: URL(fileURLWithPath: path("loss.npy"))).shape, [3, 3])
        // denoise -o / --save-grad: .npy or .npz.
        XCTAssertEqual(try tarflow(["denoise", cond, "--images", images, "-o", path("d.npz"), "--save-grad", path("g.npz")]).status, 0)
        XCTAssertEqual(try npz(path("d.npz"))["images"]?.shape, [3, 1, 4, 4])
        XCTAssertEqual(try npz(path("g.npz"))["grad"]?.shape, [3, 1, 4, 4])

        // A mismatch is an error before any work, naming the flag and the extensions it takes.
        try assertFails(["likelihood", cond, "--images", images, "--save", path("l.npy")], mentions: ["--save", ".safetensors or .npz"])
        try assertFails(["classify", cond, "--images", images, "--save", path("p.safetensors")], mentions: ["--save", ".npy or .npz"])
        try assertFails(["classify", cond, "--images", images, "--save-losses", path("p.png")], mentions: ["--save-losses", ".npy or .npz"])
        try assertFails(["denoise", cond, "--images", images, "-o", path("clean.png")], mentions: ["-o", ".npy or .npz"])
        try assertFails(["denoise", cond, "--images", images, "-o", path("c.npy"), "--save-grad", path("g")], mentions: ["--save-grad", ".npy or .npz"])
        try assertFails(["sample", cond, "--count", "1", "-o", path("s.safetensors")], mentions: ["-o", ".npy, .npz or .png"])
        for f in ["l.npy", "p.safetensors", "p.png", "clean.png", "c.npy", "s.safetensors"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: path(f)), f)
        }
    }

    // MARK: - Guidance

    func testGuidanceFlagsNeedGuidance() throws {
        for flags in [["--guide-what", "a"], ["--attn-temp", "0.8"], ["--annealed"], ["--guide-what", "b", "--annealed"]] {
            try assertFails(["sample", cond, "--count", "1", "--label", "1"] + flags + ["-o", path("s.npy")], mentions: [flags[0], "--guidance"])
        }
        try assertFails(["sample", cond, "--count", "1", "--guidance", "0", "--annealed", "-o", path("s.npy")], mentions: ["--annealed"])
        try assertFails(["sample", cond, "--count", "1", "--guidance", "1", "--guide-what", "c", "-o", path("s.npy")], mentions: ["--guide-what"], status: 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("s.npy")))
        // With guidance they act: each target gives other samples than unguided sampling.
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "2", "--label", "1", "-o", path("plain.npy"), "--quiet"]).status, 0)
        let plain = try NPY.read(contentsOf: URL(fileURLWithPath: path("plain.npy"))).floats
        var seen: [[Float]] = [plain]
        for (i, flags) in [["--guide-what", "a"], ["--guide-what", "b"], ["--guide-what", "both"], ["--guide-what", "ab"],
                           ["--attn-temp", "0.8"], ["--annealed"]].enumerated() {
            let out = path("g\(i).npy")
            let r = try tarflow(["sample", cond, "--count", "2", "--label", "1", "--guidance", "2"] + flags + ["-o", out, "--quiet"])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertEqual(r.err, "")
            let x = try NPY.read(contentsOf: URL(fileURLWithPath: out)).floats
            XCTAssertNotEqual(x, plain, "\(flags)")
            if flags == ["--guide-what", "ab"] { XCTAssertEqual(x, seen[3], "ab is both") } else { XCTAssertFalse(seen.contains(x), "\(flags)") }
            seen.append(x)
        }
    }

    func testGuidanceWithoutLabelsWarns() throws {
        let r = try tarflow(["sample", cond, "--count", "2", "--guidance", "1", "-o", path("s.npy"), "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.hasPrefix("warning: --guidance 1.0 with every label -1 changes nothing"), r.err)
        // With a label, or an attention temperature that makes the branches differ: no warning.
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "2", "--label", "0", "--guidance", "1", "-o", path("s.npy"), "--quiet"]).err, "")
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "2", "--guidance", "1", "--attn-temp", "0.5", "-o", path("s.npy"), "--quiet"]).err, "")
    }

    func testSwiftAPIGuidanceTarget() throws {
        let m = try TarFlowModel(model: try TinyModels.model(classes: 3))
        let z = m.noise(count: 2, seed: 1)
        let both = try m.sample(noise: z, labels: [1, 2], options: SamplingOptions(guidance: 2))
        let a = try m.sample(noise: z, labels: [1, 2], options: SamplingOptions(guidance: 2, guide: .a))
        let b = try m.sample(noise: z, labels: [1, 2], options: SamplingOptions(guidance: 2, guide: .b))
        XCTAssertNotEqual(a.floats, both.floats)
        XCTAssertNotEqual(b.floats, both.floats)
        XCTAssertNotEqual(a.floats, b.floats)
        XCTAssertEqual(GuidanceTarget(officialName: "ab"), .both)
        XCTAssertNil(GuidanceTarget(officialName: "ba"))
        // Guided-branch settings without guidance would be ignored: refused.
        for o in [SamplingOptions(guide: .a), SamplingOptions(attentionTemperature: 0.8), SamplingOptions(annealed: true)] {
            XCTAssertThrowsError(try m.sample(noise: z, labels: [1, 2], options: o)) { XCTAssertTrue("\($0)".contains("guidance > 0"), "\($0)") }
        }
    }

    func testSampleHelpSaysNPYIsNotClamped() throws {
        let help = try tarflow(["sample", "--help"]).out.replacingOccurrences(of: "\n", with: " ")
            .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        XCTAssertTrue(help.contains("not clamped to [-1, 1]"), help)
    }

    // MARK: - bench --what load, inspect

    func testBenchLoad() throws {
        let r = try tarflow(["bench", cond, "--what", "load", "--reps", "2", "--batch", "1"])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj["what"] as? String, "load")
        XCTAssertEqual((obj["seconds_all"] as? [Double])?.count, 2)
        XCTAssertEqual((obj["ready_seconds_all"] as? [Double])?.count, 2)
        try assertFails(["bench", cond, "--what", "nonsense"], mentions: ["forward, sample, decode or load"])
    }

    func testInspectSummaryFirstGraphsOnRequest() throws {
        let compiled = path("c.tflow")
        XCTAssertEqual(try tarflow(["compile", cond, "-o", compiled, "--batch", "1,4", "--functions", "forward"]).status, 0)
        let r = try tarflow(["inspect", compiled])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        XCTAssertLessThanOrEqual(lines.count, 24, "one screen: \(r.out)")
        let size = try FileManager.default.attributesOfItem(atPath: compiled)[.size] as! NSNumber
        XCTAssertTrue(lines[0].hasPrefix("\(compiled): "), lines[0])
        XCTAssertTrue(lines[0].contains(ModelReport.grouped(size.intValue) + " bytes"), lines[0])
        let c = try TarFlowConfig(metadata: try ModelFile.read(contentsOf: URL(fileURLWithPath: compiled)).metadata)
        let params = try ModelFile.read(contentsOf: URL(fileURLWithPath: compiled)).tensors.reduce(0) { $0 + elementCount($1.shape)! }
        for part in ["config:     \(c.inChannels)x\(c.imgSize)x\(c.imgSize), patch \(c.patchSize)", "\(c.numClasses) classes",
                     "parameters: \(ModelReport.grouped(params)) in", "dtype:      f32", "graphs:     forward (",
                     "compiled:   forward (batch 1,4)"] {
            XCTAssertTrue(r.out.contains(part), "'\(part)' missing from: \(r.out)")
        }
        XCTAssertFalse(r.out.contains("graph forward("), "graphs only with --graphs")
        let g = try tarflow(["inspect", compiled, "--graphs"])
        XCTAssertTrue(g.out.hasPrefix(r.out.components(separatedBy: "(--graphs").first!), "summary first")
        XCTAssertTrue(g.out.contains("graph forward(%x: f32[B,1,4,4]"), g.out)
        XCTAssertTrue(g.out.contains("tarflow.num_classes = 3"), g.out)
        XCTAssertEqual(try tarflow(["inspect", mnist]).out.contains("compiled:   none"), true)
    }

    // MARK: - Progress

    func testProgressLineAndTerminalOnly() {
        XCTAssertEqual(ProgressBar.line(label: "likelihood", done: 250, total: 1000, unit: "images", elapsed: 2, width: 8),
                       "likelihood [##      ] 250/1000 images  125 images/s  ETA 0:06")
        XCTAssertEqual(ProgressBar.line(label: "x", done: 3, total: 3, unit: "graphs", elapsed: 75, width: 4),
                       "x [####] 3/3 graphs  0.0 graphs/s  1:15")
        XCTAssertEqual(ProgressBar.line(label: "x", done: 0, total: 5, unit: "steps", elapsed: 0, width: 5), "x [     ] 0/5 steps")
        XCTAssertEqual(ProgressBar.clock(3725), "1:02:05")
        var written: [String] = []
        let off = ProgressBar("a", total: 2, unit: "images", quiet: false, isTerminal: false) { written.append($0) }
        off.update(1); off.update(2); off.finish()
        let quiet = ProgressBar("a", total: 2, unit: "images", quiet: true, isTerminal: true) { written.append($0) }
        quiet.update(1); quiet.finish()
        XCTAssertEqual(written, [], "nothing when stderr is not a terminal or with --quiet")
        let on = ProgressBar("a", total: 2, unit: "images", quiet: false, isTerminal: true) { written.append($0) }
        on.update(1); on.update(2); on.finish()
        XCTAssertEqual(written.count, 3)
        XCTAssertTrue(written.allSatisfy { $0.hasPrefix("\r") })
        XCTAssertTrue(written[0].contains("1/2 images"), written[0])
        XCTAssertTrue(written[2].hasSuffix("\n"))
    }

    func testLongCommandsPrintNoProgressWhenNotATerminal() throws {
        let images = path("x.npy")
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "2", "--label", "1", "-o", images, "--quiet"]).err, "")
        try clampToModelSpace(images)
        for args in [["likelihood", cond, "--images", images], ["classify", cond, "--images", images],
                     ["denoise", cond, "--images", images, "-o", path("d.npy")], ["compile", cond, "-o", path("c.tflow")],
                     ["likelihood", cond, "--images", images, "--quiet"]] {
            let r = try tarflow(args)
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertEqual(r.err, "", "\(args)")
        }
    }

    /// On a terminal (a pseudo-terminal from util-linux `script`), the bar shows count and rate.
    func testProgressOnATerminal() throws {
        let script = URL(fileURLWithPath: "/usr/bin/script")
        guard FileManager.default.isExecutableFile(atPath: script.path) else { throw XCTSkip("no /usr/bin/script to make a terminal") }
        let images = path("x.npy")
        XCTAssertEqual(try tarflow(["sample", cond, "--count", "3", "--label", "1", "-o", images, "--quiet"]).status, 0)
        try clampToModelSpace(images)
        let exe = tarflowExecutable(repo: repo)
        let command = "'\(exe.path)' likelihood '\(cond)' --images '\(images)' --batch-size 1"
        let r = try runProcess(script, ["-qec", command, "/dev/null"])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        XCTAssertTrue(r.out.contains("likelihood [########################] 3/3 images"), r.out)
        XCTAssertTrue(r.out.contains(" images/s"), r.out)
        let quiet = try runProcess(script, ["-qec", command + " --quiet", "/dev/null"])
        XCTAssertFalse(quiet.out.contains("likelihood ["), quiet.out)
    }

    // MARK: - Image folders (JPEG and PNG, classes from subfolders, Resize + CenterCrop)

    var photos: URL { repo.appendingPathComponent("Tests/Fixtures/imagefolder/photos") }
    func reference(_ name: String) throws -> Tensor { try NPY.read(contentsOf: repo.appendingPathComponent("Tests/Fixtures/imagefolder/\(name)")) }

    /// Tests/Fixtures/imagefolder/make_reference.py computed, with Pillow, the pixels the
    /// official evaluate_bpd.py preprocessing gives for these files at image size 16.
    func testImageFolderMatchesTheOfficialPreprocessing() throws {
        let f = try ImageFolder.load(contentsOf: photos, channels: 3, size: 16, resize: true, labelsFromFolders: true)
        let files = try String(contentsOf: repo.appendingPathComponent("Tests/Fixtures/imagefolder/reference-files.txt"), encoding: .utf8)
        XCTAssertEqual(f.files, files.split(separator: "\n").map(String.init), "torchvision ImageFolder order")
        XCTAssertEqual(f.classes, ["cat", "dog"])
        XCTAssertEqual(f.labels.map { $0.map(Int64.init) }, try reference("reference-labels.npy").asInt64s())
        let ref = try reference("reference-16.npy")
        XCTAssertEqual(ref.shape, [8, 3, 16, 16])
        guard case .integer(let px) = f.images.pixels, case .uint8(let want) = ref.storage else { return XCTFail("uint8 pixels expected") }
        XCTAssertEqual(px.count, want.count)
        let diffs = zip(px, want).map { abs(Int($0) - Int($1)) }
        // Decoding is exact; resampling is PIL's filter and fixed-point arithmetic, horizontal pass
        // first as Pillow's C code. Pillow 13 (the reference) runs the vertical pass first for some
        // sizes (here cat/b.png, 23x57), which changes rounding by one level on some pixels.
        let perImage = (0..<8).map { i in diffs[(i * 768)..<((i + 1) * 768)].filter { $0 > 0 }.count }
        XCTAssertLessThanOrEqual(diffs.max() ?? 99, 1, "per image \(perImage)")
        XCTAssertEqual(perImage.filter { $0 > 0 }.count, 1, "only cat/b.png may differ: \(perImage)")
        XCTAssertLessThan(perImage[1], 768 / 4, "\(perImage)")
        // Without --resize, images must have the model's size; a gray image becomes RGB.
        XCTAssertThrowsError(try ImageFolder.load(contentsOf: photos, channels: 3, size: 16)) { XCTAssertTrue("\($0)".contains("a.jpg is 40x30"), "\($0)") }
        XCTAssertEqual(try JPEGImage.read(contentsOf: photos.appendingPathComponent("cat/a.jpg")).shape, [30, 40, 3], "height, width, channels")
        let dir = tmp.appendingPathComponent("plain")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: photos.appendingPathComponent("dog/x.JPG"), to: dir.appendingPathComponent("1.jpg"))
        let gray = (0..<256).map { UInt8($0) }
        try PNGImage.write(Tensor(shape: [16, 16, 1], bytes: gray), to: dir.appendingPathComponent("0.png"))
        let p = try ImageFolder.load(contentsOf: dir, channels: 3, size: 16)
        XCTAssertEqual(p.files, ["0.png", "1.jpg"])
        XCTAssertNil(p.labels)
        XCTAssertEqual(p.images.batch(0..<1, dequantization: .none).floats, (0..<3).flatMap { _ in gray.map { Float($0) / 255 * 2 - 1 } })
        XCTAssertEqual(p.images.batch(1..<2, dequantization: .none).floats, Array(f.images.batch(4..<5, dequantization: .none).floats), "a 16x16 image is not resampled")
        // A colour image for a gray model, a damaged JPEG, a truncated one: one-line errors naming the file.
        XCTAssertThrowsError(try ImageFolder.load(contentsOf: dir, channels: 1, size: 16)) { XCTAssertTrue("\($0)".contains("1.jpg has 3 channel(s)"), "\($0)") }
        let jpeg = try [UInt8](Data(contentsOf: photos.appendingPathComponent("cat/a.jpg")))
        for (name, bytes) in [("cut.jpg", Array(jpeg.prefix(jpeg.count / 2))), ("junk.jpg", Array(jpeg.prefix(3)) + [UInt8](repeating: 7, count: 200))] {
            let bad = tmp.appendingPathComponent("bad-\(name)")
            try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
            try Data(bytes).write(to: bad.appendingPathComponent(name))
            XCTAssertThrowsError(try ImageFolder.load(contentsOf: bad, channels: 3, size: 16, resize: true)) {
                XCTAssertTrue("\($0)".contains(name) && "\($0)".contains("cannot decode JPEG"), "\($0)")
                XCTAssertFalse("\($0)".contains("\n"))
            }
        }
    }

    /// The mean bits/dim of the folder through `--resize` agrees with the official preprocessing
    /// (the reference pixels) within 0.5%, with the class labels from the folders.
    func testLikelihoodAndClassifyOnAnImageFolder() throws {
        let model = path("cond.tflow")
        XCTAssertEqual(try tarflow(["convert", repo.appendingPathComponent("Tests/Fixtures/cond_guided/model.pth").path, "-o", model, "--image-size", "16"]).status, 0)
        let refImages = repo.appendingPathComponent("Tests/Fixtures/imagefolder/reference-16.npy").path
        let refLabels = repo.appendingPathComponent("Tests/Fixtures/imagefolder/reference-labels.npy").path
        func bpd(_ args: [String]) throws -> Double {
            let r = try tarflow(["likelihood", model, "--json"] + args)
            XCTAssertEqual(r.status, 0, r.err)
            return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])?["bits_per_dim"] as? Double ?? .nan
        }
        let official = try bpd(["--images", refImages, "--labels", refLabels])
        let ours = try bpd(["--images", photos.path, "--resize", "--labels-from-folders"])
        XCTAssertEqual(ours, official, accuracy: 0.005 * official)
        XCTAssertNotEqual(try bpd(["--images", photos.path, "--resize"]), ours, "labels from folders condition the model")
        let c = try tarflow(["classify", model, "--images", photos.path, "--resize", "--labels-from-folders", "--json"])
        XCTAssertEqual(c.status, 0, c.err)
        let r = try tarflow(["classify", model, "--images", refImages, "--true-labels", refLabels, "--json"])
        XCTAssertEqual(c.out, r.out)
        XCTAssertTrue(c.out.contains("\"count\": 8"), c.out)
        // The flags are for folders, and labels come from one place.
        try assertFails(["likelihood", model, "--images", refImages, "--resize"], mentions: ["--resize", "folder"])
        try assertFails(["likelihood", model, "--images", photos.path, "--resize", "--labels-from-folders", "--labels", refLabels], mentions: ["--labels-from-folders"])
        try assertFails(["classify", model, "--images", photos.path, "--resize", "--labels-from-folders", "--true-labels", refLabels], mentions: ["--true-labels"])
        try assertFails(["likelihood", model, "--images", photos.path], mentions: ["a.jpg is 40x30", "--resize"])
    }


    func testShippedMNISTTestSet() throws {
        let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: mnistImages), channels: 1, size: 28)
        XCTAssertEqual(set.count, 10_000)
        let labels = try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: mnistLabels))
        XCTAssertEqual(labels.count, 10_000)
        XCTAssertEqual(Array(labels.prefix(8)), [7, 2, 1, 0, 4, 1, 4, 9])
        // The first images are those of the 8-image fixture the other tests use.
        let head = try ImageSet.load(contentsOf: repo.appendingPathComponent("Tests/Fixtures/io/t10k-head8-images-idx3-ubyte.gz"), channels: 1, size: 28)
        XCTAssertEqual(set.batch(0..<8, dequantization: .none).floats, head.batch(0..<8, dequantization: .none).floats)
        let demo = try String(contentsOf: repo.appendingPathComponent("scripts/demo.sh"), encoding: .utf8)
        XCTAssertTrue(demo.contains("Models/data/mnist/t10k-images-idx3-ubyte.gz"))
        XCTAssertFalse(demo.contains("../shared"), "the demo must run on a fresh clone")
    }
}
