import CFlowKernels
import FlowTestSupport
import XCTest

/// `fk_linear` (packed-weight GEMM with its epilogue) in every kernel copy this CPU can run,
/// against a float64 reference, over shapes that hit every row-block size, partial panels and
/// vectors, k = 0 and long k; and its promise that a split of rows or panels between callers
/// gives the same bits.
final class LinearKernelTests: XCTestCase {
    var rng = SplitMix64(0x11E4)

    override func tearDown() {
        _ = fk_select_instruction_set("auto")
        super.tearDown()
    }

    /// The copies this CPU can run (always at least the baseline).
    var instructionSets: [String] { ["avx512bf16", "avx512", "avx2", "baseline"].filter { fk_select_instruction_set($0) == 0 } }

    struct Case {
        var rows: Int, k: Int, n: Int
        var bias: Bool, residual: Bool, gelu: Bool
    }

    func reference(_ c: Case, x: [Float], w: [Float], b: [Float], r: [Float]) -> [Double] {
        var y = [Double](repeating: 0, count: c.rows * c.n)
        for i in 0..<c.rows {
            for j in 0..<c.n {
                var s = 0.0
                for t in 0..<c.k { s += Double(x[i * c.k + t]) * Double(w[j * c.k + t]) }
                if c.bias { s += Double(b[j]) }
                if c.gelu { s = 0.5 * s * (1 + erf(s / 2.0.squareRoot())) }
                if c.residual { s += Double(r[i * c.n + j]) }
                y[i * c.n + j] = s
            }
        }
        return y
    }

    /// Runs fk_linear over rows [r0, r1) and panels [p0, p1) into y.
    func run(_ c: Case, x: [Float], packed: [Float], b: [Float], r: [Float]?, y: inout [Float], rows: Range<Int>, panels: Range<Int>) {
        let residual = r ?? []
        x.withUnsafeBufferPointer { xp in
            packed.withUnsafeBufferPointer { pp in
                b.withUnsafeBufferPointer { bp in
                    residual.withUnsafeBufferPointer { rp in
                        y.withUnsafeMutableBufferPointer { yp in
                            fk_linear(xp.baseAddress.map { $0 + rows.lowerBound * c.k }, pp.baseAddress, c.bias ? bp.baseAddress : nil,
                                      r == nil ? nil : rp.baseAddress! + rows.lowerBound * c.n, yp.baseAddress! + rows.lowerBound * c.n,
                                      rows.count, c.k, c.n, panels.lowerBound, panels.count, c.gelu ? 1 : 0)
                        }
                    }
                }
            }
        }
    }

    func testEveryCopyAgainstFloat64() throws {
        var cases: [Case] = []
        for rows in [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 49] {
            for (k, n) in [(16, 32), (37, 45), (128, 100)] {
                cases.append(Case(rows: rows, k: k, n: n, bias: rows % 2 == 1, residual: rows % 3 == 0, gelu: n == 100))
            }
        }
        cases += [Case(rows: 5, k: 0, n: 33, bias: true, residual: true, gelu: false), Case(rows: 3, k: 1, n: 7, bias: false, residual: false, gelu: true),
                  Case(rows: 9, k: 700, n: 64, bias: true, residual: false, gelu: false), Case(rows: 2, k: 5, n: 1, bias: true, residual: true, gelu: true),
                  // Weights beyond L2 (1.3 MB): rows in L2-sized chunks, several of them.
                  Case(rows: 70, k: 1024, n: 300, bias: true, residual: true, gelu: false)]
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            XCTAssertEqual(String(cString: fk_instruction_set()), isa)
            for c in cases {
                let x = rng.floats(c.rows * c.k, -1...1), w = rng.floats(c.n * c.k, -1...1)
                let b = rng.floats(max(c.n, 1), -1...1), r = rng.floats(c.rows * c.n, -1...1)
                var packed = [Float](repeating: .nan, count: max(fk_packed_size(c.n, c.k), 1))
                fk_pack_weights(w, c.n, c.k, &packed)
                var y = [Float](repeating: .nan, count: c.rows * c.n)
                run(c, x: x, packed: packed, b: b, r: c.residual ? r : nil, y: &y, rows: 0..<c.rows, panels: 0..<((c.n + 31) / 32))
                let ref = reference(c, x: x, w: w, b: b, r: r)
                for i in ref.indices {
                    // float32 sums of k products of magnitude ≤ 1, GELU's erf to 4e-7.
                    let tol = 1e-6 * Double(c.k + 4)
                    if !(abs(Double(y[i]) - ref[i]) <= tol) {
                        XCTFail("\(isa) \(c): y[\(i)] = \(y[i]), reference \(ref[i])")
                        break
                    }
                }
            }
        }
    }

    func testSplitsGiveTheSameBits() throws {
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            let c = Case(rows: 23, k: 40, n: 130, bias: true, residual: true, gelu: true)
            let x = rng.floats(c.rows * c.k, -1...1), w = rng.floats(c.n * c.k, -1...1)
            let b = rng.floats(c.n, -1...1), r = rng.floats(c.rows * c.n, -1...1)
            var packed = [Float](repeating: 0, count: fk_packed_size(c.n, c.k))
            fk_pack_weights(w, c.n, c.k, &packed)
            var whole = [Float](repeating: 0, count: c.rows * c.n)
            run(c, x: x, packed: packed, b: b, r: r, y: &whole, rows: 0..<c.rows, panels: 0..<5)
            for (rowCut, panelCut) in [(1, 1), (7, 2), (11, 3), (22, 4)] {
                var pieces = [Float](repeating: .nan, count: c.rows * c.n)
                for rows in [0..<rowCut, rowCut..<c.rows] {
                    for panels in [0..<panelCut, panelCut..<5] { run(c, x: x, packed: packed, b: b, r: r, y: &pieces, rows: rows, panels: panels) }
                }
                XCTAssertEqual(pieces.map(\.bitPattern), whole.map(\.bitPattern), "\(isa): rows cut at \(rowCut), panels at \(panelCut)")
            }
        }
    }

    /// The residual may be the output buffer itself (the planner's in-place update).
    func testResidualInPlace() throws {
        let c = Case(rows: 10, k: 24, n: 50, bias: true, residual: true, gelu: false)
        let x = rng.floats(c.rows * c.k, -1...1), w = rng.floats(c.n * c.k, -1...1), b = rng.floats(c.n, -1...1)
        let r = rng.floats(c.rows * c.n, -1...1)
        var packed = [Float](repeating: 0, count: fk_packed_size(c.n, c.k))
        fk_pack_weights(w, c.n, c.k, &packed)
        var y = r
        y.withUnsafeMutableBufferPointer { yp in
            fk_linear(x, packed, b, yp.baseAddress, yp.baseAddress, c.rows, c.k, c.n, 0, 2, 0)
        }
        let ref = reference(c, x: x, w: w, b: b, r: r)
        for i in ref.indices { XCTAssertEqual(Double(y[i]), ref[i], accuracy: 1e-5) }
    }

    /// fk_attention in every copy (per query row below 4 rows; K transposed for short
    /// sequences; packed tiles from 128 visible keys) against float64, causal and with a key
    /// limit, including rows that see no key (NaN). The copies with FMA (avx2, avx512,
    /// avx512bf16) give the same bits: their exp differs only in how it scales by 2^n.
    func testAttentionInEveryCopy() throws {
        var fmaBits: [String: [UInt32]] = [:]
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            var caseRNG = SplitMix64(0xA77E)
            for (m, n, d) in [(1, 5, 16), (3, 7, 20), (4, 4, 64), (9, 12, 80), (70, 70, 64), (5, 33, 8), (130, 130, 24), (6, 150, 40)] {
                for (causal, limit) in [(true, n), (false, n), (false, 3), (false, 0), (false, 129)] {
                    let (qr, kr, vr, orow) = (d + 3, d + 1, d + 2, d + 5)
                    // The same inputs for every copy.
                    let q = caseRNG.floats(m * qr, -1...1), k = caseRNG.floats(n * kr, -1...1), v = caseRNG.floats(n * vr, -1...1)
                    var out = [Float](repeating: 7, count: m * orow)
                    var scratch = [Float](repeating: .nan, count: fk_attention_scratch(n, d))
                    fk_attention(q, qr, k, kr, v, vr, &out, orow, m, n, d, 0.3, causal ? 1 : 0, limit, 0, m, &scratch)
                    if isa != "baseline" {
                        let key = "\(m) \(n) \(d) \(causal) \(limit)"
                        if let first = fmaBits[key] {
                            let differ = zip(out, first).filter { $0.bitPattern != $1 }.count
                            XCTAssertEqual(differ, 0, "\(isa) \(key): elements whose bits differ from the first FMA copy's")
                        } else {
                            fmaBits[key] = out.map(\.bitPattern)
                        }
                    }
                    // The same rows asked for in two calls: the same bits.
                    var pieces = [Float](repeating: 7, count: m * orow)
                    let cut = m / 3
                    fk_attention(q, qr, k, kr, v, vr, &pieces, orow, m, n, d, 0.3, causal ? 1 : 0, limit, cut, m - cut, &scratch)
                    fk_attention(q, qr, k, kr, v, vr, &pieces, orow, m, n, d, 0.3, causal ? 1 : 0, limit, 0, cut, &scratch)
                    XCTAssertEqual(pieces.map(\.bitPattern), out.map(\.bitPattern), "\(isa) m \(m) n \(n): rows split at \(cut)")
                    let expected = referenceAttention(q: q, qRow: qr, k: k, kRow: kr, v: v, vRow: vr, m: m, n: n, d: d, scale: 0.3,
                                                      causal: causal, limit: limit)
                    for i in 0..<m {
                        for t in 0..<d {
                            let got = out[i * orow + t]
                            guard let ref = expected[i] else {
                                XCTAssertTrue(got.isNaN, "\(isa) m \(m) n \(n) row \(i): no key visible")
                                continue
                            }
                            XCTAssertEqual(Double(got), ref[t], accuracy: 2e-6, "\(isa) m \(m) n \(n) d \(d) causal \(causal) limit \(limit) [\(i), \(t)]")
                        }
                        // Columns past d in the output row are untouched.
                        for t in d..<orow { XCTAssertEqual(out[i * orow + t], 7) }
                    }
                }
            }
        }
    }
}
