import Foundation
import FlowTestSupport
import XCTest
import FlowRuntime
@testable import TarFlow

/// Access to Tests/Fixtures: the official model's inputs and outputs (see Tests/Fixtures/README.md).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let cases = ["tiny_uncond", "cond_guided", "vp_prior", "mnist_trained"]

    static func url(_ c: String, _ file: String) -> URL { root.appendingPathComponent(c).appendingPathComponent(file) }

    struct Case {
        let name: String
        let json: [String: Any]
        let io: [String: (shape: [Int], values: [Double])]

        var imgSize: Int { json["img_size"] as! Int }
        var batch: Int { io["input.x"]!.shape[0] }

        func tensor(_ n: String) -> Tensor {
            let t = io[n]!
            return Tensor(shape: t.shape, floats: t.values.map { Float($0) })
        }

        var labels: [Int]? { io["input.y"].map { $0.values.map { Int($0) } } }

        /// torch float32's own max error on a tensor.
        func torchError(_ n: String) -> Double {
            let e = json["torch_float32_error_vs_float64"] as? [String: [String: Double]]
            return e?[n]?["max_abs"] ?? 0
        }

        /// The accuracy rule of the fixtures' README:
        /// max |ours − f64| ≤ 4 · max |torch32 − f64| + 1e-5 · max(1, max |f64|).
        func assertMatches(_ ours: [Float], _ name: String, file: StaticString = #filePath, line: UInt = #line) {
            let ref = io[name + ".f64"]!.values
            XCTAssertEqual(ours.count, ref.count, "\(self.name) \(name): element count", file: file, line: line)
            var err = maxAbsDifference(ours, ref)
            let mx = ref.map(abs).max() ?? 0
            if ours.contains(where: { !$0.isFinite }) { err = .infinity }
            let bound = 4 * torchError(name) + 1e-5 * max(1, mx)
            XCTAssertLessThanOrEqual(err, bound, "\(self.name) \(name): max error \(err) exceeds \(bound)", file: file, line: line)
        }
    }

    static func load(_ c: String) throws -> Case {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url(c, "case.json"))) as! [String: Any]
        return Case(name: c, json: json, io: try readSafetensors(url(c, "io.safetensors")))
    }

    /// A minimal safetensors reader for the fixtures (F32, F64, I64), independent of the
    /// product's reader so the two check each other.
    static func readSafetensors(_ u: URL) throws -> [String: (shape: [Int], values: [Double])] {
        let d = try Data(contentsOf: u)
        let n = d.prefix(8).withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self).littleEndian) }
        let header = try JSONSerialization.jsonObject(with: d.subdata(in: 8..<(8 + n))) as! [String: Any]
        var out: [String: (shape: [Int], values: [Double])] = [:]
        let base = 8 + n
        for (name, v) in header where name != "__metadata__" {
            let e = v as! [String: Any]
            let shape = e["shape"] as! [Int]
            let off = e["data_offsets"] as! [Int]
            let bytes = d.subdata(in: (base + off[0])..<(base + off[1]))
            let values: [Double] = bytes.withUnsafeBytes { p in
                switch e["dtype"] as! String {
                case "F32": (0..<(bytes.count / 4)).map { Double(p.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self)) }
                case "F64": (0..<(bytes.count / 8)).map { p.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) }
                case "I64": (0..<(bytes.count / 8)).map { Double(p.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
                default: []
                }
            }
            out[name] = (shape, values)
        }
        return out
    }

    /// Converts a fixture checkpoint (cached per file, since several tests use each).
    nonisolated(unsafe) static var modelCache: [String: TarFlowModel] = [:]
    static let cacheLock = NSLock()

    static func model(_ c: String, format: String = "pth") throws -> TarFlowModel {
        cacheLock.lock()
        defer { cacheLock.unlock() }
        let key = "\(c).\(format)"
        if let m = modelCache[key] { return m }
        let cs = try load(c)
        let model = try Converter.convert(checkpoint: url(c, "model.\(format)"), options: .init(imageSize: cs.imgSize, noiseStd: cs.json["denoise_noise_std"] as? Double))
        let m = try TarFlowModel(model: model)
        modelCache[key] = m
        return m
    }
}
