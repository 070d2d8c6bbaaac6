import Foundation
import TarFlow
import XCTest

/// The `tarflow` command end to end: exit codes, one-line errors, outputs.
final class CLITests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-cli-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    @discardableResult
    func tarflow(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try runTarflow(args, repo: repo) }

    var mnist: String { repo.appendingPathComponent("Models/mnist.tflow").path }
    var idx: String { repo.appendingPathComponent("Tests/Fixtures/io/t10k-head8-images-idx3-ubyte.gz").path }
    var idxLabels: String { repo.appendingPathComponent("Tests/Fixtures/io/t10k-head8-labels-idx1-ubyte.gz").path }

    func testConvertAndInspect() throws {
        let out = tmp.appendingPathComponent("m.tflow").path
        let r = try tarflow(["convert", repo.appendingPathComponent("Tests/Fixtures/vp_prior/model.pth").path, "-o", out, "--in-channels", "1"])
        XCTAssertEqual(r.status, 0, r.err)
        let i = try tarflow(["inspect", out, "--graphs"])
        XCTAssertEqual(i.status, 0)
        XCTAssertTrue(i.out.contains("graph forward(%x: f32[B,1,8,8]) -> ("), i.out)
        XCTAssertTrue(i.out.contains("tarflow.nvp = false"))
        // No geometry flag: a one-line error naming the flags, exit 1, nothing written.
        let bad = tmp.appendingPathComponent("bad.tflow").path
        let f = try tarflow(["convert", repo.appendingPathComponent("Tests/Fixtures/vp_prior/model.pth").path, "-o", bad])
        XCTAssertEqual(f.status, 1)
        XCTAssertTrue(f.err.contains("--image-size"), f.err)
        XCTAssertEqual(f.err.split(separator: "\n").count, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: bad))
    }

    func testLikelihoodJSONAndSave() throws {
        let save = tmp.appendingPathComponent("out.safetensors").path
        let r = try tarflow(["likelihood", mnist, "--images", idx, "--labels", idxLabels, "--limit", "4", "--offset", "2", "--json", "--save", save])
        XCTAssertEqual(r.status, 0, r.err)
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj["count"] as? Int, 4)
        let bpd = obj["bits_per_dim"] as! Double
        XCTAssertGreaterThan(bpd, 3)
        XCTAssertLessThan(bpd, 8)
        // The library on the same images, labels and dequantization seed gives the same figures.
        let lib = try TarFlowModel(contentsOf: URL(fileURLWithPath: mnist))
        let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: idx), channels: 1, size: 28)
        let expected = try lib.likelihood(images: set, labels: try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: idxLabels)), range: 2..<6, seed: 0)
        XCTAssertEqual(bpd, expected.meanBitsPerDim, accuracy: 1e-6)
        XCTAssertEqual(obj["nll"] as! Double, expected.meanNLL, accuracy: 1e-6)
        XCTAssertTrue(FileManager.default.fileExists(atPath: save))
        // Same seed, same noise: the batch size changes only GEMM rounding.
        let again = try tarflow(["likelihood", mnist, "--images", idx, "--labels", idxLabels, "--limit", "4", "--offset", "2", "--json", "--batch-size", "3"])
        let obj2 = try JSONSerialization.jsonObject(with: Data(again.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj2["bits_per_dim"] as! Double, bpd, accuracy: 1e-6)
        XCTAssertEqual(try tarflow(["likelihood", mnist, "--images", idx, "--labels", idxLabels, "--limit", "4", "--offset", "2", "--json"]).out, r.out)
    }

    func testSamplePNGAndNPY() throws {
        let png = tmp.appendingPathComponent("s.png").path
        let r = try tarflow(["sample", mnist, "--count", "4", "--label", "-1", "--seed", "3", "-o", png, "--quiet"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: png))
        let npy1 = tmp.appendingPathComponent("a.npy").path, npy2 = tmp.appendingPathComponent("b.npy").path
        XCTAssertEqual(try tarflow(["sample", mnist, "--count", "2", "--label", "4", "--guidance", "1", "--seed", "3", "-o", npy1, "--quiet"]).status, 0)
        XCTAssertEqual(try tarflow(["sample", mnist, "--count", "2", "--label", "4", "--guidance", "1", "--seed", "3", "-o", npy2, "--quiet"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: npy1)), try Data(contentsOf: URL(fileURLWithPath: npy2)))
        let dir = tmp.appendingPathComponent("each").path
        XCTAssertEqual(try tarflow(["sample", mnist, "--count", "3", "--out-dir", dir, "--quiet"]).status, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["000000.png", "000001.png", "000002.png"])
    }

    func testDenoiseAndClassify() throws {
        let noisy = tmp.appendingPathComponent("x.npy").path
        XCTAssertEqual(try tarflow(["sample", mnist, "--count", "3", "--label", "2", "-o", noisy, "--quiet"]).status, 0)
        let clean = tmp.appendingPathComponent("clean.npy").path, grad = tmp.appendingPathComponent("g.npy").path
        let d = try tarflow(["denoise", mnist, "--images", noisy, "--labels", repo.appendingPathComponent("docs/mnist-grid-labels.npy").path,
                             "-o", clean, "--save-grad", grad])
        XCTAssertNotEqual(d.status, 0, "100 labels for 3 images must be refused")
        XCTAssertEqual(try tarflow(["denoise", mnist, "--images", noisy, "-o", clean, "--save-grad", grad, "--batch-size", "2"]).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: grad))
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: clean)), try Data(contentsOf: URL(fileURLWithPath: noisy)))
        // Integer images are refused by denoise.
        XCTAssertEqual(try tarflow(["denoise", mnist, "--images", idx, "-o", clean]).status, 1)

        let c = try tarflow(["classify", mnist, "--images", idx, "--true-labels", idxLabels, "--limit", "6", "--json",
                             "--save", tmp.appendingPathComponent("p.npy").path, "--save-losses", tmp.appendingPathComponent("l.npy").path])
        XCTAssertEqual(c.status, 0, c.err)
        let obj = try JSONSerialization.jsonObject(with: Data(c.out.utf8)) as! [String: Any]
        XCTAssertEqual(obj["count"] as? Int, 6)
        XCTAssertEqual(obj["accuracy"] as? Double, 1.0)  // the official model also gets the first 6 right
    }

    func testBadInputsFailCleanlyAndLeaveOutputsUntouched() throws {
        let out = tmp.appendingPathComponent("keep.npy")
        try Data("precious".utf8).write(to: out)
        for args in [
            ["sample", mnist, "--count", "2", "--guidance", "-1", "-o", out.path],
            ["sample", mnist, "--count", "2", "--attn-temp", "0", "-o", out.path],
            ["sample", mnist, "--count", "2", "--label", "10", "-o", out.path],
            ["sample", mnist, "--count", "0", "-o", out.path],
            ["sample", "/nonexistent.tflow", "--count", "1", "-o", out.path],
            ["sample", repo.appendingPathComponent("README.md").path, "--count", "1", "-o", out.path],
            ["likelihood", mnist, "--images", repo.appendingPathComponent("README.md").path],
            ["likelihood", mnist, "--images", idx, "--offset", "100"],
        ] {
            let r = try tarflow(args)
            XCTAssertNotEqual(r.status, 0, "\(args) should fail")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(args): \(r.err)")
            XCTAssertFalse(r.err.contains("Fatal error"), r.err)
        }
        XCTAssertEqual(try String(contentsOf: out, encoding: .utf8), "precious")
    }
}
