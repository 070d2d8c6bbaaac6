import Foundation
import XCTest
import FlowIR
import TarFlow

/// Runs every `tarflow` line of README's "Using it" block, in order, so the README cannot drift
/// from the tool. Fixture files stand in for the placeholders (checkpoints, `z.npy`, `y.npy`,
/// `noisy.npy`, the image folder); optional `[...]` parts run included.
final class ReadmeCommandTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `tarflow` lines of the first sh block after "## Using it", comments removed.
    func readmeCommands() throws -> [String] {
        let readme = try String(contentsOf: repo.appendingPathComponent("README.md"), encoding: .utf8)
        guard let section = readme.range(of: "## Using it\n"), let open = readme.range(of: "```sh\n", range: section.upperBound..<readme.endIndex),
              let close = readme.range(of: "```\n", range: open.upperBound..<readme.endIndex) else { return [] }
        return readme[open.upperBound..<close.lowerBound].split(separator: "\n").compactMap { line in
            guard line.hasPrefix("tarflow ") else { return nil }
            let code = line.range(of: "  #").map { line[..<$0.lowerBound] } ?? line[...]
            return code.trimmingCharacters(in: .whitespaces)
        }
    }

    func testEveryReadmeCommandRuns() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-readme-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        // Placeholders: the official-named checkpoint and a training checkpoint (the 3x16x16,
        // 5-class fixture), the image folder, noise and labels for the MNIST model, noisy images.
        let fixture = Fixtures.url("cond_guided", "model.pth")
        try FileManager.default.copyItem(at: fixture, to: tmp.appendingPathComponent("afhq_model_8_768_8_8_0.07.pth"))
        let sd = try Checkpoint.read(contentsOf: Fixtures.url("cond_guided", "model.safetensors"))
        try Data(CheckpointTests.trainingCheckpointBytes(sd, entries: ["model", "ema"], prefix: "module.")).write(to: tmp.appendingPathComponent("checkpoint.pth"))
        try FileManager.default.createDirectory(at: tmp.appendingPathComponent("afhq"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: repo.appendingPathComponent("Tests/Fixtures/imagefolder/photos"), to: tmp.appendingPathComponent("afhq/val"))
        let mnist = try TarFlowModel(contentsOf: repo.appendingPathComponent("Models/mnist.tflow"))
        let z = mnist.noise(count: 2, seed: 5)
        try NPY.write(Tensor(shape: z.shape, floats: z.floats), to: tmp.appendingPathComponent("z.npy"))
        try NPY.write(Tensor(shape: [2], int64s: [3, 8]), to: tmp.appendingPathComponent("y.npy"))
        let noisy: [Float] = (0..<(2 * 784)).map { (i: Int) -> Float in Float((i * 37) % 200) / 100 - 1 }
        try NPY.write(Tensor(shape: [2, 1, 28, 28], floats: noisy), to: tmp.appendingPathComponent("noisy.npy"))

        let commands = try readmeCommands()
        XCTAssertGreaterThanOrEqual(commands.count, 13, "the README's commands were not found")
        for command in commands {
            var line = command.replacingOccurrences(of: "[", with: "").replacingOccurrences(of: "]", with: "")
            line = line.replacingOccurrences(of: "--image-size 256", with: "--image-size 16")  // the fixture's size
                .replacingOccurrences(of: "--limit 1000", with: "--limit 8")  // a debug build
            let args = line.split(separator: " ").dropFirst().map { a -> String in
                a.hasPrefix("Models/") || a.hasPrefix("docs/") ? repo.appendingPathComponent(String(a)).path : String(a)
            }
            let r = try runTarflow(args, repo: repo, in: tmp)
            XCTAssertEqual(r.status, 0, "README: \(command)\n\(r.err)")
            XCTAssertFalse(r.err.contains("error"), "README: \(command)\n\(r.err)")
            if command.contains("--json") {
                XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(r.out.utf8)), "README: \(command): \(r.out)")
            }
        }
        // What the lines promise.
        for f in ["afhq.tflow", "afhq-ema.tflow", "mnist-compiled.tflow", "graphs.dot", "bpd.npz", "threes.png", "x.npy", "clean.npy", "g.npy"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.appendingPathComponent(f).path), f)
        }
        XCTAssertEqual(Set(try NPZ.read(contentsOf: tmp.appendingPathComponent("bpd.npz")).map(\.name)), ["z", "logdets", "bpd", "bits_per_dim", "nll"])
        let official = try ModelFile.read(contentsOf: tmp.appendingPathComponent("afhq.tflow"))
        XCTAssertEqual(official.metadata["tarflow.noise_std"]?.description, "0.07", "noise level from the official file name")
        XCTAssertEqual(try ModelFile.read(contentsOf: tmp.appendingPathComponent("afhq-ema.tflow")).tensors.map { $0.floats() },
                       official.tensors.map { $0.floats() })
    }
}
