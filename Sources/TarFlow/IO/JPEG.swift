import CJPEG
import Foundation

/// JPEG files through libjpeg (libjpeg-turbo), decoded as PIL decodes them for the official
/// evaluation: the library's default (accurate integer) IDCT and fancy upsampling.
public enum JPEGImage {
    /// Images larger than this are refused before their pixels are allocated.
    public static let maxPixels = PNGImage.maxPixels
    public static let maxFileBytes = 1 << 30

    /// A uint8 image [height, width, channels]; `channels` = 1 (gray) or 3 (RGB).
    public static func read(contentsOf url: URL) throws -> Tensor {
        try decode(try readFileBytes(at: url, maxBytes: maxFileBytes), path: url.path)
    }

    /// Decodes an in-memory JPEG file; `path` only labels errors.
    public static func decode(_ bytes: [UInt8], path: String = "<memory>") throws -> Tensor {
        guard bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF else {
            throw TarFlowError.invalidInput(.notJPEG(path: path))
        }
        var w: Int32 = 0, h: Int32 = 0, c: Int32 = 0
        var out: UnsafeMutablePointer<UInt8>?
        var message = [CChar](repeating: 0, count: 256)
        let rc = bytes.withUnsafeBufferPointer { buf in
            tarflow_jpeg_decode(buf.baseAddress, UInt(buf.count), UInt(maxPixels), &w, &h, &c, &out, &message, message.count)
        }
        guard rc == 0, let out else {
            let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw TarFlowError.invalidInput(.undecodableJPEG(detail: text), file: path)
        }
        defer { free(out) }
        let n = Int(w) * Int(h) * Int(c)
        return Tensor(shape: [Int(h), Int(w), Int(c)], bytes: Array(UnsafeBufferPointer(start: out, count: n)))
    }
}
