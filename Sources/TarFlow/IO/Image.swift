/// An image is the one host `Tensor`: uint8 samples shaped [height, width, channels] (HWC,
/// row-major, interleaved, as PNG and JPEG store them), so readers, resizing and writers
/// share one type with the rest of the library.
extension Tensor {
    public var imageHeight: Int { imageShape[0] }
    public var imageWidth: Int { imageShape[1] }
    public var imageChannels: Int { imageShape[2] }

    /// The HWC samples of a uint8 image.
    public var imageBytes: [UInt8] {
        guard case .uint8(let bytes) = storage else { preconditionFailure("an image tensor holds uint8 samples, not \(dtype.rawValue)") }
        return bytes
    }

    private var imageShape: [Int] {
        precondition(shape.count == 3, "an image tensor is [height, width, channels], not \(shape)")
        return shape
    }
}
