import Foundation
import XCTest
import FlowIR
@testable import FlowRuntime
@testable import TarFlow

/// What `scripts/ulimit-sweep.sh` found, kept from coming back: under a tight `ulimit -v` every
/// command ended with its line and then hung in OpenBLAS's exit handler (it joins a worker
/// thread that retries its failed buffer allocation forever), and a model too large for the
/// room left was refused as "more than the 0 bytes", without the limit or the numbers.
extension CLIHardeningTests {
    /// Limits from below the model's mapping to just under what OpenBLAS's worker buffer needs
    /// beside a debug build: whatever each run can do, it ends (exit 0 with its output, or
    /// exit 1 with one line that names the limit when it is about memory), within the timeout.
    func testNoCommandHangsOrDiesUnderATightAddressSpace() throws {
        let images = repo.appendingPathComponent("Models/data/mnist/t10k-images-idx3-ubyte.gz").path
        let runs: [[String]] = [["inspect", mnist.path], ["likelihood", mnist.path, "--images", images, "--limit", "2", "--json"]]
        for kilobytes in [160_000, 200_000, 240_000, 320_000] {
            for args in runs {
                let r = try runProcess(URL(fileURLWithPath: "/bin/sh"),
                                       ["-c", "ulimit -v \(kilobytes) && exec timeout 60 \"$0\" \"$@\"", tarflowExecutable().path] + args)
                let what = "ulimit -v \(kilobytes) tarflow \(args[0])"
                XCTAssertNotEqual(r.status, 124, "\(what) hung: \(r.err)")
                XCTAssertTrue(r.status == 0 || r.status == 1, "\(what): exit \(r.status): \(r.err)")
                if r.status == 0 {
                    XCTAssertFalse(r.out.isEmpty, "\(what) printed nothing")
                } else {
                    XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(what): \(r.err)")
                    XCTAssertTrue(r.err.hasPrefix("error: "), "\(what): \(r.err)")
                    if r.err.contains("memory") { XCTAssertTrue(r.err.contains("ulimit -v"), "\(what) does not name the limit: \(r.err)") }
                }
            }
        }
    }

    /// The packed weights are checked before the run's executors pack them: a limit below them
    /// is a shortfall of no batch (the CLI says "loading the model needs ..."), nothing packed.
    func testWeightsBeyondTheLimitAreRefusedBeforePacking() throws {
        let m = try TarFlowModel(contentsOf: mnist)
        let names = m.model.linearWeightNames
        XCTAssertFalse(names.isEmpty)
        let linearBytes = m.model.tensors.filter { names.contains($0.name) }.reduce(0) { $0 + $1.bytes.count }
        let run = TarFlowModel.Run.likelihood(images: 2, batchSize: 2, keepLatents: false)
        let tight = MemoryLimit(bytes: linearBytes - 1, source: "a test limit")
        XCTAssertThrowsError(try m.preflight(run, limit: tight)) { e in
            guard case TarFlowError.insufficientMemory(let s) = e else { return XCTFail("\(e)") }
            XCTAssertNil(s.batch)
            XCTAssertEqual(s.need.parts.map(\.what), ["packed linear-layer weights"])
            XCTAssertEqual(s.need.bytes, linearBytes)
            XCTAssertTrue("\(s)".contains("(a test limit)"), "\(s)")
        }
        XCTAssertEqual(m.weights.packedBytes, 0, "a refused run packed weights")
        // Room for them: the run's own need is checked next, and once packed they need nothing.
        XCTAssertNoThrow(try m.preflight(run, limit: MemoryLimit(bytes: 4 * linearBytes + (64 << 20), source: "a test limit")))
        XCTAssertGreaterThanOrEqual(m.weights.packedBytes, linearBytes)
        XCTAssertEqual(m.packedWeightNeed.bytes, 0)
    }
}
