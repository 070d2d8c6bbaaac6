import Foundation
import XCTest
import FlowIR
@testable import TarFlow

/// Model files from strangers: every truncation and a sweep of byte changes of a small model
/// go through every API path a subcommand takes (load, forward, sample, denoise). Errors are
/// fine; a trap would end the test process.
final class MutatedModelTests: XCTestCase {
    /// Runs what `tarflow likelihood`, `sample` and `denoise` run; returns how far it got.
    @discardableResult
    static func exercise(_ bytes: [UInt8]) -> Int {
        guard let model = try? ModelFile.decode(bytes) else { return 0 }
        _ = try? ModelFile.encode(model)
        guard let m = try? TarFlowModel(model: model) else { return 1 }
        let c = m.config
        let x = Tensor(shape: [2, c.inChannels, c.imgSize, c.imgSize], floats: (0..<(2 * c.imageDim)).map { Float($0 % 7) / 7 - 0.5 })
        let labels: [Int]? = c.numClasses > 0 ? [0, -1] : nil
        var stage = 2
        if (try? m.forward(images: x, labels: labels)) != nil { stage += 1 }
        if (try? m.sample(noise: m.noise(count: 2, seed: 3), labels: labels, options: SamplingOptions(guidance: 1))) != nil { stage += 1 }
        if (try? m.denoise(images: x, labels: labels, noiseStd: 0.1)) != nil { stage += 1 }
        return stage
    }

    func testIntactModelRunsEveryPath() throws {
        XCTAssertEqual(Self.exercise(try TinyModels.bytes()), 5)
        XCTAssertEqual(Self.exercise(try TinyModels.bytes(classes: 3)), 5)
    }

    func testTruncationsNeverCrash() throws {
        let good = try TinyModels.bytes(classes: 3)
        let model = try ModelFile.decode(good)
        let dataEnd = good.count
        var loaded = 0
        // Every length through the prefix, every 7th through the header, every 16th through the data.
        let headerEnd = 24 + Int(good[16]) + Int(good[17]) << 8 + Int(good[18]) << 16
        for n in Array(0..<48) + Array(stride(from: 48, to: headerEnd + 64, by: 7)) + Array(stride(from: headerEnd + 64, to: dataEnd, by: 16)) {
            if Self.exercise(Array(good[0..<n])) > 0 { loaded += 1 }
        }
        // Only cuts inside the padding after the last tensor can still load.
        XCTAssertLessThanOrEqual(loaded, 4, "truncated files must be refused (\(model.tensors.count) tensors)")
    }

    func testByteChangesNeverCrash() throws {
        for classes in [0, 3] {
            let good = try TinyModels.bytes(classes: classes)
            let headerEnd = 24 + Int(good[16]) + Int(good[17]) << 8 + Int(good[18]) << 16
            var rng: UInt64 = 12345 &+ UInt64(classes)
            func next() -> Int {
                rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Int(truncatingIfNeeded: rng >> 33)
            }
            var stages = [Int](repeating: 0, count: 6)
            // The prefix, every byte of it; then ~300 spread positions of the header, each with one of
            // several changes (the fuzzer of Tools/Fuzz covers the rest; this keeps the test fast).
            let changes: [(UInt8) -> UInt8] = [{ $0 ^ 0x01 }, { $0 ^ 0x80 }, { $0 ^ 0x10 }, { _ in 0xFF }, { _ in 0 }, { $0 &+ 1 }]
            var positions = Array(0..<24)
            let step = max(1, (headerEnd - 24) / 300)
            positions += stride(from: 24, to: headerEnd, by: step).map { $0 + next() % step }
            for (i, p) in positions.enumerated() where p < good.count {
                var b = good
                b[p] = changes[(i + next()) % changes.count](b[p])
                stages[Self.exercise(b)] += 1
            }
            // Weights: NaN, infinities and huge values must run through (or be refused) cleanly.
            for k in 0..<24 {
                var b = good
                let p = headerEnd + next() % (good.count - headerEnd)
                b[p] = [0xFF, 0x7F, 0x80, 0x00][k % 4]
                if p + 1 < b.count { b[p + 1] = 0xFF }
                stages[Self.exercise(b)] += 1
            }
            // Most header changes are refused; some (attribute values, padding) still load and run.
            XCTAssertGreaterThan(stages[0], positions.count / 2, "classes \(classes): \(stages)")
            XCTAssertGreaterThan(stages[5], 5, "classes \(classes): \(stages)")
        }
    }
}
