import Foundation
import XCTest
import FlowIR
@testable import TarFlow
@testable import tarflow

/// Every bad input to `tarflow` gets one line on stderr that names the file, flag or rule, a
/// non-zero exit, and leaves an existing output untouched.
final class CLIHardeningTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tmp: URL!
    var uncond: String { tmp.appendingPathComponent("uncond.tflow").path }
    var cond: String { tmp.appendingPathComponent("cond.tflow").path }
    var keep: URL { tmp.appendingPathComponent("keep.npy") }

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-hardening-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        try ModelFile.write(try TinyModels.model(), to: URL(fileURLWithPath: uncond))
        try ModelFile.write(try TinyModels.model(classes: 3), to: URL(fileURLWithPath: cond))
        try Data("precious".utf8).write(to: keep)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func tarflow(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try runTarflow(args, repo: repo) }

    /// Runs a failing command; checks exit status, the single `error:` line and its content.
    func assertFails(_ args: [String], mentions: [String], status: Int32 = 1, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try tarflow(args)
        XCTAssertEqual(r.status, status, "\(args): \(r.err)", file: file, line: line)
        let lines = r.err.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "\(args) must print exactly one line: \(r.err)", file: file, line: line)
        XCTAssertTrue(r.err.hasPrefix("error: "), r.err, file: file, line: line)
        for m in mentions { XCTAssertTrue(r.err.contains(m), "\(args): '\(m)' missing from: \(r.err)", file: file, line: line) }
        XCTAssertEqual(try String(contentsOf: keep, encoding: .utf8), "precious", "\(args) touched the output", file: file, line: line)
    }

    func npy(_ name: String, shape: [Int], _ values: [Float]) throws -> String {
        let url = tmp.appendingPathComponent(name)
        try NPY.write(Tensor(shape: shape, floats: values), to: url)
        return url.path
    }

    func labels(_ name: String, _ values: [Int64]) throws -> String {
        let url = tmp.appendingPathComponent(name)
        try NPY.write(Tensor(shape: [values.count], int64s: values), to: url)
        return url.path
    }

    func testGoodRunsStillWork() throws {
        let out = tmp.appendingPathComponent("s.npy").path
        let r = try tarflow(["sample", cond, "--count", "2", "--label", "1", "--guidance", "1", "-o", out, "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
        let x = try NPY.read(contentsOf: URL(fileURLWithPath: out))
        XCTAssertEqual(x.shape, [2, 1, 4, 4])
        // The tiny model's samples reach beyond ±4, which images may not (issue 12): clamped
        // to model space they are images again.
        guard case .float32(let f) = x.storage else { return XCTFail("\(x.dtype)") }
        let images = try npy("clamped.npy", shape: x.shape, f.map { min(max($0, -1), 1) })
        let l = try tarflow(["likelihood", uncond, "--images", images, "--json"])
        XCTAssertEqual(l.status, 0, l.err)
        let d = try tarflow(["denoise", cond, "--images", images, "-o", keep.path])
        XCTAssertEqual(d.status, 0, d.err)
    }

    func testImageChecks() throws {
        let wrongChannels = try npy("c3.npy", shape: [2, 3, 4, 4], [Float](repeating: 0, count: 96))
        try assertFails(["likelihood", uncond, "--images", wrongChannels], mentions: [wrongChannels, "(B, 1, 4, 4)"])
        try assertFails(["denoise", uncond, "--images", wrongChannels, "-o", keep.path], mentions: [wrongChannels])
        let wrongSize = try npy("s5.npy", shape: [2, 1, 5, 5], [Float](repeating: 0, count: 50))
        try assertFails(["classify", cond, "--images", wrongSize], mentions: [wrongSize])
        var values = [Float](repeating: 0.5, count: 32)
        values[20] = .nan
        let nan = try npy("nan.npy", shape: [2, 1, 4, 4], values)
        try assertFails(["likelihood", uncond, "--images", nan], mentions: [nan, "image 1", "NaN"])
        values[20] = .infinity
        let inf = try npy("inf.npy", shape: [2, 1, 4, 4], values)
        try assertFails(["denoise", uncond, "--images", inf, "-o", keep.path], mentions: [inf, "Inf"])
        // A PNG folder with RGB images for a gray model, and one of the wrong size.
        let rgb = tmp.appendingPathComponent("rgb")
        try FileManager.default.createDirectory(at: rgb, withIntermediateDirectories: true)
        try PNGImage.write(Tensor(shape: [4, 4, 3], bytes: [UInt8](repeating: 9, count: 48)), to: rgb.appendingPathComponent("a.png"))
        try assertFails(["likelihood", uncond, "--images", rgb.path], mentions: ["a.png", "3 channel"])
        let big = tmp.appendingPathComponent("big")
        try FileManager.default.createDirectory(at: big, withIntermediateDirectories: true)
        try PNGImage.write(Tensor(shape: [6, 6, 1], bytes: [UInt8](repeating: 9, count: 36)), to: big.appendingPathComponent("b.png"))
        try assertFails(["likelihood", uncond, "--images", big.path], mentions: ["b.png", "6x6"])
    }

    func testNoiseChecks() throws {
        var z = [Float](repeating: 0.1, count: 2 * 4 * 4)
        z[5] = .nan
        let nan = try npy("z.npy", shape: [2, 4, 4], z)
        try assertFails(["sample", uncond, "--noise", nan, "-o", keep.path], mentions: ["--noise", nan, "element 5"])
        let shape = try npy("z2.npy", shape: [2, 5, 4], [Float](repeating: 0, count: 40))
        try assertFails(["sample", uncond, "--noise", shape, "-o", keep.path], mentions: ["--noise", "(B, 4, 4)"])
    }

    func testLabelChecks() throws {
        try assertFails(["sample", cond, "--count", "2", "--label", "3", "-o", keep.path], mentions: ["--label", "0...2"])
        try assertFails(["sample", cond, "--count", "2", "--label", "-2", "-o", keep.path], mentions: ["--label", "-1"])
        try assertFails(["sample", uncond, "--count", "2", "--label", "0", "-o", keep.path], mentions: ["--label", "unconditional"])
        let bad = try labels("l.npy", [0, 7])
        try assertFails(["sample", cond, "--labels", bad, "-o", keep.path], mentions: ["--labels", bad, "7", "index 1"])
        let images = try npy("x.npy", shape: [2, 1, 4, 4], [Float](repeating: 0.1, count: 32))
        try assertFails(["likelihood", cond, "--images", images, "--labels", bad], mentions: ["--labels", "7"])
        try assertFails(["denoise", uncond, "--images", images, "--labels", try labels("l1.npy", [1, 1]), "-o", keep.path],
                        mentions: ["--labels", "unconditional"])
        try assertFails(["likelihood", cond, "--images", images, "--labels", try labels("l3.npy", [1, 1, 1])], mentions: ["--labels", "3 labels for 2"])
        try assertFails(["classify", uncond, "--images", images], mentions: ["unconditional"])
    }

    func testSamplingFlagChecks() throws {
        for (args, flag) in [
            (["--guidance", "-1"], "--guidance"), (["--guidance", "nan"], "--guidance"), (["--guidance", "inf"], "--guidance"),
            (["--attn-temp", "0"], "--attn-temp"), (["--attn-temp", "-0.5"], "--attn-temp"), (["--temperature", "-1"], "--temperature"),
            (["--threads", "0"], "--threads"), (["--threads", "100000000000"], "--threads"), (["--threads", "257"], "--threads"), (["--grid-columns", "0"], "--grid-columns"),
            (["--noise-std", "-1"], "--noise-std"),
        ] {
            try assertFails(["sample", cond, "--count", "2"] + args + ["-o", keep.path], mentions: [flag])
        }
        try assertFails(["sample", cond, "--count", "0", "-o", keep.path], mentions: ["--count 0"])
        try assertFails(["sample", cond, "--count", "-3", "-o", keep.path], mentions: ["--count -3"])
        try assertFails(["sample", cond, "--count", "2", "-o", tmp.appendingPathComponent("x.jpg").path], mentions: [".npy, .npz or .png"])
        try assertFails(["sample", cond, "--count", "2", "-o", tmp.appendingPathComponent("no/such/dir/x.npy").path], mentions: ["does not exist"])
        try assertFails(["likelihood", uncond, "--images", keep.path, "--batch-size", "0"], mentions: ["--batch-size"])
    }

    func testBatchTooLargeForMemoryIsRefusedWithTheNumber() throws {
        for n in ["1000000000", "9223372036854775807"] {
            try assertFails(["sample", uncond, "--count", n, "-o", keep.path], mentions: ["--count \(n)", "GB", "use a smaller --count"])
        }
        try assertFails(["sample", cond, "--count", "1000000000", "--guidance", "2", "-o", keep.path], mentions: ["--count", "GB"])
        try assertFails(["bench", uncond, "--batch", "100000000000", "--reps", "1"], mentions: ["--batch", "GB"])
        try assertFails(["bench", uncond, "--threads", "100000"], mentions: ["--threads"])
        // A config whose weights alone would not fit (within TarFlowConfig's per-size bounds).
        let config = tmp.appendingPathComponent("huge.json")
        try Data(#"{"in_channels": 3, "img_size": 256, "patch_size": 1, "channels": 65536, "num_blocks": 1024, "layers_per_block": 1024}"#.utf8).write(to: config)
        try assertFails(["compile", "--config", config.path, "--random-weights", "1", "-o", keep.path], mentions: ["--config", "bytes of memory"])
    }

    /// Names from a file reach the terminal escaped: an ESC in a tensor name or metadata value
    /// is printed as \u{1B}.
    func testInspectEscapesControlCharacters() throws {
        var m = try TinyModels.model()
        m.metadata["note"] = .string("\u{1B}[2J\u{7}cleared")
        let path = tmp.appendingPathComponent("escape.tflow")
        try ModelFile.write(m, to: path)
        let r = try tarflow(["inspect", path.path, "--graphs"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertFalse(r.out.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 }, r.out)
        XCTAssertTrue(r.out.contains("\\u{1B}[2J\\u{7}cleared"), r.out)
    }

    func testUsageErrorsAreOneLine() throws {
        try assertFails(["sample"], mentions: ["<model>"], status: 64)
        try assertFails(["sample", cond, "--bogus", "1", "-o", keep.path], mentions: ["--bogus"], status: 64)
        try assertFails(["sample", cond, "--count", "two", "-o", keep.path], mentions: ["two", "--count"], status: 64)
        try assertFails(["nonsense"], mentions: ["nonsense"], status: 64)
        let help = try tarflow(["sample", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.out.contains("USAGE: tarflow sample"), help.out)
        XCTAssertEqual(help.err, "")
    }

    func testBrokenModelFilesFailCleanlyInEverySubcommand() throws {
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: cond)))
        let images = try npy("x.npy", shape: [2, 1, 4, 4], [Float](repeating: 0.1, count: 32))
        var flipped = good
        flipped[100] ^= 0xFF
        for (name, bytes) in [("cut.tflow", Array(good[0..<(good.count / 2)])), ("flip.tflow", flipped), ("empty.tflow", [])] {
            let path = tmp.appendingPathComponent(name).path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            for args in [["inspect", path, "--plan"], ["likelihood", path, "--images", images],
                         ["sample", path, "--count", "1", "-o", keep.path], ["denoise", path, "--images", images, "-o", keep.path],
                         ["classify", path, "--images", images]] {
                let r = try tarflow(args)
                if name == "flip.tflow", r.status == 0 { continue }  // a flip may land in a harmless byte
                try assertFails(args, mentions: [path])
            }
        }
        // Names from a file reach the message, but no control character reaches the terminal.
        let n = Int(good[16]) | Int(good[17]) << 8 | Int(good[18]) << 16
        var h = try Flowir_ModelHeader(serializedBytes: Array(good[24..<(24 + n)]))
        var evil = Flowir_Metadata()
        evil.key = "zz\u{1b}[2J\nboom"
        evil.intValue = 1
        h.metadata += [evil, evil]
        let hb: [UInt8] = try h.serializedBytes()
        var forged = Array(good[0..<16])
        withUnsafeBytes(of: UInt64(hb.count).littleEndian) { forged += $0 }
        forged += hb
        forged += [UInt8](repeating: 0, count: (forged.count + 63) / 64 * 64 - forged.count)
        forged += good[((24 + n + 63) / 64 * 64)...]
        let escPath = tmp.appendingPathComponent("esc.tflow").path
        try Data(forged).write(to: URL(fileURLWithPath: escPath))
        try assertFails(["inspect", escPath], mentions: ["F9", "zz?[2J"])
        XCTAssertFalse(try tarflow(["inspect", escPath]).err.unicodeScalars.contains { $0.value == 0x1B })
        // A FIFO where a file is expected must not block waiting for a writer.
        let fifo = tmp.appendingPathComponent("fifo.npy").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        try assertFails(["inspect", fifo], mentions: [fifo, "not a regular file"])
        try assertFails(["convert", fifo, "-o", keep.path, "--image-size", "4"], mentions: [fifo, "not a regular file"])
        try assertFails(["likelihood", uncond, "--images", fifo], mentions: [fifo, "not a regular file"])
        // A checkpoint that is not one.
        try assertFails(["convert", images, "-o", keep.path, "--image-size", "4"], mentions: [images])
        try assertFails(["convert", cond, "-o", keep.path, "--patch-size", "99999999999"], mentions: [])
    }
}

extension CLIHardeningTests {
    /// The per-block weight count used to refuse huge configs matches the converter's list.
    func testWeightCountOfAConfig() throws {
        for c in [TinyModels.config(classes: 0), TinyModels.config(classes: 3),
                  TarFlowConfig(inChannels: 3, imgSize: 16, patchSize: 4, channels: 128, numBlocks: 3, layersPerBlock: 2, nvp: false, numClasses: 5, expansion: 3)] {
            let listed = Converter.expectedShapes(c).values.reduce(0) { $0 + elementCount($1)! } * 4
            XCTAssertEqual(Converter.expectedWeightBytes(c), listed)
            XCTAssertEqual(c.weightMemoryNeed.bytes, listed)
            XCTAssertNoThrow(try c.weightMemoryNeed.check())
        }
    }
}
