import CTarFlowZlib
import Foundation
import FlowIR

/// IDX files, the container of the MNIST data set (`t10k-images-idx3-ubyte[.gz]`), plain or
/// gzip-compressed.
///
/// The header is two zero bytes, a type byte, a dimension count, then one big-endian `UInt32`
/// per dimension; the data follows big-endian. Images (magic 0x00000803) come back as uint8
/// [N, H, W], labels (0x00000801) as uint8 [N]. Types 0x08 (ubyte), 0x09 (sbyte, widened to
/// int32), 0x0B (short, widened to int32), 0x0C (int32), 0x0D (float32), 0x0E (float64) are read.
public enum IDX {
    /// Largest accepted file and largest accepted decompressed size.
    public static let maxBytes = 1 << 30
    /// IDX allows up to 255 dimensions; nothing real uses more than a handful.
    public static let maxDimensions = 16

    public static func read(contentsOf url: URL) throws -> Tensor {
        try read(contentsOf: url, maxItems: nil).array
    }

    /// The first `maxItems` items (images, labels) of the file, or all when nil, and how many the
    /// file holds. A compressed file is inflated only as far as those items reach (its header
    /// first), and never past the size its header declares, so a small file that inflates to
    /// gigabytes costs no more memory than the items asked for.
    public static func read(contentsOf url: URL, maxItems: Int?) throws -> (array: Tensor, fileCount: Int) {
        let path = url.path
        let file = try readFileBytes(at: url, maxBytes: maxBytes)
        guard isGzip(file) else {
            let a = try parse(file, path: path)
            guard let maxItems, let n = a.shape.first, n > maxItems else { return (a, a.shape.first ?? 0) }
            return (try parse(prefix(file, items: maxItems, path: path), path: path), n)
        }
        let headerMax = 4 + 4 * maxDimensions
        let head = try gunzip(file, limit: maxBytes, path: path, stopAt: headerMax)
        guard head.count >= 4, head[0] == 0, head[1] == 0 else { throw TarFlowError.idx(.notIDX(path: path)) }
        let (dataStart, itemBytes, count) = try layout(head, path: path)
        // Whole file: one byte past the declared size reveals trailing data without inflating it all.
        var want = dataStart + count * itemBytes + 1
        if let maxItems, count > maxItems { want = dataStart + maxItems * itemBytes }
        guard want - 1 <= maxBytes else { throw TarFlowError.idx(.gzip(path: path, message: "the header declares \(want - 1) bytes, more than \(maxBytes)")) }
        var bytes = try gunzip(file, limit: maxBytes, path: path, stopAt: want)
        if let maxItems, count > maxItems { bytes = try prefix(bytes, items: maxItems, path: path) }
        return (try parse(bytes, path: path), count)
    }

    /// Offset of the data, bytes per item (one index of the first dimension) and item count,
    /// with every product checked.
    static func layout(_ bytes: [UInt8], path: String) throws -> (dataStart: Int, itemBytes: Int, count: Int) {
        let rank = Int(bytes[3])
        guard (1...maxDimensions).contains(rank) else {
            throw TarFlowError.idx(.invalid(path: path, reason: "\(rank) dimensions (expected 1...\(maxDimensions))"))
        }
        let dataStart = 4 + 4 * rank
        guard bytes.count >= dataStart else { throw TarFlowError.idx(.truncated(path: path, expected: dataStart, actual: bytes.count)) }
        let shape = (0..<rank).map { i -> Int in
            let at = 4 + 4 * i
            return Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        }
        let size: Int
        switch bytes[2] {
        case 0x08, 0x09: size = 1
        case 0x0B: size = 2
        case 0x0C, 0x0D: size = 4
        case 0x0E: size = 8
        default: throw TarFlowError.idx(.unsupportedType(path: path, type: bytes[2]))
        }
        guard let per = elementCount(Array(shape.dropFirst())), case let (item, o1) = per.multipliedReportingOverflow(by: size), !o1,
              case let (total, o2) = item.multipliedReportingOverflow(by: shape[0]), !o2, total <= maxBytes else {
            throw TarFlowError.idx(.invalid(path: path, reason: "dimensions \(shape) declare more than \(maxBytes) bytes"))
        }
        return (dataStart, item, shape[0])
    }

    /// The file cut to its first `items` items, with the first dimension rewritten to match.
    static func prefix(_ bytes: [UInt8], items: Int, path: String) throws -> [UInt8] {
        let (dataStart, itemBytes, count) = try layout(bytes, path: path)
        let n = min(items, count), end = dataStart + n * itemBytes
        guard bytes.count >= end else { throw TarFlowError.idx(.truncated(path: path, expected: end, actual: bytes.count)) }
        var out = Array(bytes[0..<end])
        out.replaceSubrange(4..<8, with: [UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)])
        return out
    }

    /// Decodes an uncompressed, in-memory IDX file; `path` only labels errors.
    public static func parse(_ bytes: [UInt8], path: String = "<memory>") throws -> Tensor {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else { throw TarFlowError.idx(.notIDX(path: path)) }
        let type = bytes[2]
        let rank = Int(bytes[3])
        guard (1...maxDimensions).contains(rank) else {
            throw TarFlowError.idx(.invalid(path: path, reason: "\(rank) dimensions (expected 1...\(maxDimensions))"))
        }
        let dataStart = 4 + 4 * rank
        guard bytes.count >= dataStart else {
            throw TarFlowError.idx(.truncated(path: path, expected: dataStart, actual: bytes.count))
        }
        let shape = (0..<rank).map { i -> Int in
            let at = 4 + 4 * i
            return Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        }
        let fileSize: Int
        switch type {
        case 0x08, 0x09: fileSize = 1
        case 0x0B: fileSize = 2
        case 0x0C, 0x0D: fileSize = 4
        case 0x0E: fileSize = 8
        default: throw TarFlowError.idx(.unsupportedType(path: path, type: type))
        }
        guard let count = elementCount(shape) else {
            throw TarFlowError.idx(.invalid(path: path, reason: "dimensions \(shape) overflow the element count"))
        }
        let (byteLength, overflow) = count.multipliedReportingOverflow(by: fileSize)
        guard !overflow else { throw TarFlowError.idx(.invalid(path: path, reason: "dimensions \(shape) overflow the byte count")) }
        let available = bytes.count - dataStart
        guard available >= byteLength else {
            throw TarFlowError.idx(.truncated(path: path, expected: dataStart + byteLength, actual: bytes.count))
        }
        guard available == byteLength else {
            throw TarFlowError.idx(.invalid(path: path, reason: "\(available - byteLength) bytes after the data for dimensions \(shape)"))
        }

        return bytes.withUnsafeBytes { raw in
            let data = UnsafeRawBufferPointer(rebasing: raw[dataStart...])
            switch type {
            case 0x08: return Tensor(shape: shape, bytes: Array(data))
            case 0x09: return Tensor(shape: shape, int32s: data.map { Int32(Int8(bitPattern: $0)) })
            case 0x0B:
                let shorts: [Int16] = Tensor.loadIntegers(data, count: count, bigEndian: true)
                return Tensor(shape: shape, int32s: shorts.map { Int32($0) })
            case 0x0C: return Tensor(shape: shape, dtype: .int32, decoding: data, bigEndian: true)
            case 0x0D: return Tensor(shape: shape, dtype: .float32, decoding: data, bigEndian: true)
            default: return Tensor(shape: shape, dtype: .float64, decoding: data, bigEndian: true)
            }
        }
    }

    static func isGzip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B
    }

    /// Inflates a gzip file (all members, as `gzip -d` does), refusing output beyond `limit`
    /// bytes so that a small hostile file cannot exhaust memory.
    /// With `stopAt`, inflation stops once that many bytes are out (fewer if the data ends first).
    static func gunzip(_ input: [UInt8], limit: Int, path: String, stopAt: Int? = nil) throws -> [UInt8] {
        guard input.count <= Int(UInt32.max) else {
            throw TarFlowError.idx(.gzip(path: path, message: "compressed file larger than 4 GiB"))
        }
        var stream = z_stream()
        // 15 + 32: largest window, and accept either a zlib or a gzip header.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw TarFlowError.idx(.gzip(path: path, message: "inflateInit2 failed"))
        }
        defer { inflateEnd(&stream) }

        let cap = min(limit + 1, stopAt ?? Int.max)
        var output = [UInt8](repeating: 0, count: min(cap, max(1 << 16, input.count * 4)))
        var produced = 0
        try input.withUnsafeBytes { inRaw in
            guard let inBase = inRaw.bindMemory(to: Bytef.self).baseAddress else { return }
            stream.next_in = UnsafeMutablePointer(mutating: inBase)
            stream.avail_in = uInt(inRaw.count)
            while true {
                if let stopAt, produced >= stopAt { return }
                if produced == output.count {
                    guard output.count <= limit else {
                        throw TarFlowError.idx(.gzip(path: path, message: "decompresses to more than \(limit) bytes"))
                    }
                    output += repeatElement(0, count: min(output.count, cap - output.count))
                }
                let status = output.withUnsafeMutableBytes { outRaw -> Int32 in
                    guard let outBase = outRaw.bindMemory(to: Bytef.self).baseAddress else { return Z_MEM_ERROR }
                    stream.next_out = outBase + produced
                    stream.avail_out = uInt(outRaw.count - produced)
                    let before = Int(stream.avail_out)
                    let result = inflate(&stream, Z_NO_FLUSH)
                    produced += before - Int(stream.avail_out)
                    return result
                }
                switch status {
                case Z_STREAM_END:
                    let rest = Int(stream.avail_in)
                    if rest == 0 { return }
                    // Another gzip member may follow (as written by `cat a.gz b.gz`).
                    let next = inRaw.count - rest
                    guard rest >= 2, inRaw[next] == 0x1F, inRaw[next + 1] == 0x8B else {
                        throw TarFlowError.idx(.gzip(path: path, message: "\(rest) bytes of trailing garbage after the gzip data"))
                    }
                    guard inflateReset(&stream) == Z_OK else { throw TarFlowError.idx(.gzip(path: path, message: "inflateReset failed")) }
                case Z_OK:
                    continue
                case Z_BUF_ERROR where stream.avail_in == 0 && stream.avail_out > 0:
                    throw TarFlowError.idx(.gzip(path: path, message: "the compressed data ends early (truncated file)"))
                case Z_BUF_ERROR:
                    continue
                default:
                    let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                    throw TarFlowError.idx(.gzip(path: path, message: message))
                }
            }
        }
        output.removeLast(output.count - produced)
        return output
    }
}

extension TarFlowError {
    /// Failures of IDX reading.
    public enum IDXFailure: Sendable, Equatable, CustomStringConvertible {
        case notIDX(path: String)
        case unsupportedType(path: String, type: UInt8)
        case truncated(path: String, expected: Int, actual: Int)
        case invalid(path: String, reason: String)
        case gzip(path: String, message: String)

        public var description: String {
            switch self {
            case let .notIDX(path): "\(path) is not an IDX file (the magic number must start with two zero bytes)"
            case let .unsupportedType(path, type):
                "\(path): IDX data type 0x\(String(type, radix: 16)) is not supported "
                    + "(expected 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e)"
            case let .truncated(path, expected, actual):
                "\(path) is truncated: \(expected) bytes needed, \(actual) present; download the file again"
            case let .invalid(path, reason): "\(path) is not a valid IDX file: \(reason)"
            case let .gzip(path, message): "\(path): cannot decompress: \(message)"
            }
        }
    }
}
