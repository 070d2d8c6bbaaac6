#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The one place where stored element bytes become Float and back: the model file's tensors,
// checkpoint tensors and re-encoded weights all go through these.

extension Float {
    /// IEEE half to single, done by hand so it works on every platform (exact).
    public init(halfBits h: UInt16) {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int((h >> 10) & 0x1f)
        let mant = UInt32(h & 0x3ff)
        if exp == 0 {
            // Zero or subnormal: mant × 2^-24.
            let v = Float(mant) * Float(sign: .plus, exponent: -24, significand: 1)
            self = sign != 0 ? -v : v
        } else if exp == 31 {
            self = Float(bitPattern: sign | 0x7f80_0000 | (mant << 13))
        } else {
            self = Float(bitPattern: sign | UInt32(exp + 112) << 23 | (mant << 13))
        }
    }

    /// bfloat16 to single (exact: bfloat16 is the top half of a float32).
    @inline(__always)
    public init(bfloat16Bits b: UInt16) { self = Float(bitPattern: UInt32(b) << 16) }
}

/// float32 → IEEE half bits, rounded to nearest, ties to even (as `Float16(x)`).
@inline(__always)
public func halfBits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

/// float32 → bfloat16 bits, rounded to nearest, ties to even (NaN stays a quiet NaN).
public func bfloat16Bits(_ x: Float) -> UInt16 {
    let b = x.bitPattern
    if x.isNaN { return UInt16(b >> 16) | 0x40 }
    return UInt16((b &+ 0x7fff &+ ((b >> 16) & 1)) >> 16)
}

extension DType {
    /// Little-endian stored elements of this type as Float: f16 and bf16 widen exactly, the
    /// others convert to the nearest Float. Trailing bytes short of a whole element are ignored.
    public func floats(fromLittleEndian raw: UnsafeRawBufferPointer) -> [Float] {
        let n = raw.count / byteSize
        return [Float](unsafeUninitializedCapacity: n) { out, initialized in
            switch self {
            case .float32:
                if 1.littleEndian == 1, n > 0, let dst = out.baseAddress, let src = raw.baseAddress {
                    memcpy(dst, src, 4 * n)
                } else {
                    for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                }
            case .float16:
                for i in 0..<n { out[i] = Float(halfBits: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .bfloat16:
                for i in 0..<n { out[i] = Float(bfloat16Bits: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .int64:
                for i in 0..<n { out[i] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
            case .float64:
                for i in 0..<n { out[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
            case .uint8:
                for i in 0..<n { out[i] = Float(raw[i]) }
            case .int32:
                for i in 0..<n { out[i] = Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
            }
            initialized = n
        }
    }
}
