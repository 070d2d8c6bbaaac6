/// Results are checked before they are returned: a NaN or an infinity (from a damaged weight, or
/// images far outside model space) must end in an error naming the first image, never in a
/// file or a figure printed with exit status 0.
public enum Finite {
    /// Throws if a row of `values` (rows of `rowSize` elements, row 0 being image `firstImage`)
    /// holds a NaN or an infinity; `what` names the quantity ("z", "logdets", ...).
    public static func check(_ values: [Float], rowSize: Int, what: String, firstImage: Int) throws(TarFlowError) {
        guard let i = values.firstIndex(where: { !$0.isFinite }) else { return }
        throw .nonFinite(NonFiniteResult(quantity: what, value: Double(values[i]), image: firstImage + i / max(rowSize, 1)))
    }

    public static func check(_ values: [Double], rowSize: Int, what: String, firstImage: Int) throws(TarFlowError) {
        guard let i = values.firstIndex(where: { !$0.isFinite }) else { return }
        throw .nonFinite(NonFiniteResult(quantity: what, value: values[i], image: firstImage + i / max(rowSize, 1)))
    }
}
