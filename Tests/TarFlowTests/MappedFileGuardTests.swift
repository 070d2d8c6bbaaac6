import Foundation
import XCTest
import FlowIR
#if canImport(Glibc)
import Glibc
#endif

/// SIGBUS on a mapped model file in the library, not only in the tool: a program that reads a
/// model file with `ModelFile.read` and has the file cut under it ends with one line naming
/// the file and exit 1. Each case runs in a child: this test binary run again on this one test,
/// told by `childVariable` which side it is.
final class MappedFileGuardTests: XCTestCase {
    static let childVariable = "TARFLOW_MAPPED_GUARD_CHILD"
    static let fileVariable = "TARFLOW_MAPPED_GUARD_FILE"

    func testSIGBUSOnAMappedModelFileIsOneLineAndExit1() throws {
        let env = ProcessInfo.processInfo.environment
        if let mode = env[Self.childVariable], let path = env[Self.fileVariable] {
            runChild(mode: mode, path: path)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mapped-guard-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let self_ = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        let filter = "TarFlowTests.MappedFileGuardTests/testSIGBUSOnAMappedModelFileIsOneLineAndExit1"
        for mode in ["cut", "chain"] {
            let path = dir.appendingPathComponent("m-\(mode).tflow").path
            try ModelFile.write(try TinyModels.model(), to: URL(fileURLWithPath: path))
            let r = try runProcess(self_, [filter], environment: [Self.childVariable: mode, Self.fileVariable: path])
            let lines = r.err.split(separator: "\n").filter { $0.hasPrefix("error: ") || $0.hasPrefix("child: ") }
            switch mode {
            case "cut":
                // Exit 1 and exactly one line, which names the file.
                XCTAssertEqual(r.status, 1, r.err)
                XCTAssertEqual(lines.count, 1, r.err)
                XCTAssertTrue(lines.first?.hasPrefix("error: the model file \(path) was truncated or changed") == true, r.err)
                XCTAssertTrue(r.err.contains("SIGBUS"), r.err)
                XCTAssertFalse(r.err.contains("child: touched every page"), "the cut file was read without a fault")
            default:
                // A SIGBUS that is no fault on a mapped file reaches the handler installed before.
                XCTAssertEqual(r.status, 42, r.err)
                XCTAssertTrue(r.err.contains("child: previous handler"), r.err)
                XCTAssertFalse(r.err.contains("error: the model file"), r.err)
            }
        }
    }

    func say(_ line: String) { FileHandle.standardError.write(Data(line.utf8)) }

    /// The child side: never returns.
    func runChild(mode: String, path: String) -> Never {
        if mode == "chain" {
            // Installed before the first mapping, so the guard finds it as the previous handler.
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in
                let text: StaticString = "child: previous handler\n"
                _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
                _exit(42)
            }
            sigemptyset(&action.sa_mask)
            sigaction(SIGBUS, &action, nil)
        }
        let model: Model
        do { model = try ModelFile.read(contentsOf: URL(fileURLWithPath: path)) } catch {
            say("child: cannot read \(path): \(error)\n")
            _exit(3)
        }
        XCTAssertTrue(model.tensors.allSatisfy(\.bytes.isMapped))
        if mode == "chain" {
            raise(SIGBUS)
            say("child: raise returned\n")
            _exit(4)
        }
        guard truncate(path, 0) == 0 else { _exit(5) }
        var sum: UInt8 = 0
        for t in model.tensors { for b in t.bytes.buffer { sum &+= b } }
        say("child: touched every page (\(sum))\n")
        _exit(6)
    }
}
