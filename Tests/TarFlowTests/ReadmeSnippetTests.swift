import Foundation
import XCTest
import TarFlow

// The README's API snippet, verbatim (the test below keeps the two in sync).
// snippet-begin
func meanBitsPerDim(modelPath: String, imagesPath: String) throws -> Double {
    let model = try TarFlowModel(contentsOf: URL(fileURLWithPath: modelPath))
    let images = try ImageSet.load(contentsOf: URL(fileURLWithPath: imagesPath),
                                   channels: model.config.inChannels, size: model.config.imgSize)
    let result = try model.likelihood(images: images, labels: nil, batchSize: 64, seed: 0)
    return result.meanBitsPerDim
}

func drawDigits(modelPath: String) throws -> Tensor {
    let model = try TarFlowModel(contentsOf: URL(fileURLWithPath: modelPath))
    let noise = model.noise(count: 10, seed: 0)
    return try model.sample(noise: noise, labels: Array(0..<10),
                            options: SamplingOptions(guidance: 1), progress: { print($0.fraction) })
}
func denoiseAndClassify(model: TarFlowModel, images: Tensor, set: ImageSet) throws -> (Tensor, [Int]) {
    let clean = try model.denoise(images: images, labels: nil).images   // σ from the model file
    let predictions = try model.classify(images: set, batchSize: 64).predictions
    return (clean, predictions)
}
// snippet-end

final class ReadmeSnippetTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testSnippetMatchesReadme() throws {
        let readme = try String(contentsOf: Self.repo.appendingPathComponent("README.md"), encoding: .utf8)
        let this = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        func between(_ s: String, _ a: String, _ b: String) -> String {
            guard let r1 = s.range(of: a), let r2 = s.range(of: b, range: r1.upperBound..<s.endIndex) else { return "" }
            return String(s[r1.upperBound..<r2.lowerBound])
        }
        let inReadme = between(readme, "<!-- snippet: api -->\n```swift\nimport Foundation\nimport TarFlow\n", "```\n<!-- end snippet -->")
        let inTest = between(this, "// snippet-begin\n", "// snippet-end\n")
        XCTAssertFalse(inTest.isEmpty)
        XCTAssertEqual(inReadme.trimmingCharacters(in: .whitespacesAndNewlines), inTest.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func testSnippetRunsOnShippedModel() throws {
        let model = Self.repo.appendingPathComponent("Models/mnist.tflow").path
        let images = Self.repo.appendingPathComponent("Tests/Fixtures/io/t10k-head8-images-idx3-ubyte.gz").path
        let bpd = try meanBitsPerDim(modelPath: model, imagesPath: images)
        XCTAssertGreaterThan(bpd, 3)
        XCTAssertLessThan(bpd, 8)
        let x = try drawDigits(modelPath: model)
        XCTAssertEqual(x.shape, [10, 1, 28, 28])
    }
}
