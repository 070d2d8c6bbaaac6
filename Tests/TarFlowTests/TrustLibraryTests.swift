import Foundation
import XCTest
import FlowIR
@testable import FlowRuntime
@testable import TarFlow

/// Issue 12 in the library: sizes from outside checked before arithmetic, inputs inflated no
/// further than needed, non-finite results refused, memory limits and signal clean-up.
extension TarFlowHardeningTests {
    /// Every key of a config JSON, with values that used to overflow derived sizes, is refused
    /// by name (no trap).
    func testConfigSizesAreRangeCheckedByKeyBeforeAnyArithmetic() throws {
        let keys = ["in_channels", "img_size", "patch_size", "channels", "num_blocks", "layers_per_block", "num_classes", "head_dim", "expansion"]
        for key in keys {
            let values: [Int64] = [1 << 32, 1 << 40, 1 << 62, Int64.max, -1, Int64.min]
            for value in values {
                var d: [String: Any] = ["in_channels": 1, "img_size": 28, "patch_size": 4, "channels": 128, "num_blocks": 4, "layers_per_block": 4]
                d[key] = value
                if key == "img_size" { d["patch_size"] = 1 }
                if key == "patch_size" || key == "in_channels" { d["img_size"] = 1 << 16 }
                let data = try JSONSerialization.data(withJSONObject: d)
                XCTAssertThrowsError(try AheadOfTime.parseConfig(data, path: "c.json")) { e in
                    XCTAssertTrue("\(e)".contains(key), "\(key) = \(value): \(e)")
                }
            }
        }
        // Model-file metadata: the same checks, reported as a damaged model file.
        var m = try TinyModels.model()
        m.metadata["tarflow.img_size"] = .int(1 << 40)
        assertInvalidModel(m, "img_size 1099511627776 is out of range")
    }

    func testEveryArchitectureKeyIsCheckedAgainstTensorsAndGraphs() throws {
        let good = try TinyModels.model(classes: 3)
        let edits: [(String, MetadataValue)] = [("num_blocks", .int(1)), ("channels", .int(16)), ("nvp", .bool(false)), ("num_classes", .int(2)),
                                                ("head_dim", .int(2)), ("patch_size", .int(4)), ("in_channels", .int(2)), ("img_size", .int(8)),
                                                ("layers_per_block", .int(0)), ("expansion", .int(2))]
        for (key, value) in edits {
            var m = good
            m.metadata["tarflow.\(key)"] = value
            assertInvalidModel(m, "'tarflow.\(key)'")
        }
        // A tensor the config does not have, or one it needs removed.
        var m = good
        m.tensors.append(WeightTensor(name: "extra", dtype: .float32, shape: [1], bytes: TensorBytes(floats: [0])))
        assertInvalidModel(m, "'extra'")
        m = good
        m.tensors.removeAll { $0.name == "blocks.1.attn_blocks.0.mlp.norm.bias" }
        assertInvalidModel(m, "'blocks.1.attn_blocks.0.mlp.norm.bias' is missing")
    }

    /// A .pth storage declared as 1 GiB for a 6-element tensor is refused before it is read.
    func testPickleStorageLargerThanItsTensorsIsRefusedBeforeReading() throws {
        let pkl = try [UInt8](Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tools/Fuzz/Seeds/FuzzTorchCheckpoint/pickle_small.pkl"))).dropFirst()
        var bytes = Array(pkl)
        // Storage '0' (a.weight, 2x3) declares its size with BININT1 6 at offset 140; make it
        // BININT 2^28 elements (1 GiB of floats).
        XCTAssertEqual(Array(bytes[140...141]), [UInt8(ascii: "K"), 6])
        bytes.replaceSubrange(140...141, with: [UInt8(ascii: "J")] + withUnsafeBytes(of: Int32(1 << 28).littleEndian, Array.init))
        var requested: [Int] = []
        XCTAssertThrowsError(try Checkpoint.read(pickle: bytes) { _, n in requested.append(n); return [UInt8](repeating: 0, count: min(n, 1 << 20)) }) {
            XCTAssertTrue("\($0)".contains("declares 268435456 elements but its tensors use 6"), "\($0)")
        }
        XCTAssertEqual(requested, [], "a storage was read before the sizes were checked")
        // A little slack (a sliced tensor's whole storage) is accepted.
        bytes = Array(pkl)
        bytes[141] = 200
        XCTAssertNoThrow(try Checkpoint.read(pickle: bytes) { _, n in [UInt8](repeating: 0, count: n) })
    }

    func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-gz-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let raw = dir.appendingPathComponent("x")
        try Data(bytes).write(to: raw)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["gzip", "-n", raw.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return try [UInt8](Data(contentsOf: dir.appendingPathComponent("x.gz")))
    }

    static func idxHeader(images n: Int, side: Int) -> [UInt8] {
        var out: [UInt8] = [0, 0, 8, 3]
        for v in [n, side, side] { out += withUnsafeBytes(of: UInt32(v).bigEndian, Array.init) }
        return out
    }

    /// `--limit 2` inflates two images: the damaged end of a large compressed file is never
    /// reached. Without a limit the whole file is read (and the damage found).
    func testCompressedIDXIsInflatedOnlyAsFarAsNeeded() throws {
        let n = 3_000
        var raw = Self.idxHeader(images: n, side: 28)
        raw += (0..<(n * 784)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        var gz = try gzip(raw)
        gz[gz.count - 20] ^= 0xFF  // damage near the end of the deflate stream / trailer
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-idx-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("images-idx3-ubyte.gz")
        try Data(gz).write(to: url)
        let r = try IDX.read(contentsOf: url, maxItems: 2)
        XCTAssertEqual(r.array.shape, [2, 28, 28])
        XCTAssertEqual(r.fileCount, n)
        guard case .uint8(let px) = r.array.storage else { return XCTFail("\(r.array.dtype)") }
        XCTAssertEqual(px, Array(raw[16..<(16 + 2 * 784)]))
        XCTAssertThrowsError(try IDX.read(contentsOf: url))
        let set = try ImageSet.load(contentsOf: url, channels: 1, size: 28, limit: 2)
        XCTAssertEqual(set.count, 2)
        XCTAssertEqual(set.fileCount, n)
    }

    /// A header declaring 2 images followed by 64 MiB more inflated data: refused after
    /// inflating one byte past the declared size, not the whole stream.
    func testCompressedIDXIsNotInflatedPastItsDeclaredSize() throws {
        var raw = Self.idxHeader(images: 2, side: 28) + [UInt8](repeating: 7, count: 2 * 784)
        raw += [UInt8](repeating: 0, count: 64 << 20)
        var gz = try gzip(raw)
        gz[gz.count - 20] ^= 0xFF  // the end is damaged: reading it would report corruption instead
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-idx-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("bomb-idx3-ubyte.gz")
        try Data(gz).write(to: url)
        XCTAssertThrowsError(try IDX.read(contentsOf: url)) { XCTAssertTrue("\($0)".contains("after the data"), "\($0)") }
        XCTAssertEqual(try IDX.read(contentsOf: url, maxItems: 1).array.shape, [1, 28, 28])
    }

    func testNonFiniteWeightsAreFound() {
        func first(_ t: Tensor.Storage) -> Int? { Converter.firstNonFinite(Tensor(shape: [t.count], storage: t)) }
        XCTAssertEqual(first(.float32([1, .nan, 2])), 1)
        XCTAssertNil(first(.float32([1, -3e38, .leastNonzeroMagnitude])))
        XCTAssertEqual(first(.float32([1, 2, -.infinity])), 2)
        // float16: 0x3C00 = 1, 0x7C00 = +inf, 0x7E00 = NaN, 0x7BFF = 65504 (largest finite).
        XCTAssertEqual(first(.float16([0x3C00, 0x7BFF, 0x7E00])), 2)
        XCTAssertNil(first(.float16([0x3C00, 0x7BFF, 0xFBFF])))
        // bfloat16: the top half of a float32.
        XCTAssertEqual(first(.bfloat16([0x3F80, 0x7F80])), 1)
        XCTAssertNil(first(.bfloat16([0x3F80, 0x7F7F])))
    }

    func testNonFiniteResultsNameTheFirstImage() throws {
        let model = try TarFlowModel(model: try TinyModels.model(nanIn: "blocks.0.proj_out.bias", at: 1))
        let set = ImageSet(count: 5, channels: 1, size: 4, pixels: .float([Float](repeating: 0.1, count: 80)))
        XCTAssertThrowsError(try model.likelihood(images: set, labels: nil, range: 3..<5, batchSize: 1)) { e in
            guard case TarFlowError.nonFinite(let r) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(r.image, 3)
            XCTAssertTrue(r.value.isNaN, "\(r.value)")
            XCTAssertTrue(r.description.contains("of image 3"), r.description)
        }
        XCTAssertThrowsError(try model.denoise(images: set.batch(0..<2, dequantization: .none), labels: nil, firstImage: 7)) { e in
            XCTAssertTrue("\(e)".contains("image 7"), "\(e)")
        }
        XCTAssertThrowsError(try Finite.check([1, 2, 3, Float.nan], rowSize: 2, what: "z", firstImage: 10)) { XCTAssertTrue("\($0)".contains("z of image 11 is NaN"), "\($0)") }
        XCTAssertNoThrow(try Finite.check([Float](repeating: 1, count: 4), rowSize: 2, what: "z", firstImage: 0))
    }

    func testMemoryLimitReadsCgroupAndRlimits() throws {
        XCTAssertNil(MemoryLimit.parseLimit("max\n"))
        XCTAssertEqual(MemoryLimit.parseLimit("1073741824\n"), 1 << 30)
        XCTAssertNil(MemoryLimit.parseLimit("9223372036854771712"))  // cgroup v1's "no limit"
        XCTAssertNil(MemoryLimit.parseLimit(nil))
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-cg-\(UUID())")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try Data("123456789\n".utf8).write(to: root.appendingPathComponent("memory.max"))
        try Data("23456789\n".utf8).write(to: root.appendingPathComponent("memory.current"))
        let limit = MemoryLimit.current(cgroupRoot: root.path)
        XCTAssertLessThanOrEqual(limit.bytes, 100_000_000)
        if limit.bytes == 100_000_000 { XCTAssertEqual(limit.source, "cgroup memory.max 123456789 bytes, 23456789 already in use") }
        XCTAssertEqual(MemoryLimit.statusBytes("Name:\tx\nVmSize:\t  1024 kB\nVmData:\t 8 kB\n", "VmSize"), 1 << 20)
        XCTAssertEqual(MemoryLimit.statusBytes("VmData:\t 8 kB\n", "VmSize"), 0)
        XCTAssertLessThanOrEqual(MemoryLimit.current().bytes, MemoryLimit.physicalRAM())
    }

    func testTemporaryFilesAreUnlinkedFromTheTable() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-tmpfiles-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a").path, b = dir.appendingPathComponent("b").path
        _ = FileManager.default.createFile(atPath: a, contents: Data([1]))
        _ = FileManager.default.createFile(atPath: b, contents: Data([2]))
        let sa = TemporaryFiles.register(a), sb = TemporaryFiles.register(b)
        XCTAssertNotNil(sa)
        TemporaryFiles.unregister(sb)
        TemporaryFiles.unlinkAll()
        TemporaryFiles.unregister(sa)
        XCTAssertFalse(FileManager.default.fileExists(atPath: a))
        XCTAssertTrue(FileManager.default.fileExists(atPath: b))
    }
}
