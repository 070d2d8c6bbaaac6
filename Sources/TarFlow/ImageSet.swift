import Foundation
import FlowRuntime

/// Images to evaluate: float images in model space [−1, 1], or integer images in 0…255.
///
/// Sources: a `.npy` (float32/float64 used as is; uint8 as integers) of shape (B, C, H, W),
/// or (B, H, W) when C = 1; a folder of PNG and JPEG files, recursively (`ImageFolder`, which
/// also resizes and reads class labels from subfolders); or MNIST IDX files, plain or gzipped.
public struct ImageSet: Sendable {
    public enum Pixels: Sendable {
        case float([Float])
        case integer([UInt8])
    }

    public var count: Int
    public var channels: Int
    public var size: Int
    public var pixels: Pixels

    /// Images in the file, of which the first `count` were read (`load(…limit:)`).
    public var fileCount: Int

    public var isInteger: Bool { if case .integer = pixels { true } else { false } }
    var imageDim: Int { channels * size * size }

    public init(count: Int, channels: Int, size: Int, pixels: Pixels) {
        self.count = count
        self.channels = channels
        self.size = size
        self.pixels = pixels
        fileCount = count
    }

    /// How integer images become model-space floats.
    public enum Dequantization: Sendable {
        /// ((x + u) / 256) · 2 − 1 with u uniform from a counter-based stream (the likelihood's).
        case uniform(seed: UInt64)
        /// x / 255 · 2 − 1, no noise (the official notebook's classifier).
        case none
    }

    /// Images `range` as a model-space batch f32[n, C, H, W]. The noise of image i depends on
    /// i alone, so batching and offsets do not change results.
    public func batch(_ range: Range<Int>, dequantization: Dequantization) -> Tensor {
        let d = imageDim
        let out: [Float]
        switch pixels {
        case .float(let f):
            out = Array(f[(range.lowerBound * d)..<(range.upperBound * d)])
        case .integer(let px):
            out = [Float](unsafeUninitializedCapacity: range.count * d) { buf, n in
                let base = range.lowerBound * d
                switch dequantization {
                case .uniform(let seed):
                    let rng = CounterRNG(seed: seed)
                    for j in 0..<(range.count * d) {
                        buf[j] = ((Float(px[base + j]) + rng.uniform(UInt64(base + j))) / 256) * 2 - 1
                    }
                case .none:
                    for j in 0..<(range.count * d) { buf[j] = Float(px[base + j]) / 255 * 2 - 1 }
                }
                n = range.count * d
            }
        }
        return Tensor(shape: [range.count, channels, size, size], floats: out)
    }

    /// Loads images for a model with `channels` channels of `size`×`size` pixels; with `limit`,
    /// only the first `limit` images (only their rows of a `.npy` are read, and a compressed IDX
    /// file is inflated no further).
    public static func load(contentsOf url: URL, channels: Int, size: Int, limit: Int? = nil) throws -> ImageSet {
        var set = try loadAll(contentsOf: url, channels: channels, size: size, limit: limit)
        if let limit, set.count > limit {
            let d = set.imageDim
            switch set.pixels {
            case .float(let f): set.pixels = .float(Array(f[0..<(limit * d)]))
            case .integer(let p): set.pixels = .integer(Array(p[0..<(limit * d)]))
            }
            set.count = limit
        }
        return set
    }

    static func loadAll(contentsOf url: URL, channels: Int, size: Int, limit: Int?) throws -> ImageSet {
        func bad(_ k: InputFailure.Kind) -> TarFlowError { .invalidInput(k, file: url.path) }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { throw bad(.noSuchFileOrFolder) }
        if isDir.boolValue { return try ImageFolder.load(contentsOf: url, channels: channels, size: size).images }
        let lower = url.lastPathComponent.lowercased()
        guard lower.hasSuffix(".npy") || lower.contains("idx") || lower.hasSuffix(".gz") || lower.contains("ubyte") else {
            throw bad(.unknownImageFormat)
        }
        let (array, fileCount) = try readArray(contentsOf: url, limit: limit)
        let s = array.shape
        let ok = (s.count == 4 && s[1] == channels && s[2] == size && s[3] == size) || (s.count == 3 && channels == 1 && s[1] == size && s[2] == size)
        guard ok else { throw bad(.imageArrayShape(shape: s, channels: channels, size: size)) }
        let n = s[0]
        var set: ImageSet
        switch array.storage {
        case .float32(let f):
            try checkFinite(f, dim: channels * size * size, url)
            set = ImageSet(count: n, channels: channels, size: size, pixels: .float(f))
        case .float64(let d):
            let f = d.map { Float($0) }
            try checkFinite(f, dim: channels * size * size, url)
            set = ImageSet(count: n, channels: channels, size: size, pixels: .float(f))
        case .uint8(let b):
            set = ImageSet(count: n, channels: channels, size: size, pixels: .integer(b))
        default:
            throw bad(.imageDType(array.dtype))
        }
        set.fileCount = fileCount
        return set
    }

    /// An array file's first `limit` items (all when nil) and how many it holds: `.npy` by its
    /// extension, anything else as IDX.
    static func readArray(contentsOf url: URL, limit: Int?) throws -> (array: Tensor, fileCount: Int) {
        if url.lastPathComponent.lowercased().hasSuffix(".npy") {
            let r = try NPY.read(contentsOf: url, maxItems: limit)
            return (r.array, r.fileCount)
        }
        let r = try IDX.read(contentsOf: url, maxItems: limit)
        return (r.array, r.fileCount)
    }

    static func checkFinite(_ f: [Float], dim: Int, _ url: URL) throws {
        if let i = f.firstIndex(where: { !$0.isFinite }) {
            throw TarFlowError.invalidInput(.imageNotFinite(image: i / dim, element: nil), file: url.path)
        }
    }

    /// Labels from an int64/int32 `.npy` or an IDX labels file.
    public static func loadLabels(contentsOf url: URL) throws -> [Int] {
        try loadLabels(contentsOf: url, limit: nil).labels
    }

    /// The first `limit` labels (all when nil) and how many the file holds.
    public static func loadLabels(contentsOf url: URL, limit: Int?) throws -> (labels: [Int], fileCount: Int) {
        let (a, fileCount) = try readArray(contentsOf: url, limit: limit)
        guard a.shape.count == 1 else { throw TarFlowError.invalidInput(.labelsRank(shape: a.shape), file: url.path) }
        let all: [Int]
        switch a.storage {
        case .int64(let v): all = v.map { Int($0) }
        case .int32(let v): all = v.map { Int($0) }
        case .uint8(let v): all = v.map { Int($0) }
        default: throw TarFlowError.invalidInput(.labelsDType(a.dtype), file: url.path)
        }
        return (limit.map { Array(all.prefix($0)) } ?? all, fileCount)
    }
}
