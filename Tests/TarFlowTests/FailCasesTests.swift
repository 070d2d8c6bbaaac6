import Foundation
import XCTest
import FlowIR
import TarFlow

/// Every input that ever crashed a fuzz target (Tools/Fuzz/FailCases/<target>/) and every seed
/// (Tools/Fuzz/Seeds/<target>/) is replayed through the fuzzers' own entry points: the block
/// below is a copy of Tools/Fuzz/Sources/FuzzSupport/FuzzEntry.swift, checked to stay identical.
final class FailCasesTests: XCTestCase {
    static let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tools/Fuzz")

    static var entries: [String: ([UInt8]) -> Void] { [
        "FuzzModelFile": FuzzEntry.modelFile, "FuzzTorchCheckpoint": FuzzEntry.torchCheckpoint,
        "FuzzSafetensors": FuzzEntry.safetensors, "FuzzNPY": FuzzEntry.npy, "FuzzPNG": FuzzEntry.png, "FuzzIDX": FuzzEntry.idx,
        "FuzzConfigJSON": FuzzEntry.configJSON, "FuzzModelMetadata": FuzzEntry.modelMetadata,
    ] }

    func testEntryPointsMatchTheFuzzers() throws {
        func block(_ text: String) -> String? {
            // (Markers spelled in two pieces, so this line does not match itself.)
            guard let a = text.range(of: "// BEGIN " + "FuzzEntry"), let b = text.range(of: "// END " + "FuzzEntry") else { return nil }
            return String(text[a.lowerBound..<b.upperBound])
        }
        let theirs = try String(contentsOf: Self.fuzz.appendingPathComponent("Sources/FuzzSupport/FuzzEntry.swift"), encoding: .utf8)
        let ours = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        XCTAssertNotNil(block(theirs))
        XCTAssertEqual(block(theirs), block(ours), "copy the FuzzEntry block of Tools/Fuzz/Sources/FuzzSupport/FuzzEntry.swift into this file")
    }

    /// Each file of FailCases/<target>/ and Seeds/<target>/ runs through its target's entry point.
    func testReplayFailCasesAndSeeds() throws {
        var replayed = 0
        for folder in ["FailCases", "Seeds"] {
            for (target, entry) in Self.entries.sorted(by: { $0.key < $1.key }) {
                let dir = Self.fuzz.appendingPathComponent(folder).appendingPathComponent(target)
                let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
                for name in names.sorted() where !name.hasPrefix(".") {
                    entry(try [UInt8](Data(contentsOf: dir.appendingPathComponent(name))))
                    replayed += 1
                }
            }
        }
        XCTAssertGreaterThan(replayed, 10)
    }
}

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

    /// A config JSON (`compile --config`): parse and validate, derive every size, then, for
    /// configs small enough to run at fuzzing speed (the micro configs' size), build the model
    /// with generated weights, load it and run forward.
    public static func configJSON(_ bytes: [UInt8]) {
        guard let parsed = try? AheadOfTime.parseConfig(Data(bytes), path: "<fuzz>") else { return }
        let c = parsed.config
        _ = (c.numPatches, c.patchDim, c.imageDim, c.numHeads, c.metadata)
        guard c.numBlocks * max(c.layersPerBlock, 1) <= 2, c.channels <= 64, c.imageDim <= 64, c.numPatches <= 16,
              c.channels * c.expansion <= 256, c.numClasses <= 4, c.patchDim <= 16 else { return }
        guard let model = try? AheadOfTime.randomModel(config: c, seed: 1, noiseStd: parsed.noiseStd), let m = try? TarFlowModel(model: model) else { return }
        let x = Tensor(shape: [1, c.inChannels, c.imgSize, c.imgSize], floats: [Float](repeating: 0.25, count: c.imageDim))
        _ = try? m.forward(images: x, labels: c.numClasses > 0 ? [0] : nil)
    }

    /// Model-file metadata as `tarflow inspect` prints it (`key = value` lines; values that read
    /// as integers, numbers or booleans are those, others strings) put on a small model built in
    /// memory: loading must refuse every disagreement with the tensors and graphs, and whatever
    /// loads must run.
    public static func modelMetadata(_ bytes: [UInt8]) {
        var metadata: [String: MetadataValue] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces), text = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            metadata[key] = Int64(text).map(MetadataValue.int) ?? (text == "true" || text == "false" ? .bool(text == "true") : nil)
                ?? Double(text).map(MetadataValue.double) ?? .string(text.count >= 2 && text.hasPrefix("\"") && text.hasSuffix("\"") ? String(text.dropFirst().dropLast()) : text)
        }
        for base in metadataBases {
            var model = base
            model.metadata = metadata
            guard let m = try? TarFlowModel(model: model) else { continue }
            let c = m.config
            let x = Tensor(shape: [1, c.inChannels, c.imgSize, c.imgSize], floats: [Float](repeating: 0.25, count: c.imageDim))
            let labels: [Int]? = c.numClasses > 0 ? [c.numClasses - 1] : nil
            _ = try? m.forward(images: x, labels: labels)
            _ = try? m.sample(noise: m.noise(count: 1, seed: 1), labels: labels, options: SamplingOptions(guidance: 0.5))
            _ = try? m.denoise(images: x, labels: labels)
        }
    }

    /// Small models (generated weights) whose metadata the metadata target replaces: the
    /// configs of the micro seeds (Seeds/FuzzModelMetadata/micro*.txt), unconditional and conditional.
    static let metadataBases: [Model] = [
        TarFlowConfig(inChannels: 1, imgSize: 4, patchSize: 2, channels: 64, numBlocks: 1, layersPerBlock: 0, nvp: true, numClasses: 0),
        TarFlowConfig(inChannels: 1, imgSize: 4, patchSize: 2, channels: 64, numBlocks: 1, layersPerBlock: 1, nvp: false, numClasses: 3, expansion: 1),
        TarFlowConfig(inChannels: 1, imgSize: 4, patchSize: 2, channels: 64, numBlocks: 2, layersPerBlock: 0, nvp: true, numClasses: 2),
    ].compactMap { try? AheadOfTime.randomModel(config: $0, seed: 1, noiseStd: 0.1) }

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
