import CTarFlowZlib
import Foundation
import XCTest
import FlowIR
@testable import FlowRuntime
@testable import TarFlow

/// Issue 12, bounded memory: no input of a few MB makes `tarflow` use more than 256 MB beyond
/// the model and the batch it asked for. Each hostile file is made here (a 1 GiB tensor of
/// deflated zeros in a 1 MB .pth, a gzip IDX bomb, an .npy header declaring 2^40 elements, a
/// huge safetensors shape) and the real binary runs on it under `ulimit -v` of
/// `addressSpaceKB`: the mnist model, the 2-image batch and the process's own mappings fit
/// there with room to spare, a 1 GiB buffer does not. Every refusal is exit 1 with one `error:`
/// line naming the file, never a signal or a hang.
extension CLIHardeningTests {
    /// Address space for the hostile runs: a debug `tarflow` maps about 150 MB (libraries,
    /// thread stacks), the memory estimate keeps 256 MB for OpenBLAS's buffer
    /// (`MemoryLimit.blasBufferBytes`), and likelihood on two MNIST images needs a few MB more.
    /// Every bomb here is 1 GiB or more.
    static let addressSpaceKB = 640 * 1024
    static let gib = 1 << 30

    /// Runs `tarflow args` under `ulimit -v kilobytes` (and a 300 s timeout, so a hang fails
    /// instead of stalling the suite); the peak RSS in kB when /usr/bin/time is installed.
    func tarflowUnderLimit(_ args: [String], kilobytes: Int = addressSpaceKB) throws -> (status: Int32, err: String, peakKB: Int?) {
        let timeFile = tmp.appendingPathComponent("time-\(UUID()).txt").path
        let time = FileManager.default.isExecutableFile(atPath: "/usr/bin/time") ? "/usr/bin/time -o '\(timeFile)' -f %M " : ""
        let r = try runProcess(URL(fileURLWithPath: "/bin/sh"),
                               ["-c", "ulimit -v \(kilobytes) && exec timeout 300 \(time)\"$0\" \"$@\"", tarflowExecutable().path] + args)
        let peak = (try? String(contentsOfFile: timeFile, encoding: .utf8))?.split(separator: "\n").last.flatMap { Int($0) }
        print("hostile run: tarflow \(args.joined(separator: " ")): exit \(r.status), peak RSS \(peak.map { "\($0) kB" } ?? "unknown"), ulimit -v \(kilobytes)")
        return (r.status, r.err, peak)
    }

    /// A refusal under the memory limit: exit 1 (not a signal, not the timeout's 124), one
    /// `error:` line naming `file` and `mentions`.
    func assertRefusedUnderLimit(_ args: [String], file path: String, mentions: [String], line: UInt = #line) throws {
        let r = try tarflowUnderLimit(args)
        XCTAssertEqual(r.status, 1, "\(args): \(r.err)", line: line)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(args) must print one line: \(r.err)", line: line)
        XCTAssertTrue(r.err.hasPrefix("error: "), r.err, line: line)
        for m in [path] + mentions { XCTAssertTrue(r.err.contains(m), "'\(m)' missing from: \(r.err)", line: line) }
        if let kb = r.peakKB { XCTAssertLessThan(kb, 256 * 1024, "\(args) peaked at \(kb) kB", line: line) }
    }

    /// `prefix` then `zeros` zero bytes, deflated (raw, as in a zip entry, or gzip; run-length
    /// matches, the best ratio deflate has), and the CRC-32 of the uncompressed bytes. 1 GiB of
    /// zeros is about 1 MB.
    static func deflate(_ prefix: [UInt8], zeros: Int, gzip: Bool = false) -> (bytes: [UInt8], crc: UInt32) {
        var stream = z_stream()
        precondition(deflateInit2_(&stream, 9, Z_DEFLATED, gzip ? 31 : -15, 8, Z_RLE, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK)
        defer { deflateEnd(&stream) }
        var out: [UInt8] = []
        var outBuffer = [UInt8](repeating: 0, count: 1 << 16)
        var crc = crc32(0, nil, 0)
        func feed(_ input: [UInt8], finish: Bool) {
            var input = input
            crc = input.withUnsafeBufferPointer { crc32(crc, $0.baseAddress, uInt($0.count)) }
            input.withUnsafeMutableBufferPointer { inBuf in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = uInt(inBuf.count)
                repeat {
                    outBuffer.withUnsafeMutableBufferPointer { o in
                        stream.next_out = o.baseAddress
                        stream.avail_out = uInt(o.count)
                        _ = CTarFlowZlib.deflate(&stream, finish ? Z_FINISH : Z_NO_FLUSH)
                        out += o[0..<(o.count - Int(stream.avail_out))]
                    }
                } while stream.avail_out == 0 || stream.avail_in > 0
            }
        }
        feed(prefix, finish: zeros == 0)
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        var left = zeros
        while left > 0 {
            let n = min(left, chunk.count)
            left -= n
            feed(Array(chunk[0..<n]), finish: left == 0)
        }
        return (out, UInt32(crc))
    }

    /// A small state dict as `convert` reads it (head_dim 64, the converter's default).
    static let stateDictConfig = TarFlowConfig(inChannels: 1, imgSize: 4, patchSize: 2, channels: 64, numBlocks: 1, layersPerBlock: 1,
                                               nvp: true, numClasses: 0, headDim: 64, expansion: 1)

    /// A torch.save-shaped .pth of `stateDictConfig` (zero weights, one stored storage per
    /// tensor), where `edit` may change tensor `hostile`'s storage numel and shape and return
    /// its zip entry.
    func tinyStateDictPTH(_ file: String, hostile name: String? = nil,
                          _ edit: ((inout Int, inout [Int]) -> StoredZip.Entry?)? = nil) throws -> String {
        let shapes = Converter.expectedShapes(Self.stateDictConfig).sorted { $0.key < $1.key }
        var p = PickleWriter()
        p.beginStateDict()
        var entries: [StoredZip.Entry] = []
        for (i, (tensor, shape)) in shapes.enumerated() {
            var numel = elementCount(shape)!, size = shape
            var entry: StoredZip.Entry?
            if tensor == name { entry = edit?(&numel, &size) }
            let stride = size.indices.map { elementCount(size[($0 + 1)...])! }
            p.tensor(tensor, storage: "\(i)", type: "FloatStorage", numel: numel, offset: 0, size: size, stride: stride)
            if let entry {
                entries.append(StoredZip.Entry(name: "archive/data/\(i)", method: entry.method, crc: entry.crc, data: entry.data, size: entry.size))
            } else {
                let data = [UInt8](repeating: 0, count: numel * 4)
                entries.append(StoredZip.Entry(name: "archive/data/\(i)", method: 0, crc: StoredZip.crc32(data), data: data, size: data.count))
            }
        }
        p.endStateDict()
        let head = [("archive/data.pkl", p.bytes), ("archive/byteorder", Array("little".utf8))].map {
            StoredZip.Entry(name: $0.0, method: 0, crc: StoredZip.crc32($0.1), data: $0.1, size: $0.1.count)
        }
        let url = tmp.appendingPathComponent(file)
        try Data(StoredZip.make(entries: head + entries)).write(to: url)
        return url.path
    }

    static let bombTensor = "blocks.0.attn_blocks.0.attention.qkv.weight"

    // MARK: .pth

    /// A tensor declared as 2^28 floats over a 1 GiB entry of deflated zeros: refused from the
    /// pickle's shapes before anything is inflated. The end of the entry's deflate stream is
    /// also damaged, so inflating it would end in a different error (or out of memory).
    func testPTHTensorOfDeflatedZerosIsRefusedBeforeInflating() throws {
        let good = try tinyStateDictPTH("good.pth")
        let converted = tmp.appendingPathComponent("good.tflow").path
        let ok = try tarflowUnderLimit(["convert", good, "-o", converted, "--image-size", "4", "--quiet"])
        XCTAssertEqual(ok.status, 0, ok.err)

        let bomb = Self.deflate([], zeros: Self.gib)
        XCTAssertLessThan(bomb.bytes.count, 2 << 20)
        let path = try tinyStateDictPTH("shape-bomb.pth", hostile: Self.bombTensor) { numel, shape in
            numel = Self.gib / 4
            shape = [Self.gib / 4]
            var damaged = bomb.bytes
            for i in (damaged.count - 64)..<(damaged.count - 32) { damaged[i] ^= 0x5A }
            return StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: damaged, size: Self.gib)
        }
        try assertRefusedUnderLimit(["convert", path, "-o", keep.path, "--image-size", "4"], file: path,
                                    mentions: ["'\(Self.bombTensor)' has shape [268435456]", "needs [192, 64]"])
        // The library refuses it the same way, before reading a storage.
        XCTAssertThrowsError(try Converter.convert(checkpoint: URL(fileURLWithPath: path), options: .init(imageSize: 4))) {
            XCTAssertTrue("\($0)".contains("has shape [268435456]"), "\($0)")
        }
        // An attn_mask buffer is skipped, but only at its [T, T] size.
        var infos = Converter.expectedShapes(Self.stateDictConfig).map { CheckpointTensorInfo(name: $0.key, dtype: .float32, shape: $0.value) }
        XCTAssertNoThrow(try Converter.config(of: infos + [CheckpointTensorInfo(name: "blocks.0.attn_mask", dtype: .float32, shape: [4, 4])], options: .init(imageSize: 4)))
        infos.append(CheckpointTensorInfo(name: "blocks.0.attn_mask", dtype: .float32, shape: [1 << 14, 1 << 14]))
        XCTAssertThrowsError(try Converter.config(of: infos, options: .init(imageSize: 4))) { XCTAssertTrue("\($0)".contains("attn_mask' has shape [16384, 16384]"), "\($0)") }
    }

    /// A zip entry of 1 GiB deflated zeros behind a tensor of 12288 floats: refused from the
    /// entry's declared size; an entry that declares 49152 bytes but inflates to 1 GiB stops
    /// at the declared size; a storage declared as 2^28 floats for that tensor is refused
    /// from the pickle.
    func testPTHStorageEntriesLargerThanTheirTensorsAreRefused() throws {
        let bomb = Self.deflate([], zeros: Self.gib)
        let declared = try tinyStateDictPTH("entry-bomb.pth", hostile: Self.bombTensor) { _, _ in
            StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: bomb.bytes, size: Self.gib)
        }
        try assertRefusedUnderLimit(["convert", declared, "-o", keep.path, "--image-size", "4"], file: declared,
                                    mentions: ["entry holds 1073741824 bytes but the pickle declares 49152"])
        let lying = try tinyStateDictPTH("entry-lie.pth", hostile: Self.bombTensor) { numel, _ in
            StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: bomb.bytes, size: numel * 4)
        }
        try assertRefusedUnderLimit(["convert", lying, "-o", keep.path, "--image-size", "4"], file: lying,
                                    mentions: ["decompresses to more than its declared 49152 bytes"])
        let numel = try tinyStateDictPTH("numel-bomb.pth", hostile: Self.bombTensor) { numel, _ in
            numel = Self.gib / 4
            return StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: bomb.bytes, size: Self.gib)
        }
        try assertRefusedUnderLimit(["convert", numel, "-o", keep.path, "--image-size", "4"], file: numel,
                                    mentions: ["declares 268435456 elements but its tensors use 12288"])
    }

    // MARK: Safetensors

    /// A safetensors header declaring 2^40 elements (or a wrong shape) over 16 bytes of data.
    func testSafetensorsHugeShapesAreRefused() throws {
        for (file, shape, mention) in [("huge.safetensors", "[1099511627776]", "needs 4398046511104 bytes but data_offsets span 16"),
                                       ("overflow.safetensors", "[4611686018427387904, 4]", "overflows")] {
            let json = Array(#"{"blocks.0.proj_in.weight":{"dtype":"F32","shape":\#(shape),"data_offsets":[0,16]}}"#.utf8)
            let bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + json + [UInt8](repeating: 0, count: 16)
            let url = tmp.appendingPathComponent(file)
            try Data(bytes).write(to: url)
            try assertRefusedUnderLimit(["convert", url.path, "-o", keep.path, "--image-size", "4"], file: url.path, mentions: [mention])
        }
    }

    // MARK: Images

    /// A 1 MB gzip IDX whose header declares 2 images followed by 1 GiB of zeros: refused
    /// after inflating one byte past the declared data (with `--limit 2` too, which asks for
    /// the whole file); `--limit 1` reads one image. A header declaring 1 GiB of images reads
    /// two with `--limit 2`.
    func testGzipIDXBombsStayWithinTheLimit() throws {
        let header = TarFlowHardeningTests.idxHeader(images: 2, side: 28)
        let trailing = tmp.appendingPathComponent("trailing-idx3-ubyte.gz")
        let gz = Self.deflate(header + [UInt8](repeating: 0, count: 2 * 784), zeros: Self.gib, gzip: true).bytes
        XCTAssertLessThan(gz.count, 2 << 20)
        try Data(gz).write(to: trailing)
        for limit in [[], ["--limit", "2"]] {
            try assertRefusedUnderLimit(["likelihood", mnist.path, "--images", trailing.path] + limit, file: trailing.path, mentions: ["after the data"])
        }
        let n = Self.gib / 784
        let declared = tmp.appendingPathComponent("declared-idx3-ubyte.gz")
        try Data(Self.deflate(TarFlowHardeningTests.idxHeader(images: n, side: 28), zeros: n * 784, gzip: true).bytes).write(to: declared)
        for (url, limit) in [(trailing, "1"), (declared, "2")] {
            let r = try tarflowUnderLimit(["likelihood", mnist.path, "--images", url.path, "--limit", limit, "--json"])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertTrue(r.err.isEmpty || r.err.hasPrefix("warning: "), r.err)
            if let kb = r.peakKB { XCTAssertLessThan(kb, 256 * 1024) }
        }
    }

    /// The bombs of issue 12 without the tight limit (a 3 GB `ulimit -v` only as a safety net,
    /// so a regression fails instead of taking the machine): the peak resident set of the
    /// `tarflow` process (GNU time's maximum RSS: the kernel's high-water mark of the image
    /// exec'd, VmHWM, counted from time's small fork) stays within the model, the batch and
    /// 256 MB. The runs under `addressSpaceKB` above bound address space; this bounds memory
    /// touched when nothing stops an allocation.
    func testMemoryBombPeaksStayWithinModelBatchAnd256MB() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/time"), "GNU time measures the peak (scripts/setup.sh installs it)")
        let safetyKB = 3_000_000, slack = 256 << 20
        func size(_ path: String) throws -> Int { try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) }
        func check(_ args: [String], status: Int32, mention: String, bound: Int, line: UInt = #line) throws {
            let r = try tarflowUnderLimit(args, kilobytes: safetyKB)
            XCTAssertEqual(r.status, status, "\(args): \(r.err)", line: line)
            if status != 0 {
                XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err, line: line)
                XCTAssertTrue(r.err.hasPrefix("error: ") && r.err.contains(mention), r.err, line: line)
            }
            let kb = try XCTUnwrap(r.peakKB, "no peak from /usr/bin/time", line: line)
            XCTAssertLessThanOrEqual(kb * 1024, bound, "\(args[0]) peaked at \(kb) kB, bound \(bound / 1024) kB", line: line)
        }
        // likelihood --limit 2 on gzip IDX files that inflate to 1 GiB: two images declared then
        // 1 GiB of zeros (refused at the first byte past the data), and 1 GiB of images declared.
        let modelAndBatch = try size(mnist.path) + 2 * 784 * 4
        let trailing = tmp.appendingPathComponent("peak-trailing-idx3-ubyte.gz")
        try Data(Self.deflate(TarFlowHardeningTests.idxHeader(images: 2, side: 28) + [UInt8](repeating: 0, count: 2 * 784), zeros: Self.gib, gzip: true).bytes)
            .write(to: trailing)
        try check(["likelihood", mnist.path, "--images", trailing.path, "--limit", "2", "--json"], status: 1, mention: "after the data", bound: modelAndBatch + slack)
        let n = Self.gib / 784
        let declared = tmp.appendingPathComponent("peak-declared-idx3-ubyte.gz")
        try Data(Self.deflate(TarFlowHardeningTests.idxHeader(images: n, side: 28), zeros: n * 784, gzip: true).bytes).write(to: declared)
        try check(["likelihood", mnist.path, "--images", declared.path, "--limit", "2", "--json"], status: 0, mention: "", bound: modelAndBatch + slack)
        // convert on a .pth with one storage of 1 GiB of deflated zeros: as an entry larger than
        // its tensor, as a storage declared 2^28 floats, and as an entry that lies about its size.
        let bomb = Self.deflate([], zeros: Self.gib)
        let entry = try tinyStateDictPTH("peak-entry.pth", hostile: Self.bombTensor) { _, _ in
            StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: bomb.bytes, size: Self.gib)
        }
        let numel = try tinyStateDictPTH("peak-numel.pth", hostile: Self.bombTensor) { numel, _ in
            numel = Self.gib / 4
            return StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: bomb.bytes, size: Self.gib)
        }
        let lying = try tinyStateDictPTH("peak-lying.pth", hostile: Self.bombTensor) { numel, _ in
            StoredZip.Entry(name: "", method: 8, crc: bomb.crc, data: bomb.bytes, size: numel * 4)
        }
        // The model is the state dict's own tensors (their bytes are what convert must hold).
        let tensors = Converter.expectedShapes(Self.stateDictConfig).values.reduce(0) { $0 + $1.reduce(4, *) }
        for (path, mention) in [(entry, "entry holds 1073741824 bytes"), (numel, "declares 268435456 elements"), (lying, "decompresses to more than")] {
            try check(["convert", path, "-o", keep.path, "--image-size", "4"], status: 1, mention: mention, bound: tensors + slack)
        }
        XCTAssertEqual(try String(contentsOf: keep, encoding: .utf8), "precious")
    }

    /// A version 1.0 .npy header for little-endian float32 `shape`, padded as np.save pads it.
    static func npyHeader(_ shape: [Int]) -> [UInt8] {
        var text = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", "))), }"
        while (10 + text.utf8.count + 1) % 64 != 0 { text += " " }
        let n = text.utf8.count + 1
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xFF), UInt8(n >> 8)] + Array(text.utf8) + [0x0A]
    }

    /// A .npy header of 2^40 float32 elements over a few bytes: one line naming the file.
    func testNPYHeaderDeclaringHugeArrayIsRefused() throws {
        let url = tmp.appendingPathComponent("huge.npy")
        try Data(Self.npyHeader([(1 << 40) / 784, 1, 28, 28]) + [UInt8](repeating: 0, count: 2 * 784 * 4)).write(to: url)
        try assertRefusedUnderLimit(["likelihood", mnist.path, "--images", url.path, "--limit", "2"], file: url.path, mentions: ["truncated"])
        try assertRefusedUnderLimit(["likelihood", mnist.path, "--images", url.path], file: url.path, mentions: ["truncated"])
    }

    /// `--limit 2` on a 4 GB (sparse) .npy of images reads two images: the header, then just
    /// those rows. Reading the whole file cannot fit under the limit.
    func testNPYWithLimitReadsOnlyTheFirstImages() throws {
        let n = 4 * Self.gib / (784 * 4)
        let url = tmp.appendingPathComponent("big.npy")
        let values = (0..<(2 * 784)).map { Float($0 % 97) / 97 - 0.5 }
        let header = Self.npyHeader([n, 1, 28, 28])
        XCTAssertEqual(header.count % 64, 0)
        try Data(header + Tensor(shape: [2, 1, 28, 28], floats: values).littleEndianBytes()).write(to: url)
        let fileSize = header.count + n * 784 * 4
        XCTAssertEqual(truncate(url.path, off_t(fileSize)), 0)  // sparse: no disk used
        let (array, count) = try NPY.read(contentsOf: url, maxItems: 2)
        XCTAssertEqual(count, n)
        XCTAssertEqual(array.shape, [2, 1, 28, 28])
        guard case .float32(let read) = array.storage else { return XCTFail("\(array.dtype)") }
        XCTAssertEqual(read, values)
        let r = try tarflowUnderLimit(["likelihood", mnist.path, "--images", url.path, "--limit", "2", "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        if let kb = r.peakKB { XCTAssertLessThan(kb, 256 * 1024) }
        // The size must still match the header: one byte more or less is an error, limit or not.
        XCTAssertEqual(truncate(url.path, off_t(fileSize + 1)), 0)
        XCTAssertThrowsError(try NPY.read(contentsOf: url, maxItems: 2)) { XCTAssertTrue("\($0)".contains("1 bytes after the array data"), "\($0)") }
        XCTAssertEqual(truncate(url.path, off_t(fileSize - 1)), 0)
        XCTAssertThrowsError(try NPY.read(contentsOf: url, maxItems: 2)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
    }

    /// Under `ulimit -v` the memory left for plans keeps OpenBLAS's buffer aside: OpenBLAS
    /// retries a failed buffer allocation forever, so without it `denoise` hung in its first
    /// sgemm instead of being refused. Checked in this process, with a soft limit 1 GB above
    /// what is mapped now (restored after).
    func testMemoryLimitKeepsTheBLASBufferAside() throws {
        var saved = rlimit()
        XCTAssertEqual(getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &saved), 0)
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let mapped = MemoryLimit.statusBytes(status, "VmSize")
        let soft = rlim_t(mapped + (1 << 30))
        try XCTSkipIf(saved.rlim_max != rlim_t.max && saved.rlim_max < soft, "the hard RLIMIT_AS is below what this test sets")
        var tight = saved
        tight.rlim_cur = soft
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &tight), 0)
        let limit = MemoryLimit.current()
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &saved), 0)
        XCTAssertTrue(limit.source.hasPrefix("RLIMIT_AS (ulimit -v) \(soft) bytes") && limit.source.contains("\(MemoryLimit.blasBufferBytes) kept for the BLAS buffer"), limit.source)
        // What was mapped may have grown a little between the two reads, never by the buffer's size.
        XCTAssertLessThanOrEqual(limit.bytes, (1 << 30) - MemoryLimit.blasBufferBytes)
        XCTAssertGreaterThan(limit.bytes, (1 << 30) - MemoryLimit.blasBufferBytes - (64 << 20))
    }

    /// Labels from a .npy with a limit: the first ones, and how many the file holds.
    func testNPYLabelsWithLimit() throws {
        let url = URL(fileURLWithPath: try labels("l.npy", [3, 1, 4, 1, 5]))
        let r = try ImageSet.loadLabels(contentsOf: url, limit: 2)
        XCTAssertEqual(r.labels, [3, 1])
        XCTAssertEqual(r.fileCount, 5)
        XCTAssertEqual(try ImageSet.loadLabels(contentsOf: url, limit: 9).labels, [3, 1, 4, 1, 5])
        XCTAssertEqual(try NPY.read(contentsOf: url, maxItems: 0).array.shape, [0])
    }
}
