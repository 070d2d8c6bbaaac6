import CFlowKernels
import FlowTestSupport
import XCTest

/// The half-precision kernels in every copy this CPU can run: f16 conversions against Swift's
/// Float16 (every bit pattern), `fk_linear_w` with f16 and bf16 panels against float64 on the
/// widened weights, and `fk_attention_kvh` against float64 on the widened cache.
final class HalfPrecisionKernelTests: XCTestCase {
    var rng = SplitMix64(0x16F16)

    override func tearDown() {
        _ = fk_select_instruction_set("auto")
        super.tearDown()
    }

    var instructionSets: [String] { ["avx512bf16", "avx512", "avx2", "baseline"].filter { fk_select_instruction_set($0) == 0 } }

    func testConversionsMatchFloat16() {
        // Every f16 bit pattern widens exactly (NaN stays NaN).
        let all = (0...UInt16.max).map { $0 }
        var wide = [Float](repeating: 0, count: all.count)
        fk_f16_to_f32(all, &wide, all.count)
        for (h, f) in zip(all, wide) {
            let expected = Float(Float16(bitPattern: h))
            if expected.isNaN { XCTAssertTrue(f.isNaN, "f16 \(h)") } else { XCTAssertEqual(f.bitPattern, expected.bitPattern, "f16 \(h)") }
        }
        // Narrowing rounds to nearest even, as Float16(x): ties, subnormals, overflow, NaN.
        var xs: [Float] = [0, -0, 1, -1, 65504, 65519.996, 65520, 1e6, -1e6, .infinity, -.infinity, .nan, 6e-8, 3e-8, 2.98e-8, 1e-10,
                           6.1035156e-05, 6.097555e-05, 1 + 1.0 / 2048, 1 + 3.0 / 2048, 0.1, -0.333]
        xs += rng.floats(5000, -70000...70000) + rng.floats(5000, -1e-4...1e-4)
        // Every copy (16 at a time and a tail), NaN as the one quiet NaN 0x7e00.
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            var narrow = [UInt16](repeating: 0, count: xs.count)
            fk_f32_to_f16(xs, &narrow, xs.count)
            for (x, h) in zip(xs, narrow) {
                if x.isNaN { XCTAssertEqual(h & 0x7fff, 0x7e00, isa); continue }
                XCTAssertEqual(h, Float16(x).bitPattern, "\(isa) \(x)")
            }
        }
    }

    func widen(_ bits: [UInt16], bf16: Bool) -> [Float] {
        bits.map { bf16 ? Float(bitPattern: UInt32($0) << 16) : Float(Float16(bitPattern: $0)) }
    }

    func testLinearWithHalfWeightsInEveryCopy() throws {
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            for bf16 in [false, true] {
                for (rows, k, n) in [(1, 16, 32), (3, 37, 45), (8, 128, 100), (9, 700, 64), (17, 5, 1), (49, 64, 130)] {
                    let x = rng.floats(rows * k, -1...1), b = rng.floats(n, -1...1), r = rng.floats(rows * n, -1...1)
                    let w16: [UInt16] = rng.floats(n * k, -1...1).map { bf16 ? bfloat16(of: $0) : Float16($0).bitPattern }
                    let w = widen(w16, bf16: bf16)
                    var packed = [UInt16](repeating: 0xFFFF, count: fk_packed_size(n, k))
                    fk_pack_weights_16(w16, n, k, &packed)
                    let gelu = n == 100
                    var y = [Float](repeating: .nan, count: rows * n)
                    fk_linear_w(x, packed, bf16 ? Int32(FK_WEIGHTS_BF16) : Int32(FK_WEIGHTS_F16), b, r, &y, rows, k, n, 0, (n + 31) / 32, gelu ? 1 : 0)
                    for i in 0..<rows {
                        for j in 0..<n {
                            var s = Double(b[j])
                            for t in 0..<k { s += Double(x[i * k + t]) * Double(w[j * k + t]) }
                            if gelu { s = 0.5 * s * (1 + erf(s / 2.0.squareRoot())) }
                            s += Double(r[i * n + j])
                            let got = Double(y[i * n + j])
                            if !(abs(got - s) <= 1e-6 * Double(k + 4)) {
                                XCTFail("\(isa) \(bf16 ? "bf16" : "f16") \(rows)×\(k)×\(n): y[\(i),\(j)] = \(got), reference \(s)")
                                return
                            }
                        }
                    }
                    // The f32 kernel on the widened weights gives the same bits: the widening is
                    // exact and the sums run in the same order.
                    var packed32 = [Float](repeating: 0, count: fk_packed_size(n, k))
                    fk_pack_weights(w, n, k, &packed32)
                    var y32 = [Float](repeating: .nan, count: rows * n)
                    fk_linear(x, packed32, b, r, &y32, rows, k, n, 0, (n + 31) / 32, gelu ? 1 : 0)
                    XCTAssertEqual(y.map(\.bitPattern), y32.map(\.bitPattern), "\(isa) \(bf16 ? "bf16" : "f16") \(rows)×\(k)×\(n)")
                }
            }
        }
    }

    /// Weights beyond L2 with several row blocks (a paper-size decode step at batch 16) or
    /// several row chunks (300 rows: a forward pass; chunks are 3/8 of L2): the last row block
    /// of each panel prefetches the next one, and each chunk re-reads the weights. That changes
    /// no bit: the same products as panel-by-panel and row-by-row calls (where nothing is
    /// prefetched or chunked), and within the bound of float64 on sampled outputs.
    func testWeightsBeyondL2GiveTheBitsOfSmallCalls() throws {
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            for (type, rows) in [(FK_WEIGHTS_F32, 19), (FK_WEIGHTS_F16, 19), (FK_WEIGHTS_F32, 300), (FK_WEIGHTS_F16, 300)] {
                let k = 768, n = 720  // f16 1.1 MB, f32 2.2 MB: beyond FK_STREAMED_WEIGHT_BYTES
                let x = rng.floats(rows * k, -1...1), b = rng.floats(n, -1...1)
                let w = rng.floats(n * k, -1...1).map { type == FK_WEIGHTS_F16 ? Float(Float16($0)) : $0 }
                var packed32 = [Float](repeating: 0, count: fk_packed_size(n, k))
                fk_pack_weights(w, n, k, &packed32)
                var packed16 = [UInt16](repeating: 0, count: fk_packed_size(n, k))
                fk_pack_weights_16(w.map { Float16($0).bitPattern }, n, k, &packed16)
                func run(_ y: inout [Float], rows r0: Range<Int>, panels p0: Range<Int>) {
                    let xp = x.withUnsafeBufferPointer { $0.baseAddress! + r0.lowerBound * k }
                    y.withUnsafeMutableBufferPointer { yb in
                        let yp = yb.baseAddress! + r0.lowerBound * n
                        if type == FK_WEIGHTS_F16 {
                            fk_linear_w(xp, packed16, Int32(type), b, nil, yp, r0.count, k, n, p0.lowerBound, p0.count, 1)
                        } else {
                            fk_linear_w(xp, packed32, Int32(type), b, nil, yp, r0.count, k, n, p0.lowerBound, p0.count, 1)
                        }
                    }
                }
                let panels = (n + 31) / 32
                var whole = [Float](repeating: .nan, count: rows * n)
                run(&whole, rows: 0..<rows, panels: 0..<panels)
                var byRow = [Float](repeating: .nan, count: rows * n)
                for r in 0..<rows { run(&byRow, rows: r..<(r + 1), panels: 0..<panels) }
                var byPanel = [Float](repeating: .nan, count: rows * n)
                for p in 0..<panels { run(&byPanel, rows: 0..<rows, panels: p..<(p + 1)) }
                let what = "\(isa) weights \(type == FK_WEIGHTS_F16 ? "f16" : "f32") \(rows)×\(k)×\(n)"
                XCTAssertEqual(whole.map(\.bitPattern), byRow.map(\.bitPattern), what + ": whole vs row by row")
                XCTAssertEqual(whole.map(\.bitPattern), byPanel.map(\.bitPattern), what + ": whole vs panel by panel")
                for i in stride(from: 0, to: rows, by: rows / 4) {
                    for j in stride(from: 0, to: n, by: 37) {
                        var s = Double(b[j])
                        for t in 0..<k { s += Double(x[i * k + t]) * Double(w[j * k + t]) }
                        s = 0.5 * s * (1 + erf(s / 2.0.squareRoot()))
                        XCTAssertEqual(Double(whole[i * n + j]), s, accuracy: 1e-6 * Double(k + 4), what + ": y[\(i),\(j)]")
                    }
                }
            }
        }
    }

    /// Native bf16 dot products (AVX512-BF16 only): x rounded to bf16, products summed in f32;
    /// against float64 on the rounded x and weights, and the same bits under row/panel splits.
    func testNativeBF16DotProducts() throws {
        guard fk_select_instruction_set("avx512bf16") == 0 else { throw XCTSkip("this CPU has no AVX512-BF16") }
        XCTAssertEqual(fk_bf16dot_available(), 1)
        for (rows, k, n) in [(1, 16, 32), (3, 37, 45), (8, 128, 100), (9, 701, 64), (17, 5, 1), (49, 64, 130), (2, 1, 3)] {
            let x = rng.floats(rows * k, -1...1), b = rng.floats(n, -1...1), r = rng.floats(rows * n, -1...1)
            let w16 = rng.floats(n * k, -1...1).map { bfloat16(of: $0) }
            let w = widen(w16, bf16: true), xr = widen(x.map { bfloat16(of: $0) }, bf16: true)
            var packed = [UInt16](repeating: 0xFFFF, count: fk_packed_size_bf16dot(n, k))
            fk_pack_weights_bf16dot(w16, n, k, &packed)
            var scratch = [UInt16](repeating: 0, count: rows * ((k + 1) / 2 * 2))
            let gelu = n == 100
            var y = [Float](repeating: .nan, count: rows * n)
            fk_linear_bf16dot(x, packed, b, r, &y, rows, k, n, 0, (n + 31) / 32, gelu ? 1 : 0, &scratch)
            for i in 0..<rows {
                for j in 0..<n {
                    var s = Double(b[j])
                    for t in 0..<k { s += Double(xr[i * k + t]) * Double(w[j * k + t]) }
                    if gelu { s = 0.5 * s * (1 + erf(s / 2.0.squareRoot())) }
                    s += Double(r[i * n + j])
                    XCTAssertEqual(Double(y[i * n + j]), s, accuracy: 1e-6 * Double(k + 4), "\(rows)×\(k)×\(n) [\(i),\(j)]")
                }
            }
            // Rows and panels asked for in pieces: the same bits.
            let panels = (n + 31) / 32
            var pieces = [Float](repeating: .nan, count: rows * n)
            let cut = rows / 2
            for (r0, r1) in [(0, cut), (cut, rows)] where r1 > r0 {
                for (p0, p1) in [(0, panels / 2), (panels / 2, panels)] where p1 > p0 {
                    x.withUnsafeBufferPointer { xp in
                        r.withUnsafeBufferPointer { rp in
                            pieces.withUnsafeMutableBufferPointer { yp in
                                fk_linear_bf16dot(xp.baseAddress! + r0 * k, packed, b, rp.baseAddress! + r0 * n, yp.baseAddress! + r0 * n,
                                                  r1 - r0, k, n, p0, p1 - p0, gelu ? 1 : 0, &scratch)
                            }
                        }
                    }
                }
            }
            XCTAssertEqual(pieces.map(\.bitPattern), y.map(\.bitPattern), "\(rows)×\(k)×\(n)")
        }
        XCTAssertEqual(fk_select_instruction_set("avx512"), 0)
        XCTAssertEqual(fk_bf16dot_available(), 0, "only the AVX512-BF16 copy has native bf16 dot products")
    }

    /// bf16 weights on AMX tiles (AMX-BF16 only): x rounded to bf16, products summed in f32;
    /// against float64 on the rounded x and weights (tails of rows, k and columns included),
    /// the same bits under row and panel splits, and off in every other kernel copy.
    func testBF16OnAMXTiles() throws {
        guard fk_select_instruction_set("avx512bf16") == 0, fk_bf16amx_available() == 1 else {
            throw XCTSkip("this CPU (or OS) has no AMX-BF16")
        }
        for (rows, k, n) in [(1, 16, 32), (3, 37, 45), (16, 64, 64), (17, 96, 100), (33, 701, 64), (49, 64, 130), (2, 1, 3), (70, 200, 96)] {
            let x = rng.floats(rows * k, -1...1), b = rng.floats(n, -1...1), r = rng.floats(rows * n, -1...1)
            let w16 = rng.floats(n * k, -1...1).map { bfloat16(of: $0) }
            let w = widen(w16, bf16: true), xr = widen(x.map { bfloat16(of: $0) }, bf16: true)
            var packed = [UInt16](repeating: 0xFFFF, count: fk_packed_size_amx(n, k))
            fk_pack_weights_amx(w16, n, k, &packed)
            // Scratch left with NaN bits: the kernel must write (or zero) all it reads.
            var scratch = [UInt16](repeating: 0x7FC0, count: fk_bf16amx_scratch(rows, k))
            let gelu = n == 100
            var y = [Float](repeating: .nan, count: rows * n)
            fk_linear_bf16amx(x, packed, b, r, &y, rows, k, n, 0, (n + 31) / 32, gelu ? 1 : 0, &scratch)
            var worst = 0.0
            for i in 0..<rows {
                for j in 0..<n {
                    var s = Double(b[j])
                    for t in 0..<k { s += Double(xr[i * k + t]) * Double(w[j * k + t]) }
                    if gelu { s = 0.5 * s * (1 + erf(s / 2.0.squareRoot())) }
                    s += Double(r[i * n + j])
                    let e = abs(Double(y[i * n + j]) - s)
                    worst = e.isNaN ? .infinity : Swift.max(worst, e)
                }
            }
            XCTAssertLessThanOrEqual(worst, 1e-6 * Double(k + 4), "\(rows)×\(k)×\(n)")
            let panels = (n + 31) / 32
            var pieces = [Float](repeating: .nan, count: rows * n)
            let cut = rows / 2
            for (r0, r1) in [(0, cut), (cut, rows)] where r1 > r0 {
                for (p0, p1) in [(0, panels / 2), (panels / 2, panels)] where p1 > p0 {
                    x.withUnsafeBufferPointer { xp in
                        r.withUnsafeBufferPointer { rp in
                            pieces.withUnsafeMutableBufferPointer { yp in
                                fk_linear_bf16amx(xp.baseAddress! + r0 * k, packed, b, rp.baseAddress! + r0 * n, yp.baseAddress! + r0 * n,
                                                  r1 - r0, k, n, p0, p1 - p0, gelu ? 1 : 0, &scratch)
                            }
                        }
                    }
                }
            }
            XCTAssertEqual(pieces.map(\.bitPattern), y.map(\.bitPattern), "\(rows)×\(k)×\(n)")
        }
        XCTAssertEqual(fk_select_instruction_set("avx512"), 0)
        XCTAssertEqual(fk_bf16amx_available(), 0, "only the AVX512-BF16 copy runs AMX tiles")
    }

    /// Attention on AMX tiles (bf16 models): see checkBF16Attention; fk_attention where the head
    /// width does not fit the tiles.
    func testAttentionOnAMXTiles() throws {
        guard fk_select_instruction_set("avx512bf16") == 0, fk_bf16amx_available() == 1 else {
            throw XCTSkip("this CPU (or OS) has no AMX-BF16")
        }
        defer { _ = fk_select_instruction_set("auto") }
        checkBF16Attention(widths: [64, 32, 128, 96], supported: fk_attention_bf16amx_supported,
                           scratch: fk_attention_bf16amx_scratch, run: fk_attention_bf16amx)
        // A head width the tiles do not take: exactly fk_attention.
        XCTAssertEqual(fk_attention_bf16amx_supported(48), 0)
        checkFallback(d: 48, scratch: fk_attention_bf16amx_scratch, run: fk_attention_bf16amx)
    }

    /// Attention on AVX512-BF16 dot products (bf16 models without AMX): see checkBF16Attention,
    /// for head widths that are not multiples of 16 or even odd; fk_attention in copies without
    /// native bf16.
    func testAttentionOnBF16DotProducts() throws {
        guard fk_select_instruction_set("avx512bf16") == 0, fk_bf16dot_available() == 1 else {
            throw XCTSkip("this CPU has no AVX512-BF16")
        }
        defer { _ = fk_select_instruction_set("auto") }
        checkBF16Attention(widths: [64, 32, 128, 96, 20, 48, 7], supported: fk_attention_bf16dot_supported,
                           scratch: fk_attention_bf16dot_scratch, run: fk_attention_bf16dot)
        XCTAssertEqual(fk_select_instruction_set("avx512"), 0)
        XCTAssertEqual(fk_attention_bf16dot_supported(64), 0, "only the AVX512-BF16 copy has native bf16 dot products")
        checkFallback(d: 64, scratch: fk_attention_bf16dot_scratch, run: fk_attention_bf16dot)
    }

    typealias AttentionKernel = (UnsafePointer<Float>?, Int, UnsafePointer<Float>?, Int, UnsafePointer<Float>?, Int,
                                 UnsafeMutablePointer<Float>?, Int, Int, Int, Int, Float, Int32, Int, Int, Int,
                                 UnsafeMutablePointer<Float>?) -> Void

    /// A bf16 attention kernel against float64 on bf16-rounded q, k, v (the probabilities' bf16
    /// rounding bounds the error by about 2⁻⁹ · max|v|), NaN for rows without keys, and the same
    /// bits for any split of the rows; cases cycle through `widths`.
    func checkBF16Attention(widths: [Int], supported: (Int) -> Int32, scratch size: (Int, Int) -> Int, run: AttentionKernel,
                            file: StaticString = #filePath, line: UInt = #line) {
        let shapes: [(Int, Int, Bool, Int)] = [(16, 16, true, 16), (37, 50, true, 50), (20, 45, false, 30), (5, 3, true, 3),
                                               (16, 130, false, 130), (64, 200, true, 200), (17, 17, true, 17), (16, 20, false, 0),
                                               (70, 70, true, 70)]
        func round(_ x: Float) -> Double { Double(Float(bitPattern: UInt32(bfloat16(of: x)) << 16)) }
        for (index, (m, n, causal, limit)) in shapes.enumerated() {
            let d = widths[index % widths.count]
            let (qr, kr, vr, orow) = (d + 3, d + 1, d + 2, d + 5)
            let q = rng.floats(m * qr, -1...1), k = rng.floats(n * kr, -1...1), v = rng.floats(n * vr, -1...1)
            let scale = 1 / Float(d).squareRoot()
            XCTAssertEqual(supported(d), 1, file: file, line: line)
            var scratch = [Float](repeating: .nan, count: size(n, d))
            var y = [Float](repeating: .nan, count: m * orow), pieces = y
            run(q, qr, k, kr, v, vr, &y, orow, m, n, d, scale, causal ? 1 : 0, limit, 0, m, &scratch)
            for r0 in stride(from: 0, to: m, by: 7) {
                pieces.withUnsafeMutableBufferPointer {
                    run(q, qr, k, kr, v, vr, $0.baseAddress!, orow, m, n, d, scale, causal ? 1 : 0, limit, r0, Swift.min(7, m - r0), &scratch)
                }
            }
            let name = "m \(m) n \(n) d \(d) causal \(causal) limit \(limit)"
            var worst = 0.0
            for i in 0..<m {
                let valid = Swift.min(n, causal ? i + 1 + n - m : limit)
                let row = (0..<d).map { y[i * orow + $0] }
                XCTAssertEqual(row.map(\.bitPattern), (0..<d).map { pieces[i * orow + $0].bitPattern }, "\(name): row \(i) split",
                               file: file, line: line)
                if valid <= 0 {
                    XCTAssertTrue(row.allSatisfy(\.isNaN), "\(name): row \(i) has no key", file: file, line: line)
                    continue
                }
                var sc = (0..<valid).map { j in (0..<d).reduce(0.0) { $0 + round(q[i * qr + $1]) * round(k[j * kr + $1]) } * Double(scale) }
                let mx = sc.max()!
                sc = sc.map { exp($0 - mx) }
                let z = sc.reduce(0, +)
                for c in 0..<d {
                    let want = (0..<valid).reduce(0.0) { $0 + sc[$1] / z * round(v[$1 * vr + c]) }
                    let e = abs(Double(row[c]) - want)
                    worst = e.isNaN ? .infinity : Swift.max(worst, e)
                }
            }
            XCTAssertLessThanOrEqual(worst, 4e-3, name, file: file, line: line)
        }
    }

    /// Where a bf16 kernel does not run in bf16, it gives fk_attention's bits.
    func checkFallback(d: Int, scratch size: (Int, Int) -> Int, run: AttentionKernel, file: StaticString = #filePath, line: UInt = #line) {
        let (m, n) = (20, 33)
        let q = rng.floats(m * d, -1...1), k = rng.floats(n * d, -1...1), v = rng.floats(n * d, -1...1)
        var scratch = [Float](repeating: .nan, count: size(n, d))
        var a = [Float](repeating: .nan, count: m * d), b = a
        run(q, d, k, d, v, d, &a, d, m, n, d, 0.2, 1, n, 0, m, &scratch)
        fk_attention(q, d, k, d, v, d, &b, d, m, n, d, 0.2, 1, n, 0, m, &scratch)
        XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), file: file, line: line)
    }

    func bfloat16(of x: Float) -> UInt16 {
        let b = x.bitPattern
        return UInt16((b &+ 0x7fff &+ ((b >> 16) & 1)) >> 16)
    }

    func testAttentionOverHalfCacheInEveryCopy() throws {
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            for (m, n, d) in [(1, 5, 16), (1, 300, 64), (3, 7, 20), (4, 9, 72), (2, 40, 8)] {
                for (causal, limit) in [(true, n), (false, n), (false, 3), (false, 0)] {
                    let (qr, kr, vr, orow) = (d + 3, d + 1, d + 2, d + 5)
                    let q = rng.floats(m * qr, -1...1)
                    let k16 = rng.floats(n * kr, -1...1).map { Float16($0).bitPattern }, v16 = rng.floats(n * vr, -1...1).map { Float16($0).bitPattern }
                    let k = widen(k16, bf16: false), v = widen(v16, bf16: false)
                    var out = [Float](repeating: 7, count: m * orow)
                    var scratch = [Float](repeating: .nan, count: fk_attention_scratch(n, d))
                    fk_attention_kvh(q, qr, k16, kr, v16, vr, &out, orow, m, n, d, 0.3, causal ? 1 : 0, limit, 0, m, &scratch)
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

    func testSumReadsEveryElement() {
        for isa in instructionSets {
            XCTAssertEqual(fk_select_instruction_set(isa), 0)
            for n in [0, 1, 127, 128, 129, 1000, 4096 + 17] {
                let x = (0..<n).map { Float($0 % 7) }
                let expected = x.reduce(0, +)
                XCTAssertEqual(fk_sum(x, n), expected, "\(isa) n \(n)")
            }
        }
    }
}
