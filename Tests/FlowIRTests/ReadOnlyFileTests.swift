import Foundation
import XCTest
@testable import FlowIR

/// The one file type every reader opens files with: bounded reads, refusals by case.
final class ReadOnlyFileTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("readonlyfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testReadsAreBoundedBySizeAtOpen() throws {
        let url = dir.appendingPathComponent("ten")
        try Data((0..<10).map { UInt8($0) }).write(to: url)
        let f = try ReadOnlyFile(path: url.path)
        XCTAssertEqual(f.size, 10)
        XCTAssertEqual(try f.read(2..<5), [2, 3, 4])
        XCTAssertEqual(try f.read(at: 8, count: 5), [8, 9], "short only where the file ends")
        XCTAssertEqual(try f.readAll(maxBytes: 10), (0..<10).map { UInt8($0) })
        guard case .tooLarge(_, 10, 9)? = Self.error({ try f.readAll(maxBytes: 9) }) else { return XCTFail("not tooLarge") }
        // A file that shrinks after open is refused, not read short.
        try Data([1, 2]).write(to: url)
        guard case .changedWhileReading? = Self.error({ try f.read(0..<10) }) else { return XCTFail("not changedWhileReading") }
        // So is one that grows before it is read whole.
        let g = try ReadOnlyFile(path: url.path)
        try Data([1, 2, 3]).write(to: url)
        guard case .changedWhileReading? = Self.error({ try g.readAll(maxBytes: 100) }) else { return XCTFail("not changedWhileReading") }
    }

    func testRefusalsNameTheCase() throws {
        guard case .notRegularFile(let p)? = Self.error({ try ReadOnlyFile(path: dir.path) }) else { return XCTFail("not notRegularFile") }
        XCTAssertEqual(p, dir.path)
        let missing = dir.appendingPathComponent("missing").path
        guard case .system(.open, missing, ENOENT)? = Self.error({ try ReadOnlyFile(path: missing) }) else { return XCTFail("not open/ENOENT") }
        // The model reader's wording is unchanged.
        XCTAssertEqual(FileAccessError.modelFile(.system(operation: .open, path: missing, errno: ENOENT)).description,
                       "\(missing): cannot open: No such file or directory")
        XCTAssertEqual(FileAccessError.modelFile(.notRegularFile(path: dir.path)).description, "\(dir.path): not a regular file")
    }

    func testMappingAnEmptyAndAFullFile() throws {
        let empty = dir.appendingPathComponent("empty")
        try Data().write(to: empty)
        XCTAssertEqual(try MappedFile(path: empty.path).withUnsafeBytes { $0.count }, 0)
        let full = dir.appendingPathComponent("full")
        try Data([7, 8, 9]).write(to: full)
        XCTAssertEqual(try MappedFile(path: full.path).withUnsafeBytes { Array($0) }, [7, 8, 9])
    }

    static func error(_ body: () throws -> Any) -> FileAccessError? {
        do { _ = try body() } catch { return error as? FileAccessError }
        return nil
    }
}
