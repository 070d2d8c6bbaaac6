import Foundation
import XCTest
import FlowIR
@testable import TarFlow

/// Conversion: config inference, determinism, round trips, and the shipped model's freshness.
final class ConvertTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testConvertingTwiceGivesIdenticalBytes() throws {
        let url = Fixtures.url("cond_guided", "model.pth")
        let a = try ModelFile.encode(try Converter.convert(checkpoint: url, options: .init(imageSize: 16)))
        let b = try ModelFile.encode(try Converter.convert(checkpoint: url, options: .init(imageSize: 16)))
        XCTAssertEqual(a, b)
        // Both formats of the same weights give the same tensors and graphs.
        let s = try Converter.convert(checkpoint: Fixtures.url("cond_guided", "model.safetensors"), options: .init(imageSize: 16))
        let p = try ModelFile.decode(a)
        XCTAssertEqual(s.graphs, p.graphs)
        XCTAssertEqual(s.tensors.map(\.name), p.tensors.map(\.name))
        XCTAssertEqual(s.tensors.map { Array($0.bytes.buffer) }, p.tensors.map { Array($0.bytes.buffer) })
    }

    func testModelFileRoundTripsByteForByte() throws {
        let url = repo.appendingPathComponent("Models/mnist.tflow")
        let bytes = try [UInt8](Data(contentsOf: url))
        let model = try ModelFile.read(contentsOf: url)
        XCTAssertEqual(try ModelFile.encode(model), bytes)
        // Saving through the atomic writer gives the same bytes again.
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("roundtrip-\(UUID()).tflow")
        defer { try? FileManager.default.removeItem(at: tmp) }
        try ModelFile.write(model, to: tmp)
        XCTAssertEqual(try [UInt8](Data(contentsOf: tmp)), bytes)
    }

    /// Models/mnist.tflow is what the current converter makes of the fixture checkpoint; a
    /// change to the graphs or the format must re-convert it (see Models/README.md).
    func testShippedModelIsUpToDate() throws {
        let shipped = try [UInt8](Data(contentsOf: repo.appendingPathComponent("Models/mnist.tflow")))
        let fresh = try ModelFile.encode(try Converter.convert(
            checkpoint: Fixtures.url("mnist_trained", "model.pth"), options: .init(imageSize: 28, noiseStd: 0.1)))
        XCTAssertTrue(shipped == fresh, "Models/mnist.tflow is stale: re-run the command in Models/README.md")
    }

    func testGeometryFromAnyConsistentFlag() throws {
        let url = Fixtures.url("cond_guided", "model.safetensors")  // D = 48, T = 16: C = 3, p = 4, H = 16
        for o in [Converter.Options(imageSize: 16), .init(inChannels: 3), .init(patchSize: 4), .init(imageSize: 16, inChannels: 3, patchSize: 4)] {
            let m = try Converter.convert(checkpoint: url, options: o)
            let c = try TarFlowConfig(metadata: m.metadata)
            XCTAssertEqual([c.inChannels, c.imgSize, c.patchSize], [3, 16, 4])
        }
        XCTAssertThrowsError(try Converter.convert(checkpoint: url, options: .init())) {
            XCTAssertTrue("\($0)".contains("--image-size"), "\($0)")
        }
        XCTAssertThrowsError(try Converter.convert(checkpoint: url, options: .init(imageSize: 16, patchSize: 2)))
        XCTAssertThrowsError(try Converter.convert(checkpoint: url, options: .init(inChannels: 5)))
        XCTAssertThrowsError(try Converter.convert(checkpoint: url, options: .init(imageSize: 15)))
    }

    func testNoiseStdFromOfficialFileNames() {
        XCTAssertEqual(Converter.noiseStd(fromFileName: "afhq_model_8_768_8_8_0.07.pth"), 0.07)
        XCTAssertEqual(Converter.noiseStd(fromFileName: "mnist_model_4_128_4_4_0.10.pth"), 0.1)
        XCTAssertEqual(Converter.noiseStd(fromFileName: "imagenet64_model_2_768_8_8_0.05.safetensors"), 0.05)
        XCTAssertNil(Converter.noiseStd(fromFileName: "model.pth"))
        XCTAssertNil(Converter.noiseStd(fromFileName: "afhq_model_8_768_8_0.07.pth"))
    }

    func testInconsistentCheckpointIsRefused() throws {
        var tensors = try Checkpoint.read(contentsOf: Fixtures.url("tiny_uncond", "model.safetensors"))
        let i = tensors.firstIndex { $0.name == "blocks.1.proj_in.bias" }!
        tensors[i].tensor = Tensor(shape: [32], floats: Array(tensors[i].tensor.floats.prefix(32)))
        XCTAssertThrowsError(try Converter.convert(tensors: tensors, options: .init(imageSize: 8))) {
            XCTAssertTrue("\($0)".contains("blocks.1.proj_in.bias"), "\($0)")
        }
        var extra = try Checkpoint.read(contentsOf: Fixtures.url("tiny_uncond", "model.safetensors"))
        extra.append(CheckpointTensor(name: "blocks.0.extra", tensor: Tensor(shape: [1], floats: [0])))
        XCTAssertThrowsError(try Converter.convert(tensors: extra, options: .init(imageSize: 8)))
    }

    /// A float16 checkpoint converts, keeps float16 storage, and widens on load.
    func testHalfPrecisionWeights() throws {
        let tensors = try Checkpoint.read(contentsOf: Fixtures.url("tiny_uncond", "model.safetensors")).map { t -> CheckpointTensor in
            CheckpointTensor(name: t.name, tensor: Tensor(shape: t.tensor.shape, storage: .float16(t.tensor.floats.map { Float16($0).bitPattern })))
        }
        let m = try Converter.convert(tensors: tensors, options: .init(imageSize: 8))
        XCTAssertTrue(m.tensors.allSatisfy { $0.dtype == .float16 })
        let model = try TarFlowModel(model: try ModelFile.decode(try ModelFile.encode(m)))
        let c = try Fixtures.load("tiny_uncond")
        let z = try model.forward(images: c.tensor("input.x"), labels: nil).z.floats
        let ref = c.io["forward.z.f64"]!.values
        let err = zip(z, ref).map { abs(Double($0) - $1) }.max()!
        XCTAssertLessThan(err, 0.05, "float16 weights stay close to float32 results")
        XCTAssertGreaterThan(err, 0, "float16 rounding must show")
    }
}
