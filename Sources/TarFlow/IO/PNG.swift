import CPNG
import Foundation

/// 8-bit PNG reading and writing through libpng's simplified API.
///
/// libpng reports errors with `longjmp`, which must never cross Swift frames. The simplified
/// API (`png_image_*`) catches its own `longjmp` inside C and returns 0 with a message, so every
/// call here goes through it, on a file read whole into memory and checked (signature, IHDR,
/// chunk lengths, size limits) before libpng sees it.
///
/// Samples come back as stored, the way PIL and torchvision load images: colour-space chunks
/// (gAMA, cHRM, sRGB, iCCP) are ignored, 16-bit samples are scaled to 8 bits with
/// round(v·255/65535), palettes are expanded to RGB, and alpha is dropped, not composited.
public enum PNGImage {
    /// Largest accepted width or height.
    public static let maxDimension = 16384
    /// Largest accepted width·height (64 Mi pixels, i.e. at most 256 MiB of decoded RGBA).
    public static let maxPixels = 1 << 26
    /// Largest accepted file.
    public static let maxFileBytes = 1 << 30

    private static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    // MARK: Reading

    /// Decodes a PNG file into a uint8 image [height, width, channels], `channels` = 1 (gray) or 3 (RGB).
    public static func read(contentsOf url: URL) throws -> Tensor {
        let bytes = try readFileBytes(at: url, maxBytes: maxFileBytes)
        return try decode(bytes, path: url.path)
    }

    /// Decodes an in-memory PNG file; `path` only labels errors.
    public static func decode(_ bytes: [UInt8], path: String = "<memory>") throws -> Tensor {
        let (header, stream) = try sanitize(bytes, path: path)
        let channels = header.isColor ? 3 : 1

        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }

        return try stream.withUnsafeBytes { raw in
            // libpng reads from `raw` lazily until png_image_finish_read returns, so both calls
            // stay inside this closure.
            guard let base = raw.baseAddress, png_image_begin_read_from_memory(&image, base, raw.count) != 0 else {
                throw TarFlowError.png(.decode(path: path, message: message(of: &image)))
            }
            guard Int(image.width) == header.width, Int(image.height) == header.height else {
                throw TarFlowError.png(.decode(path: path, message: "libpng disagrees with IHDR on the image size"))
            }
            // Without colour-space chunks, 16-bit data would otherwise be taken as linear and
            // gamma-encoded on the way to 8 bits; treat it as already encoded, like 8-bit data.
            image.flags |= png_uint_32(PNG_IMAGE_FLAG_16BIT_sRGB)
            let hasAlpha = (image.format & png_uint_32(PNG_FORMAT_FLAG_ALPHA)) != 0
            let decodedChannels = channels + (hasAlpha ? 1 : 0)
            image.format = (header.isColor ? png_uint_32(PNG_FORMAT_FLAG_COLOR) : 0)
                | (hasAlpha ? png_uint_32(PNG_FORMAT_FLAG_ALPHA) : 0)

            let rowStride = header.width * decodedChannels
            var decoded = [UInt8](repeating: 0, count: rowStride * header.height)
            let ok = decoded.withUnsafeMutableBytes { out in
                png_image_finish_read(&image, nil, out.baseAddress, png_int_32(rowStride), nil)
            }
            guard ok != 0 else { throw TarFlowError.png(.decode(path: path, message: message(of: &image))) }
            return Tensor(shape: [header.height, header.width, channels],
                          bytes: hasAlpha ? dropAlpha(decoded, channels: channels) : decoded)
        }
    }

    /// Removes the last sample of every pixel.
    private static func dropAlpha(_ samples: [UInt8], channels: Int) -> [UInt8] {
        let pixels = samples.count / (channels + 1)
        return [UInt8](unsafeUninitializedCapacity: pixels * channels) { out, initialized in
            samples.withUnsafeBufferPointer { src in
                var s = 0, d = 0
                for _ in 0..<pixels {
                    for c in 0..<channels { out[d + c] = src[s + c] }
                    s += channels + 1
                    d += channels
                }
            }
            initialized = pixels * channels
        }
    }

    private struct Header {
        var width: Int
        var height: Int
        var isColor: Bool
    }

    /// Checks the signature, IHDR and the chunk framing, and returns the stream without the
    /// colour-space chunks (each chunk carries its own CRC, so dropping whole chunks keeps the
    /// rest valid).
    private static func sanitize(_ bytes: [UInt8], path: String) throws -> (Header, [UInt8]) {
        guard bytes.count >= signature.count, Array(bytes[0..<signature.count]) == signature else {
            throw TarFlowError.png(.notPNG(path: path))
        }
        func u32(_ at: Int) -> Int {
            Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        }
        // IHDR must come first: length 13, then width, height, depth, colour type, 3 method bytes.
        guard bytes.count >= 8 + 8 + 13 + 4 else { throw TarFlowError.png(.truncated(path: path)) }
        guard u32(8) == 13, Array(bytes[12..<16]) == Array("IHDR".utf8) else {
            throw TarFlowError.png(.invalid(path: path, reason: "the first chunk is not a 13-byte IHDR"))
        }
        let width = u32(16), height = u32(20)
        let depth = Int(bytes[24]), colorType = Int(bytes[25])
        guard (1...maxDimension).contains(width), (1...maxDimension).contains(height) else {
            throw TarFlowError.png(.tooLarge(path: path, width: width, height: height))
        }
        guard width * height <= maxPixels else { throw TarFlowError.png(.tooLarge(path: path, width: width, height: height)) }
        let validDepths: [Int]
        switch colorType {
        case 0: validDepths = [1, 2, 4, 8, 16]
        case 3: validDepths = [1, 2, 4, 8]
        case 2, 4, 6: validDepths = [8, 16]
        default: throw TarFlowError.png(.invalid(path: path, reason: "colour type \(colorType) does not exist"))
        }
        guard validDepths.contains(depth) else {
            throw TarFlowError.png(.invalid(path: path, reason: "bit depth \(depth) is not allowed with colour type \(colorType)"))
        }

        let dropped: Set<[UInt8]> = [Array("gAMA".utf8), Array("cHRM".utf8), Array("sRGB".utf8), Array("iCCP".utf8)]
        var out = signature
        out.reserveCapacity(bytes.count)
        var offset = signature.count
        var sawEnd = false
        var imageDataBytes = 0
        while !sawEnd {
            guard bytes.count - offset >= 12 else { throw TarFlowError.png(.truncated(path: path)) }
            let length = u32(offset)
            guard length <= Int(Int32.max) else {
                throw TarFlowError.png(.invalid(path: path, reason: "chunk length \(length) at offset \(offset) exceeds 2^31-1"))
            }
            guard bytes.count - offset - 12 >= length else { throw TarFlowError.png(.truncated(path: path)) }
            let type = Array(bytes[offset + 4..<offset + 8])
            let end = offset + 12 + length
            if !dropped.contains(type) { out += bytes[offset..<end] }
            if type == Array("IDAT".utf8) { imageDataBytes += length }
            sawEnd = type == Array("IEND".utf8)
            offset = end
        }
        // Deflate expands at most 1032:1, so the image data must be at least that fraction of
        // the pixel bytes: checked before the decoder allocates the full image.
        let samplesPerPixel = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][colorType] ?? 4
        let pixelBytes = height * ((width * samplesPerPixel * depth + 7) / 8)
        guard imageDataBytes * 1032 + 64 >= pixelBytes else {
            throw TarFlowError.png(.invalid(path: path, reason: "\(imageDataBytes) bytes of image data cannot hold a \(width)x\(height) image (truncated?)"))
        }
        return (Header(width: width, height: height, isColor: colorType & 2 != 0), out)
    }

    private static func message(of image: inout png_image) -> String {
        let text = withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return text.isEmpty ? "unknown libpng error" : text
    }

    // MARK: Writing

    /// Writes a uint8 image [height, width, channels], gray (`channels` 1) or RGB (3).
    public static func write(_ image: Tensor, to url: URL) throws {
        try writeAtomically(try encode(image), to: url)
    }

    /// The PNG file bytes of a uint8 gray or RGB image [height, width, channels].
    public static func encode(_ image: Tensor) throws -> [UInt8] {
        guard image.dtype == .uint8, image.shape.count == 3 else {
            throw TarFlowError.png(.badPixels(reason: "an image is uint8 [height, width, channels], got \(image.dtype.rawValue) \(image.shape)"))
        }
        let (height, width, channels, pixels) = (image.imageHeight, image.imageWidth, image.imageChannels, image.imageBytes)
        guard channels == 1 || channels == 3 else { throw TarFlowError.png(.badPixels(reason: "channels must be 1 or 3, got \(channels)")) }
        guard (1...maxDimension).contains(width), (1...maxDimension).contains(height), width * height <= maxPixels else {
            throw TarFlowError.png(.tooLarge(path: "<output>", width: width, height: height))
        }
        guard pixels.count == width * height * channels else {
            throw TarFlowError.png(.badPixels(reason: "\(pixels.count) samples for \(width)x\(height)x\(channels)"))
        }
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = channels == 3 ? png_uint_32(PNG_FORMAT_FLAG_COLOR) : 0
        defer { png_image_free(&image) }

        return try pixels.withUnsafeBytes { src in
            var size: png_alloc_size_t = 0
            // First pass measures, second pass writes: the simplified API needs the buffer up front.
            guard png_image_write_to_memory(&image, nil, &size, 0, src.baseAddress, 0, nil) != 0, size > 0 else {
                throw TarFlowError.png(.encode(message: message(of: &image)))
            }
            var out = [UInt8](repeating: 0, count: Int(size))
            var written = size
            let ok = out.withUnsafeMutableBytes { dst in
                png_image_write_to_memory(&image, dst.baseAddress, &written, 0, src.baseAddress, 0, nil)
            }
            guard ok != 0, written <= size else { throw TarFlowError.png(.encode(message: message(of: &image))) }
            out.removeLast(Int(size - written))
            return out
        }
    }

    // MARK: Grids

    /// Tiles a batch into one image the way `torchvision.utils.save_image(batch, nrow: columns,
    /// padding:, normalize:)` does, returning a uint8 image [height, width, channels] ready for `write`.
    ///
    /// - `images`: B·C·H·W floats (NCHW), in model space [-1, 1] when `normalize` is false.
    /// - Layout: min(columns, B) columns and ceil(B / columns) rows of (H+padding)×(W+padding)
    ///   cells with padding also on the top/left edge, pad value 0; image k's top-left pixel is
    ///   at (row·(H+p)+p, col·(W+p)+p). A single image is returned without padding, as torchvision does.
    /// - Values: `normalize` maps the batch-wide [min, max] to [0, 1] with
    ///   (x − min) / max(max − min, 1e-5); otherwise v = (x + 1) / 2. Samples are
    ///   ⌊clamp(v·255 + 0.5, 0, 255)⌋; NaN becomes 0.
    /// - One channel stays gray (torchvision triplicates it into equal RGB samples).
    public static func grid(images: [Float], count: Int, channels: Int, height: Int, width: Int,
                            columns: Int, padding: Int = 2, normalize: Bool) -> Tensor {
        precondition(count >= 1 && height >= 1 && width >= 1 && columns >= 1 && padding >= 0,
                     "PNGImage.grid: count, height, width, columns must be positive and padding non-negative")
        precondition(channels == 1 || channels == 3, "PNGImage.grid: channels must be 1 or 3")
        precondition(images.count == count * channels * height * width,
                     "PNGImage.grid: \(images.count) values for \(count)x\(channels)x\(height)x\(width)")

        var low: Float = 0, scale: Float = 1
        if normalize {
            var lo = Float.infinity, hi = -Float.infinity
            for x in images where !x.isNaN {
                lo = min(lo, x)
                hi = max(hi, x)
            }
            if lo > hi { lo = 0; hi = 0 }  // all NaN
            low = lo
            scale = Float(max(Double(hi) - Double(lo), 1e-5))
        }

        let pad = count == 1 ? 0 : padding
        let gridColumns = count == 1 ? 1 : min(columns, count)
        let gridRows = (count + gridColumns - 1) / gridColumns
        let gridWidth = gridColumns * (width + pad) + pad
        let gridHeight = gridRows * (height + pad) + pad
        var pixels = [UInt8](repeating: 0, count: gridWidth * gridHeight * channels)

        images.withUnsafeBufferPointer { src in
            pixels.withUnsafeMutableBufferPointer { dst in
                for k in 0..<count {
                    let top = (k / gridColumns) * (height + pad) + pad
                    let left = (k % gridColumns) * (width + pad) + pad
                    for c in 0..<channels {
                        let plane = (k * channels + c) * height * width
                        for y in 0..<height {
                            var o = ((top + y) * gridWidth + left) * channels + c
                            let row = plane + y * width
                            for x in 0..<width {
                                let value = src[row + x]
                                // low/high are the batch extremes, so torchvision's clamp is a no-op here.
                                let v = normalize ? (value - low) / scale : (value + 1) / 2
                                dst[o] = quantize(v)
                                o += channels
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [gridHeight, gridWidth, channels], bytes: pixels)
    }

    /// save_image's rounding: ⌊clamp(v·255 + 0.5, 0, 255)⌋ in float32.
    @inline(__always)
    private static func quantize(_ v: Float) -> UInt8 {
        let s = v * 255 + 0.5
        guard s > 0 else { return 0 }  // also NaN
        return s >= 255 ? 255 : UInt8(s)
    }
}

extension TarFlowError {
    /// Failures of PNG reading and writing.
    public enum PNGFailure: Sendable, Equatable, CustomStringConvertible {
        case notPNG(path: String)
        case truncated(path: String)
        case invalid(path: String, reason: String)
        case tooLarge(path: String, width: Int, height: Int)
        case decode(path: String, message: String)
        case encode(message: String)
        case badPixels(reason: String)

        public var description: String {
            switch self {
            case let .notPNG(path): "\(path) is not a PNG file (bad signature)"
            case let .truncated(path): "\(path) is truncated (a chunk runs past the end of the file or IEND is missing)"
            case let .invalid(path, reason): "\(path) is not a valid PNG: \(reason)"
            case let .tooLarge(path, width, height):
                "\(path): image size \(width)x\(height) is outside 1...\(PNGImage.maxDimension) per side "
                    + "or above \(PNGImage.maxPixels) pixels"
            case let .decode(path, message): "\(path): libpng could not decode the image: \(message)"
            case let .encode(message): "libpng could not encode the image: \(message)"
            case let .badPixels(reason): "cannot write PNG: \(reason)"
            }
        }
    }
}
