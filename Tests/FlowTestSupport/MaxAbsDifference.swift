/// The largest |a[i] − b[i]|, seeing NaN: a NaN against a number, an infinity against anything
/// else, or different lengths give +∞, so a bound on the result fails (`max(err, |a − b|)`
/// and `.max()` skip NaN and would pass). Equal values, equal infinities included, and NaN
/// against NaN count 0.
public func maxAbsDifference<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(_ a: [A], _ b: [B]) -> Double {
    guard a.count == b.count else { return .infinity }
    var err = 0.0
    for (x, y) in zip(a, b) {
        let p = Double(x), q = Double(y)
        if p.isNaN || q.isNaN {
            if p.isNaN && q.isNaN { continue }
            return .infinity
        }
        if p == q { continue }
        let d = abs(p - q)
        if d.isNaN || d.isInfinite { return .infinity }
        err = Swift.max(err, d)
    }
    return err
}
