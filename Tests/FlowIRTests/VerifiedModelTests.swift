import XCTest
@testable import FlowIR

/// `VerifiedGraph` and `VerifiedModel`: made only by the verifier, and what they let a caller
/// skip is exactly what they carry.
final class VerifiedModelTests: XCTestCase {
    func model() throws -> Model { try CompiledFunctionTests.model() }

    func testTheVerifierMakesVerifiedGraphsAndRefusesBadOnes() throws {
        let m = try model()
        let g = m.graphs[0]
        let v = try Verifier.verified(g, constants: m.constantTypes)
        XCTAssertEqual(v.graph, g)
        XCTAssertEqual(v.constants, m.constantTypes)
        // W6: the constant's type must match the tensor table.
        XCTAssertThrowsError(try Verifier.verified(g, constants: ["w": TensorType(.float32, [6, 9])])) {
            XCTAssertEqual(($0 as? IRError)?.rule, "W6", "\($0)")
        }
    }

    func testVerifiedModelCarriesEveryGraphAndCompiledFunction() throws {
        let m = try model()
        let v = try m.verified()
        XCTAssertEqual(v.verifiedGraphs.map(\.graph), m.graphs)
        XCTAssertEqual(v.verifiedCompiled.map(\.function), m.compiled)
        XCTAssertEqual(v.graph(named: "forward")?.graph, m.graph(named: "forward"))
        // The reader hands out the same verified model the file holds.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("verified-\(UUID().uuidString).tflow")
        defer { try? FileManager.default.removeItem(at: url) }
        try ModelFile.write(v, to: url)
        let back = try ModelFile.readVerified(contentsOf: url)
        XCTAssertEqual(back.compiled, m.compiled)
        XCTAssertEqual(try ModelFile.encode(back), try ModelFile.encode(m))
        // F7: two graphs of one name are refused by `verified()` as by the reader.
        var twice = m
        twice.graphs.append(m.graphs[0])
        XCTAssertThrowsError(try twice.verified()) { XCTAssertEqual(($0 as? IRError)?.rule, "F7", "\($0)") }
    }

    /// Replacing the compiled functions checks them (F11, F12), and only them.
    func testReplacingCompiledChecksTheNewFunctions() throws {
        let m = try model()
        var base = m
        base.compiled = []
        let v = try base.verified()
        XCTAssertEqual(try v.replacingCompiled(with: m.compiled).compiled, m.compiled)
        var stale = m.compiled
        stale[0].sourceDigest[0] ^= 1
        XCTAssertThrowsError(try v.replacingCompiled(with: stale)) { XCTAssertEqual(($0 as? IRError)?.rule, "F12", "\($0)") }
        var renamed = m.compiled
        renamed[0].graph.name = "other"
        XCTAssertThrowsError(try v.replacingCompiled(with: renamed)) { XCTAssertEqual(($0 as? IRError)?.rule, "F11", "\($0)") }
    }

    /// A compiled function's graph is verified with the function named in the error.
    func testCompiledFunctionVerificationNamesTheFunction() throws {
        var f = try model().compiled[0]
        XCTAssertNoThrow(try f.verified(constants: try model().constantTypes))
        XCTAssertThrowsError(try f.verified(constants: ["w": TensorType(.float32, [6, 9])])) {
            XCTAssertEqual(($0 as? IRError)?.rule, "W6")
            XCTAssertTrue("\($0)".hasPrefix("compiled function 'forward', graph 'forward'"), "\($0)")
        }
        f.graph.outputs = [99]
        XCTAssertThrowsError(try f.verified(constants: try model().constantTypes))
    }

    /// Re-encoding the weights keeps the model verified: graph types do not change (W6).
    func testStoringLinearWeightsStaysValid() throws {
        let v = try model().verified().storingLinearWeights(as: .bfloat16)
        XCTAssertEqual(v.tensor(named: "w")?.dtype, .bfloat16)
        XCTAssertTrue(v.compiled.isEmpty)
        XCTAssertNoThrow(try v.model.verify())
    }
}
