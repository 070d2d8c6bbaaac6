import Foundation
import FlowIR
import TarFlow

// The entry points of the fuzz targets, one per reader of untrusted bytes. An error is the
// expected outcome for most inputs; a crash, a hang or an unbounded allocation is a finding.
// Tests/TarFlowTests/FailCasesTests.swift holds a copy of the block below (checked to match)
// and replays every file of Tools/Fuzz/FailCases through it.
// BEGIN FuzzEntry
public enum FuzzEntry {
    /// Model files up to this size (128 KiB) that load as a TarFlow model also run forward, sample and
    /// denoise on one image (larger ones are only decoded and checked, to keep the rate up).
    public static let runLimit = 1 << 17

    /// `.tflow`: decode (F1–F10, W1–W11), re-encode, load as a TarFlow model (graph signatures),
    /// then every API path a subcommand takes.
    public static func modelFile(_ bytes: [UInt8]) {
        guard let model = try? ModelFile.decode(bytes) else { return }
        _ = try? ModelFile.encode(model)
        guard let m = try? TarFlowModel(model: model), bytes.count <= runLimit else { return }
        let c = m.config
        let x = Tensor(shape: [1, c.inChannels, c.imgSize, c.imgSize], floats: [Float](repeating: 0.25, count: c.imageDim))
        let labels: [Int]? = c.numClasses > 0 ? [c.numClasses - 1] : nil
        _ = try? m.forward(images: x, labels: labels)
        _ = try? m.sample(noise: m.noise(count: 1, seed: 1), labels: labels, options: SamplingOptions(guidance: 0.5))
        _ = try? m.denoise(images: x, labels: labels, noiseStd: 0.1)
    }

    /// `.pth`: the first byte picks the mode. Even: the rest is a whole `torch.save` zip.
    /// Odd: the rest is a `data.pkl`, run through the restricted unpickler with storages of
    /// deterministic bytes (zip CRCs would otherwise reject nearly every mutated pickle).
    /// State dicts that read are then given to the converter.
    public static func torchCheckpoint(_ bytes: [UInt8]) {
        guard let mode = bytes.first else { return }
        let rest = Array(bytes.dropFirst())
        let tensors: [CheckpointTensor]?
        if mode & 1 == 0 {
            tensors = withTemporaryFile(rest, suffix: "pth") { try? Checkpoint.read(contentsOf: $0) }
        } else {
            tensors = try? Checkpoint.read(pickle: rest) { key, n in
                guard n <= 1 << 20 else { throw CocoaError(.fileReadTooLarge) }
                return (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ key.utf8.count) }
            }
        }
        if let tensors { convert(tensors) }
    }

    /// `.safetensors`, read from a file as `tarflow convert` does, then converted.
    public static func safetensors(_ bytes: [UInt8]) {
        if let tensors = withTemporaryFile(bytes, suffix: "safetensors", { try? Checkpoint.read(contentsOf: $0) }) {
            convert(tensors)
        }
    }

    public static func npy(_ bytes: [UInt8]) {
        guard let a = try? NPY.parse(bytes) else { return }
        _ = try? NPY.encode(a)
    }

    public static func png(_ bytes: [UInt8]) {
        _ = try? PNGImage.decode(bytes)
    }

    /// MNIST IDX files, plain or gzipped, read from a file as `--images` and `--labels` are.
    public static func idx(_ bytes: [UInt8]) {
        _ = withTemporaryFile(bytes, suffix: "idx") { try? IDX.read(contentsOf: $0) }
    }

    static func convert(_ tensors: [CheckpointTensor]) {
        for options in [Converter.Options(inChannels: 1), Converter.Options(imageSize: 8)] {
            _ = try? Converter.convert(tensors: tensors, options: options)
        }
    }

    /// Runs `body` on the bytes written to a fresh file in /dev/shm (or the temporary folder).
    static func withTemporaryFile<T>(_ bytes: [UInt8], suffix: String, _ body: (URL) -> T) -> T {
        let dir = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let url = URL(fileURLWithPath: dir).appendingPathComponent("tarflow-fuzz-\(getpid()).\(suffix)")
        FileManager.default.createFile(atPath: url.path, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(at: url) }
        return body(url)
    }
}
// END FuzzEntry
