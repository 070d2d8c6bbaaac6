import Foundation
import XCTest
import FlowRuntime
@testable import TarFlow

/// Denoising (gradient from the compiler's Differentiate pass) and Bayes classification
/// against the official code.
final class DenoiseClassifyTests: XCTestCase {
    func checkDenoise(_ name: String) throws {
        let c = try Fixtures.load(name)
        let m = try Fixtures.model(name)
        let sigma = c.json["denoise_noise_std"] as! Double
        let r = try m.denoise(images: c.tensor("input.x"), labels: c.labels, noiseStd: sigma)
        c.assertMatches(r.gradient.floats, "denoise.grad")
        c.assertMatches(r.images.floats, "denoise.x")
        c.assertMatches([Float(r.learningRate)], "denoise.lr")
        c.assertMatches([r.loss], "forward.loss")
    }

    func testDenoiseTinyUncond() throws { try checkDenoise("tiny_uncond") }
    func testDenoiseCondGuided() throws { try checkDenoise("cond_guided") }
    func testDenoiseVPPrior() throws { try checkDenoise("vp_prior") }
    func testDenoiseMNIST() throws { try checkDenoise("mnist_trained") }

    /// Per image, the step is x + σ²∇ log p(x): independent of how images are batched.
    func testDenoiseIsIndependentOfBatching() throws {
        let c = try Fixtures.load("cond_guided")
        let m = try Fixtures.model("cond_guided")
        let x = c.tensor("input.x")
        let all = try m.denoise(images: x, labels: c.labels).images.floats
        let per = x.count / x.shape[0]
        for i in 0..<x.shape[0] {
            let xi = Tensor(shape: [1] + x.shape.dropFirst(), floats: Array(x.floats[(i * per)..<((i + 1) * per)]))
            let one = try m.denoise(images: xi, labels: [c.labels![i]]).images.floats
            for (a, b) in zip(one, all[(i * per)..<((i + 1) * per)]) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        }
        // The stored noise level is the default.
        XCTAssertEqual(m.noiseStd, c.json["denoise_noise_std"] as? Double)
    }

    /// Bayes-rule predictions agree with the official model's on the fixture's test images.
    func testClassifyMatchesOfficialPredictions() throws {
        let m = try Fixtures.model("mnist_trained")
        let preds = try Fixtures.readSafetensors(Fixtures.url("mnist_trained", "classify.safetensors"))["classify.pred_first1000"]!.values.map { Int($0) }
        // The first 8 MNIST test images, committed as an IDX file.
        let root = Fixtures.root.appendingPathComponent("io")
        let images = try ImageSet.load(contentsOf: root.appendingPathComponent("t10k-head8-images-idx3-ubyte.gz"), channels: 1, size: 28)
        let r = try m.classify(images: images, batchSize: 3)
        XCTAssertEqual(r.predictions, Array(preds.prefix(8)))
        XCTAssertEqual(r.losses.count, 8 * 10)
        // Chunking does not change results.
        XCTAssertEqual(try m.classify(images: images, batchSize: 8).losses, r.losses)
        XCTAssertThrowsError(try Fixtures.model("tiny_uncond").classify(images: images))
    }
}
