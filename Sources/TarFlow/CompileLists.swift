import Foundation

extension AheadOfTime {
    /// Parses `--batch 1,16,64` and `--functions forward,sample` style lists.
    public static func parseBatches(_ s: String) throws -> [Int] {
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var out: [Int] = []
        for p in parts {
            if let b = Int(p), b < 1 { throw TarFlowError.invalidInput(.batchNotPositive(b)) }
            guard let b = Int(p), b >= 1, b <= Int(Int32.max) / 2 else {
                throw TarFlowError.invalidInput(.batchNotWhole(p))
            }
            if !out.contains(b) { out.append(b) }
        }
        return out
    }

    /// `none` is the empty list: the model is written without compiled functions.
    public static func parseFunctions(_ s: String) throws -> [Function] {
        if s.trimmingCharacters(in: .whitespaces) == "none" { return [] }
        return try s.split(separator: ",", omittingEmptySubsequences: false).map { p in
            let t = p.trimmingCharacters(in: .whitespaces)
            guard let f = Function(rawValue: t) else {
                throw TarFlowError.invalidInput(.unknownFunction(t))
            }
            return f
        }
    }
}
