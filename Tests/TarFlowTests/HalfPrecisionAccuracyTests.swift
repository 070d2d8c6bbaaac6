import FlowIR
import FlowRuntime
import Foundation
import TarFlow
import XCTest

/// The accuracy contract of half-precision weights (issue 11), on the shipped MNIST model with
/// every half-precision part in play (weights read by the f16/bf16 kernels, the KV cache in f16),
/// against this project's own float32 results: mean bits/dim of the first 1000 test images
/// (dequantization seed 0) and the mean |Δ| of 100 guided samples (labels i mod 10, guidance 2,
/// noise seed 0).
final class HalfPrecisionAccuracyTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Figures {
        var bitsPerDim: Double
        var samples: [Float]
    }

    func figures(_ model: Model) throws -> Figures {
        let m = try TarFlowModel(model: model, threads: 2)
        let images = try ImageSet.load(contentsOf: Self.repo.appendingPathComponent("Models/data/mnist/t10k-images-idx3-ubyte.gz"),
                                       channels: 1, size: 28)
        let bpd = try m.likelihood(images: images, labels: nil, range: 0..<1000, batchSize: 100, seed: 0).meanBitsPerDim
        let samples = try m.sample(noise: m.noise(count: 100, seed: 0), labels: (0..<100).map { $0 % 10 }, options: SamplingOptions(guidance: 2))
        return Figures(bitsPerDim: bpd, samples: samples.floats)
    }

    func testHalfPrecisionWithinTheContract() throws {
        let f32 = try ModelFile.read(contentsOf: Self.repo.appendingPathComponent("Models/mnist.tflow"))
        XCTAssertEqual(f32.linearWeightDType, .float32)
        let reference = try figures(f32)
        XCTAssertTrue(reference.bitsPerDim.isFinite)
        // bf16 on every path this machine has: AMX tiles, AVX512-BF16 dot products, widened.
        let bf16Paths: [(String, [String: String])] = [("amx", [:]), ("dot", ["TARFLOW_AMX": "0"]), ("widened", ["TARFLOW_BF16DOT": "0"])]
        defer { unsetenv("TARFLOW_AMX"); unsetenv("TARFLOW_BF16DOT") }
        var cases: [(DType, String?, [String: String], Double, Double)] = [(.float16, nil, [:], 5e-5, 0.002)]
        for (path, env) in bf16Paths { cases.append((.bfloat16, path, env, 1e-3, 0.015)) }
        for (dtype, path, env, bpdBound, sampleBound) in cases {
            unsetenv("TARFLOW_AMX"); unsetenv("TARFLOW_BF16DOT")
            for (key, value) in env { setenv(key, value, 1) }
            if let path, WeightStore.bf16Path != path { continue }  // not on this CPU
            let half = try f32.storingLinearWeights(as: dtype)
            XCTAssertEqual(half.linearWeightDType, dtype)
            let m = try TarFlowModel(model: half)
            XCTAssertEqual(m.defaultKVCache, .float16)
            let got = try figures(half)
            let dBPD = abs(got.bitsPerDim - reference.bitsPerDim)
            let dSample = zip(got.samples, reference.samples).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(got.samples.count)
            let name = "\(dtype)\(path.map { " (\($0))" } ?? "")"
            print("\(name): |Δ bits/dim| \(dBPD), mean |Δ| of samples \(dSample)")
            XCTAssertLessThanOrEqual(dBPD, bpdBound, name)
            XCTAssertLessThanOrEqual(dSample, sampleBound, name)
            // Rounding moved something (the test compares different computations).
            XCTAssertGreaterThan(dSample, 0, name)
            XCTAssertGreaterThan(dBPD, 0, name)
        }
    }

    /// A re-encoded model halves its linear weights' bytes, keeps every other tensor, and
    /// survives a write and read (the C reader checks such files in scripts/test.sh too).
    func testReencodingRoundTrips() throws {
        let f32 = try ModelFile.read(contentsOf: Self.repo.appendingPathComponent("Models/mnist.tflow"))
        let names = f32.linearWeightNames
        XCTAssertFalse(names.isEmpty)
        for dtype in [DType.float16, .bfloat16] {
            let half = try f32.storingLinearWeights(as: dtype)
            for (a, b) in zip(f32.tensors, half.tensors) {
                XCTAssertEqual(a.name, b.name)
                XCTAssertEqual(a.shape, b.shape)
                XCTAssertEqual(b.dtype, names.contains(a.name) ? dtype : a.dtype, a.name)
                if names.contains(a.name) {
                    XCTAssertEqual(b.bytes.count * 2, a.bytes.count)
                    // Each weight is its f32 value rounded: within half an f16/bf16 ulp.
                    let rel: Float = dtype == .float16 ? 1.0 / 2048 : 1.0 / 256
                    for (x, y) in zip(a.floats(), b.floats()) where abs(x) > 1e-4 { XCTAssertLessThanOrEqual(abs(x - y), rel * abs(x)) }
                }
            }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("reencoded-\(dtype).tflow")
            defer { try? FileManager.default.removeItem(at: url) }
            try ModelFile.write(half, to: url)
            let back = try ModelFile.read(contentsOf: url)
            XCTAssertEqual(back.linearWeightDType, dtype)
            XCTAssertEqual(try back.tensors.map { $0.floats() }, try half.tensors.map { $0.floats() })
        }
        XCTAssertThrowsError(try f32.storingLinearWeights(as: .int64))
    }
}
