import Foundation

/// A folder of JPEG and PNG images read as the official evaluation reads its datasets
/// (torchvision's `ImageFolder`): files found recursively in `os.walk` order (folders sorted
/// by path, files by name), classes = the sorted names of the top-level subfolders.
public struct ImageFolder: Sendable {
    public var images: ImageSet
    /// The class of each image (its top-level subfolder's index in `classes`), with `labelsFromFolders`.
    public var labels: [Int]?
    public var classes: [String]
    /// Paths relative to the folder, in image order.
    public var files: [String]

    /// File name endings read as images.
    public static let extensions = [".png", ".jpg", ".jpeg"]

    /// Reads every image under `url`. Without `resize`, each must already be `size`×`size`; with
    /// it, each goes through torchvision's `Resize(size)` (shorter side to `size`, bilinear with
    /// antialiasing, as PIL) and `CenterCrop(size)`. Gray images become RGB for a 3-channel model
    /// (as `ImageFolder` converts to RGB); a colour image for a 1-channel model is refused.
    public static func load(contentsOf url: URL, channels: Int, size: Int, resize: Bool = false,
                            labelsFromFolders: Bool = false) throws -> ImageFolder {
        func bad(_ k: InputFailure.Kind) -> TarFlowError { .invalidInput(k, file: url.path) }
        let fm = FileManager.default
        var classes: [String] = []
        var roots: [(dir: String, label: Int?)] = [("", nil)]
        if labelsFromFolders {
            classes = try fm.contentsOfDirectory(atPath: url.path).filter { name in
                var isDir: ObjCBool = false
                return !name.hasPrefix(".") && fm.fileExists(atPath: url.appendingPathComponent(name).path, isDirectory: &isDir) && isDir.boolValue
            }.sorted(by: utf8Less)
            guard !classes.isEmpty else { throw bad(.noClassFolders) }
            roots = classes.enumerated().map { ($0.element, $0.offset) }
        }
        var files: [(path: String, label: Int?)] = []
        for root in roots {
            let found = try walk(url, root.dir)
            if labelsFromFolders, found.isEmpty { throw bad(.emptyClassFolder(root.dir)) }
            files += found.map { ($0, root.label) }
        }
        guard !files.isEmpty else { throw bad(.noImageFiles) }
        let per = channels * size * size
        guard files.count <= Int.max / max(per, 1) else { throw bad(.tooManyImages) }
        var px: [UInt8] = []
        px.reserveCapacity(files.count * per)
        for f in files {
            let fileURL = url.appendingPathComponent(f.path)
            let lower = f.path.lowercased()
            var img = lower.hasSuffix(".png") ? try PNGImage.read(contentsOf: fileURL) : try JPEGImage.read(contentsOf: fileURL)
            if img.imageChannels == 1, channels == 3 {
                img = Tensor(shape: [img.imageHeight, img.imageWidth, 3], bytes: img.imageBytes.flatMap { [$0, $0, $0] })
            }
            guard img.imageChannels == channels else { throw bad(.imageChannels(path: f.path, channels: img.imageChannels, expected: channels)) }
            if resize {
                img = ImageResize.resizeAndCenterCrop(img, size: size)
            } else {
                guard img.imageWidth == size, img.imageHeight == size else {
                    throw bad(.imageSize(path: f.path, width: img.imageWidth, height: img.imageHeight, size: size))
                }
            }
            // HWC → CHW.
            let hwc = img.imageBytes
            for c in 0..<channels { for i in 0..<(size * size) { px.append(hwc[i * channels + c]) } }
        }
        return ImageFolder(images: ImageSet(count: files.count, channels: channels, size: size, pixels: .integer(px)),
                           labels: labelsFromFolders ? files.map { $0.label ?? 0 } : nil, classes: classes, files: files.map(\.path))
    }

    /// Image files under `base/dir`, relative to `base`, in `sorted(os.walk(...))` order: folders
    /// by their path, each folder's files by name (hidden entries skipped; links not followed).
    static func walk(_ base: URL, _ dir: String) throws -> [String] {
        let fm = FileManager.default
        var folders: [String] = []
        var stack = [dir]
        while let d = stack.popLast() {
            folders.append(d)
            let names = try fm.contentsOfDirectory(atPath: d.isEmpty ? base.path : base.appendingPathComponent(d).path)
            for n in names where !n.hasPrefix(".") {
                let rel = d.isEmpty ? n : d + "/" + n
                let attrs = try fm.attributesOfItem(atPath: base.appendingPathComponent(rel).path)
                if attrs[.type] as? FileAttributeType == .typeDirectory { stack.append(rel) }
            }
        }
        var out: [String] = []
        for d in folders.sorted(by: utf8Less) {
            let path = d.isEmpty ? base.path : base.appendingPathComponent(d).path
            let names = try fm.contentsOfDirectory(atPath: path).filter { n in
                !n.hasPrefix(".") && extensions.contains { n.lowercased().hasSuffix($0) }
                    && (try? fm.attributesOfItem(atPath: path + "/" + n)[.type] as? FileAttributeType) != .typeDirectory
            }
            out += names.sorted(by: utf8Less).map { d.isEmpty ? $0 : d + "/" + $0 }
        }
        return out
    }

    /// Python's string order (by code point, which UTF-8 bytes preserve).
    static func utf8Less(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}

/// torchvision's `Resize(size)` + `CenterCrop(size)` on PIL images, with PIL's bilinear filter:
/// a triangle of support 1 widened by the scale factor when shrinking (antialiasing), weights in
/// 22-bit fixed point, the horizontal pass first, 8-bit rounding after each pass. Images are
/// uint8 tensors [height, width, channels].
public enum ImageResize {
    public static func resizeAndCenterCrop(_ img: Tensor, size: Int) -> Tensor {
        let (w, h) = (img.imageWidth, img.imageHeight)
        // torchvision: the shorter side becomes `size`, the longer int(size * long / short).
        let (nw, nh): (Int, Int) = w <= h ? (size, Int(Double(size) * Double(h) / Double(w))) : (Int(Double(size) * Double(w) / Double(h)), size)
        let r = (nw == w && nh == h) ? img : resize(img, width: nw, height: nh)
        // CenterCrop: offsets int(round((dim - size) / 2)), Python rounding half to even.
        func offset(_ d: Int) -> Int {
            let q = d / 2
            return d % 2 == 0 || q % 2 == 0 ? q : q + 1
        }
        let top = offset(r.imageHeight - size), left = offset(r.imageWidth - size), c = r.imageChannels
        let pixels = r.imageBytes, rw = r.imageWidth
        var out = [UInt8](repeating: 0, count: size * size * c)
        for y in 0..<size {
            let src = ((top + y) * rw + left) * c
            for i in 0..<(size * c) { out[y * size * c + i] = pixels[src + i] }
        }
        return Tensor(shape: [size, size, c], bytes: out)
    }

    static let precisionBits = 32 - 8 - 2

    /// PIL's `ImagingResample` with the bilinear filter over the whole image.
    public static func resize(_ img: Tensor, width: Int, height: Int) -> Tensor {
        let c = img.imageChannels
        var curWidth = img.imageWidth, curHeight = img.imageHeight
        var cur: [UInt8] = img.imageBytes
        if width != curWidth {
            let (bounds, k) = coefficients(input: curWidth, output: width)
            var out = [UInt8](repeating: 0, count: width * curHeight * c)
            for y in 0..<curHeight {
                for x in 0..<width {
                    let (lo, n) = bounds[x]
                    for ch in 0..<c {
                        var ss = 1 << (precisionBits - 1)
                        for j in 0..<n { ss += Int(cur[(y * curWidth + lo + j) * c + ch]) * k[x][j] }
                        out[(y * width + x) * c + ch] = clip8(ss)
                    }
                }
            }
            curWidth = width
            cur = out
        }
        if height != curHeight {
            let (bounds, k) = coefficients(input: curHeight, output: height)
            var out = [UInt8](repeating: 0, count: curWidth * height * c)
            for y in 0..<height {
                let (lo, n) = bounds[y]
                for x in 0..<curWidth {
                    for ch in 0..<c {
                        var ss = 1 << (precisionBits - 1)
                        for j in 0..<n { ss += Int(cur[((lo + j) * curWidth + x) * c + ch]) * k[y][j] }
                        out[(y * curWidth + x) * c + ch] = clip8(ss)
                    }
                }
            }
            curHeight = height
            cur = out
        }
        return Tensor(shape: [curHeight, curWidth, c], bytes: cur)
    }

    static func clip8(_ v: Int) -> UInt8 { UInt8(clamping: v >> precisionBits) }

    /// For each output pixel, the first input pixel, the count, and the fixed-point weights
    /// (PIL `precompute_coeffs` + `normalize_coeffs_8bpc`).
    static func coefficients(input: Int, output: Int) -> ([(Int, Int)], [[Int]]) {
        let scale = Double(input) / Double(output)
        let filterScale = max(scale, 1)
        let support = 1.0 * filterScale
        var bounds: [(Int, Int)] = [], weights: [[Int]] = []
        for x in 0..<output {
            let center = (Double(x) + 0.5) * scale
            let ss = 1 / filterScale
            let lo = max(Int(center - support + 0.5), 0)  // C truncation toward zero, as PIL
            let hi = min(Int(center + support + 0.5), input)
            var k = [Double]()
            var total = 0.0
            for i in lo..<max(hi, lo) {
                let v = max(0, 1 - abs((Double(i) - center + 0.5) * ss))
                k.append(v)
                total += v
            }
            let fixed = k.map { v -> Int in
                let f = total != 0 ? v / total : 0
                let s = f * Double(1 << precisionBits)
                return Int(s < 0 ? s - 0.5 : s + 0.5)
            }
            bounds.append((lo, fixed.count))
            weights.append(fixed)
        }
        return (bounds, weights)
    }
}
