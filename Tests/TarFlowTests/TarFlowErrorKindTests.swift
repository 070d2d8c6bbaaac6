import FlowIR
import TarFlow
import XCTest

/// A file the TarFlow layer cannot read is a `TarFlowError` whose case is the format and whose
/// failure says the kind and the path, so callers branch on the case; the text is unchanged.
final class TarFlowErrorKindTests: XCTestCase {
    func error(_ body: () throws -> Any) -> TarFlowError? {
        do { _ = try body() } catch { return error as? TarFlowError }
        return nil
    }

    func testTruncatedNPY() throws {
        let full = try NPY.encode(Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]))
        let e = error { try NPY.parse(Array(full.dropLast(4)), path: "cut.npy") }
        XCTAssertEqual(e, .npy(.truncated(path: "cut.npy", what: "array data", expected: full.count, actual: full.count - 4)))
        XCTAssertEqual(e?.description, "cut.npy is truncated: the array data needs \(full.count) bytes but the file has \(full.count - 4)")
    }

    func testBadPNG() {
        let e = error { try PNGImage.decode(Array("GIF89a....".utf8), path: "x.png") }
        XCTAssertEqual(e, .png(.notPNG(path: "x.png")))
        XCTAssertEqual(e?.description, "x.png is not a PNG file (bad signature)")
    }

    func testBadIDXHeader() {
        let e = error { try IDX.parse([0, 0, 0x10, 1, 0, 0, 0, 1, 1], path: "t.idx") }
        XCTAssertEqual(e, .idx(.unsupportedType(path: "t.idx", type: 0x10)))
        XCTAssertEqual(e?.description, "t.idx: IDX data type 0x10 is not supported (expected 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e)")
        XCTAssertEqual(error { try IDX.parse([1, 0, 0x08, 1, 0, 0, 0, 1, 1]) }?.description,
                       "<memory> is not an IDX file (the magic number must start with two zero bytes)")
    }

    func testOtherFormatsAndCheckpoints() throws {
        let a = Tensor(shape: [1], floats: [1])
        XCTAssertEqual(error { try SafetensorsWriter.encode([("__metadata__", a)]) }, .safetensorsWriter(.reservedName))
        XCTAssertThrowsError(try Tensor(shape: [1], doubles: [1.5]).asInt64s()) {
            XCTAssertEqual("\($0)", "expected integer values but float64 element 0 is 1.5; store labels as an integer dtype or as exact whole numbers")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-error-kinds-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let junk = dir.appendingPathComponent("junk.pth")
        try Data("not a checkpoint at all".utf8).write(to: junk)
        guard case .checkpoint(let f)? = error({ try Checkpoint.read(contentsOf: junk) }) else { return XCTFail("not a checkpoint failure") }
        XCTAssertEqual(f.kind, .unknownFormat)
        XCTAssertEqual(f.file, junk.path)
        XCTAssertTrue(f.description.hasPrefix("checkpoint \(junk.path): "), f.description)
    }
}
