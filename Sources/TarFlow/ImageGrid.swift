import Foundation

extension PNGImage {
    /// Where `grid` puts a batch: min(columns, B) columns (default: ⌈√B⌉) and ⌈B / columns⌉
    /// rows of (size + padding)² cells plus the top/left padding; a single image gets no
    /// padding (as torchvision's `save_image`). Sizes saturate at `Int.max`, so any count can
    /// be checked against the PNG limits before anything is computed.
    public struct GridLayout: Sendable, Equatable {
        public var columns: Int
        public var rows: Int
        public var padding: Int
        public var width: Int
        public var height: Int

        /// Whether `PNGImage.write` takes an image of this size.
        public var fitsPNG: Bool {
            width <= PNGImage.maxDimension && height <= PNGImage.maxDimension && Saturating.mul(width, height) <= PNGImage.maxPixels
        }
    }

    /// The layout of `count` images of height × width in `columns` columns (nil: ⌈√count⌉).
    public static func gridLayout(count: Int, height: Int, width: Int, columns: Int? = nil, padding: Int = 2) -> GridLayout {
        let b = max(count, 1)
        let cols = b == 1 ? 1 : min(max(columns ?? Int(Double(b).squareRoot().rounded(.up)), 1), b)
        let rows = (b + cols - 1) / cols, pad = b == 1 ? 0 : padding
        return GridLayout(columns: cols, rows: rows, padding: pad,
                          width: Saturating.add(Saturating.mul(cols, Saturating.add(width, pad)), pad),
                          height: Saturating.add(Saturating.mul(rows, Saturating.add(height, pad)), pad))
    }
}
