import Foundation
import XCTest
import FlowIR
@testable import TarFlow

/// The TarFlow layer refuses model files whose metadata and graphs disagree, checkpoints and
/// images whose sizes do not add up, before anything is allocated or indexed.
final class TarFlowHardeningTests: XCTestCase {
    func assertInvalidModel(_ m: Model, _ mention: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TarFlowModel(model: m), file: file, line: line) { e in
            guard case TarFlowError.invalidModel(let f) = e else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertTrue(f.description.contains(mention), f.description, file: file, line: line)
        }
    }

    func testMetadataThatDisagreesWithTheGraphsIsRefused() throws {
        let good = try TinyModels.model(classes: 3)
        XCTAssertNoThrow(try TarFlowModel(model: good))
        for (key, value, mention) in [("tarflow.img_size", MetadataValue.int(8), "input 'x'"), ("tarflow.num_blocks", .int(3), "'tarflow.num_blocks'"),
                                      ("tarflow.num_classes", .int(0), "'tarflow.num_classes'"), ("tarflow.in_channels", .int(4), "'x'"),
                                      ("tarflow.patch_size", .int(1), "'tarflow.patch_size'")] {
            var m = good
            m.metadata[key] = value
            assertInvalidModel(m, mention)
        }
        var m = good
        m.metadata["tarflow.in_channels"] = .int(1 << 40)
        XCTAssertThrowsError(try TarFlowModel(model: m))  // out of range, no overflow
    }

    func testGraphSignaturesAreChecked() throws {
        let good = try TinyModels.model()
        // An output renamed away (the forward pass would look it up by name).
        var m = good
        var g = m.graph(named: "forward")!
        g.values[g.value(named: "block0")!].name = "blockX"
        m.graphs[m.graphs.firstIndex { $0.name == "forward" }!] = g
        assertInvalidModel(m, "'block0' is missing")
        // A decode step whose token input is narrower than the sampler writes.
        m = good
        var d = m.graph(named: "decode1")!
        d.inputs.removeAll { d.values[$0].name == "logit_scale" }
        m.graphs[m.graphs.firstIndex { $0.name == "decode1" }!] = d
        assertInvalidModel(m, "decode1")
        // An unconditional decode step with a value named y (the sampler fills such a buffer).
        m = good
        d = m.graph(named: "decode0")!
        d.values[d.value(named: "a")!].name = "a"
        let t = d.values.firstIndex { $0.name.hasPrefix("t") }!
        d.values[t].name = "y"
        m.graphs[m.graphs.firstIndex { $0.name == "decode0" }!] = d
        assertInvalidModel(m, "'y'")
        // The prior's variance must cover every token.
        m = good
        let v = m.tensors.firstIndex { $0.name == "var" }!
        m.tensors[v] = WeightTensor(name: "var", dtype: .float32, shape: [2, 4], bytes: TensorBytes(floats: [Float](repeating: 1, count: 8)))
        assertInvalidModel(m, "'var'")
        // A gradient graph in the file must have the signature denoising reads.
        m = good
        var grad = m.graph(named: "forward")!
        grad.name = "gradient"
        m.graphs.append(grad)
        assertInvalidModel(m, "gradient")
    }

    /// A compiled function runs instead of its source graph, so its signature is checked too.
    func testCompiledFunctionSignaturesAreChecked() throws {
        let compiled = try AheadOfTime.compile(try TinyModels.model(), functions: [.forward], batches: [1])
        XCTAssertNoThrow(try TarFlowModel(model: compiled))
        var m = compiled.model
        let i = try XCTUnwrap(m.compiled.firstIndex { $0.name == "forward" })
        let v = try XCTUnwrap(m.compiled[i].graph.value(named: "block0"))
        m.compiled[i].graph.values[v].name = "blockX"
        assertInvalidModel(m, "'block0' is missing")
    }

    func testValuesLargerThanTheModelNeedsAreRefused() throws {
        var m = try TinyModels.model()
        var g = m.graph(named: "forward")!
        let huge = TensorType(.float32, [.fixed(1 << 20), 64])  // 256 MiB of zeros from a 1 KB node
        g.values.append(Value(name: "huge", type: huge))
        g.nodes.append(Node(op: .full(value: 0, shape: huge.shape), inputs: [], outputs: [g.values.count - 1]))
        m.graphs[0] = g
        XCTAssertNoThrow(try m.verify())  // within the generic W11 limit...
        assertInvalidModel(m, "larger than this model can need")  // ...but not what a TarFlow model needs
    }

    func testConverterFlagsCannotOverflow() throws {
        let tensors = try Checkpoint.read(contentsOf: Fixtures.url("tiny_uncond", "model.safetensors"))
        for o in [Converter.Options(patchSize: Int.max), .init(imageSize: 1 << 40), .init(inChannels: -1), .init(patchSize: 0)] {
            XCTAssertThrowsError(try Converter.convert(tensors: tensors, options: o))
        }
    }

    func testPickleStoragesMustHaveTheDeclaredSize() throws {
        let pkl = try [UInt8](Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tools/Fuzz/Seeds/FuzzTorchCheckpoint/pickle_small.pkl"))).dropFirst()
        let ok = try Checkpoint.read(pickle: Array(pkl)) { _, n in [UInt8](repeating: 0, count: n) }
        XCTAssertEqual(ok.map(\.name), ["a.weight", "b", "scalar", "view.t", "view.off"])
        XCTAssertEqual(ok[3].tensor.shape, [4, 3])
        XCTAssertThrowsError(try Checkpoint.read(pickle: Array(pkl)) { _, n in [UInt8](repeating: 0, count: n + 1) }) {
            XCTAssertTrue("\($0)".contains("declares"), "\($0)")
        }
    }

    /// A PNG header may claim 16384×4096 pixels; the image data must be able to hold them before
    /// the decoder allocates 64 MiB.
    func testPNGImageDataMustFitTheClaimedSize() throws {
        var png = try PNGImage.encode(Tensor(shape: [4, 4, 1], bytes: [UInt8](repeating: 7, count: 16)))
        XCTAssertEqual(try PNGImage.decode(png).shape, [4, 4, 1])
        // Width and height are bytes 16..<24 (IHDR); the IHDR CRC is not checked before ours.
        png.replaceSubrange(16..<24, with: [0, 0, 0x40, 0, 0, 0, 0x10, 0])
        XCTAssertThrowsError(try PNGImage.decode(png)) { XCTAssertTrue("\($0)".contains("cannot hold"), "\($0)") }
    }

    func testExpandedViewsAreBounded() {
        XCTAssertLessThanOrEqual(CheckpointTorchZip.maxExpandedElements, 1 << 24)
    }
}
