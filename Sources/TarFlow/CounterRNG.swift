/// A counter-based random generator: value i of stream `seed` is a pure function of
/// (seed, i), so results do not depend on batching, offsets, thread count or machine.
///
/// Bits: SplitMix64 finalizer of `seed · 0x9E3779B97F4A7C15 + i · 0xD1B54A32D192ED03 + stream`.
/// Uniform: the top 24 bits / 2²⁴, in [0, 1). Gaussian: Box–Muller on two uniforms of
/// counters 2i and 2i+1 of the Gaussian stream (the first output only), computed in Double.
public struct CounterRNG: Sendable {
    public var seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    @inline(__always)
    public func bits(_ i: UInt64, stream: UInt64 = 0) -> UInt64 {
        var z = seed &* 0x9E37_79B9_7F4A_7C15 &+ i &* 0xD1B5_4A32_D192_ED03 &+ stream &* 0x94D0_49BB_1331_11EB
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits, the dequantization noise.
    @inline(__always)
    public func uniform(_ i: UInt64) -> Float { Float(bits(i, stream: 1) >> 40) * (1.0 / 16_777_216.0) }

    /// Standard normal, the sampling noise.
    public func gaussian(_ i: UInt64) -> Float {
        // u1 in (0, 1], u2 in [0, 1), 53-bit precision.
        let u1 = (Double(bits(2 * i, stream: 2) >> 11) + 1) * 0x1p-53
        let u2 = Double(bits(2 * i + 1, stream: 2) >> 11) * 0x1p-53
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Foundation
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }
#endif
