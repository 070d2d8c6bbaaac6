import Foundation

/// One attention head in float64, as fk_attention defines it: row i sees keys j < valid_i
/// (min(n, i + 1 + n − m) when causal, else min(n, limit)); nil for a row that sees no key.
/// Rows are `*Row` floats apart.
public func referenceAttention(q: [Float], qRow: Int, k: [Float], kRow: Int, v: [Float], vRow: Int,
                               m: Int, n: Int, d: Int, scale: Double, causal: Bool, limit: Int) -> [[Double]?] {
    (0..<m).map { i in
        let valid = causal ? min(n, i + 1 + n - m) : min(n, limit)
        guard valid > 0 else { return nil }
        var p = (0..<valid).map { j in scale * (0..<d).reduce(0.0) { $0 + Double(q[i * qRow + $1]) * Double(k[j * kRow + $1]) } }
        let mx = p.max()!
        p = p.map { exp($0 - mx) }
        let sum = p.reduce(0, +)
        return (0..<d).map { t in (0..<valid).reduce(0.0) { $0 + p[$1] / sum * Double(v[$1 * vRow + t]) } }
    }
}
