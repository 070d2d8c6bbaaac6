/// SplitMix64, so every randomized test case is reproducible from its seed.
public struct SplitMix64 {
    public var state: UInt64
    public init(_ seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in `r` from the top 24 bits.
    public mutating func float(_ r: ClosedRange<Float>) -> Float {
        r.lowerBound + (r.upperBound - r.lowerBound) * Float(next() >> 40) / Float(1 << 24)
    }
    public mutating func floats(_ n: Int, _ r: ClosedRange<Float> = -2...2) -> [Float] { (0..<n).map { _ in float(r) } }
}
