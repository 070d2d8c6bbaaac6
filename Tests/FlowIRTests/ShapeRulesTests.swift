import FlowIR
import XCTest

/// The shape rule of every op (`Op.resultType`, Spec/IR.md §4): result types, and the rule a
/// refusal cites (W4 arity, W9 dtypes, W5 everything else).
final class ShapeRulesTests: XCTestCase {
    static let B = Dim.batch
    static let C = Dim.symbol("C")

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }
    func i64(_ s: [Dim]) -> TensorType { TensorType(.int64, s) }

    func assertType(_ op: Op, _ inputs: [TensorType], _ expected: TensorType, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let t = try op.resultType(inputs)
            XCTAssertEqual(t, expected, "\(op.name)\(inputs)", file: file, line: line)
        } catch {
            XCTFail("\(op.name)\(inputs) refused: \(error)", file: file, line: line)
        }
    }

    func assertRefused(_ op: Op, _ inputs: [TensorType], rule: String, says fragment: String? = nil,
                       file: StaticString = #filePath, line: UInt = #line) {
        do {
            let t = try op.resultType(inputs)
            XCTFail("\(op.name)\(inputs) gave \(t), expected a \(rule) error", file: file, line: line)
        } catch {
            XCTAssertEqual(error.rule, rule, "\(error)", file: file, line: line)
            if let fragment { XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' does not say '\(fragment)'", file: file, line: line) }
        }
    }

    // MARK: - Sources

    func testConstantTypeComesFromTheTable() {
        assertRefused(.constant(tensor: "w"), [], rule: "W5", says: "tensor table")
    }

    func testFull() {
        let B = Self.B
        assertType(.full(value: 0, shape: [B, 3]), [], f32([B, 3]))
        assertType(.full(value: 1, shape: []), [], f32([]))
        assertType(.full(value: 1, shape: [0, 2]), [], f32([0, 2]))
        assertRefused(.full(value: 0, shape: [-1]), [], rule: "W5", says: "negative size -1")
        assertRefused(.full(value: 0, shape: [2]), [f32([2])], rule: "W4", says: "full takes 0 inputs, has 1")
    }

    // MARK: - Elementwise

    func testBinaryBroadcasting() {
        let B = Self.B, C = Self.C
        for op in [Op.add, .sub, .mul, .div] {
            assertType(op, [f32([B, 4]), f32([B, 4])], f32([B, 4]))
            assertType(op, [f32([B, 1, 4]), f32([3, 1])], f32([B, 3, 4]))
            assertType(op, [f32([3, 1]), f32([B, 1, 4])], f32([B, 3, 4]))
            assertType(op, [f32([B]), f32([1])], f32([B]))
            assertType(op, [f32([1, 1]), f32([B])], f32([1, B]))
            assertType(op, [f32([]), f32([2, 3])], f32([2, 3]))
            assertType(op, [f32([1]), f32([])], f32([1]))
            assertType(op, [f32([0, 4]), f32([1, 4])], f32([0, 4]))
            // A symbol equals only itself: not another symbol, not a fixed size other than 1.
            assertRefused(op, [f32([B, 4]), f32([C, 4])], rule: "W5", says: "cannot broadcast")
            assertRefused(op, [f32([B]), f32([3])], rule: "W5", says: "cannot broadcast")
            assertRefused(op, [f32([2, 4]), f32([3, 4])], rule: "W5", says: "cannot broadcast")
            assertRefused(op, [f32([0]), f32([2])], rule: "W5")
            assertRefused(op, [i64([4]), f32([4])], rule: "W9", says: "lhs must be f32, is i64")
            assertRefused(op, [f32([4]), i64([4])], rule: "W9", says: "rhs must be f32, is i64")
            assertRefused(op, [f32([4])], rule: "W4", says: "takes 2 inputs, has 1")
            assertRefused(op, [f32([4]), f32([4]), f32([4])], rule: "W4")
        }
    }

    func testUnary() {
        let B = Self.B
        for op in [Op.neg, .exp, .gelu, .sqrt, .log, .erf, .scale(0.5)] {
            assertType(op, [f32([B, 3, 8])], f32([B, 3, 8]))
            assertType(op, [f32([])], f32([]))
            assertRefused(op, [i64([3])], rule: "W9", says: "input must be f32, is i64")
            assertRefused(op, [], rule: "W4")
            assertRefused(op, [f32([3]), f32([3])], rule: "W4")
        }
    }

    // MARK: - Linear algebra

    func testMatmulTransposes() {
        let B = Self.B
        // op(a) = [M=2, K=3], op(b) = [K=3, N=4] in all four layouts.
        assertType(.matmul(transposeA: false, transposeB: false), [f32([2, 3]), f32([3, 4])], f32([2, 4]))
        assertType(.matmul(transposeA: true, transposeB: false), [f32([3, 2]), f32([3, 4])], f32([2, 4]))
        assertType(.matmul(transposeA: false, transposeB: true), [f32([2, 3]), f32([4, 3])], f32([2, 4]))
        assertType(.matmul(transposeA: true, transposeB: true), [f32([3, 2]), f32([4, 3])], f32([2, 4]))
        // Symbolic contracted and free dims.
        assertType(.matmul(transposeA: false, transposeB: true), [f32([B, 5, 8]), f32([B, 7, 8])], f32([B, 5, 7]))
        assertType(.matmul(transposeA: true, transposeB: false), [f32([B, 3]), f32([B, 4])], f32([3, 4]))
        // K mismatch, in each layout.
        assertRefused(.matmul(transposeA: false, transposeB: false), [f32([2, 3]), f32([4, 3])], rule: "W5", says: "contracted sizes differ: 3 vs 4")
        assertRefused(.matmul(transposeA: true, transposeB: false), [f32([2, 3]), f32([3, 4])], rule: "W5", says: "contracted sizes differ: 2 vs 3")
        assertRefused(.matmul(transposeA: false, transposeB: true), [f32([2, 3]), f32([3, 4])], rule: "W5", says: "contracted sizes differ: 3 vs 4")
        assertRefused(.matmul(transposeA: false, transposeB: false), [f32([B, 2, 3]), f32([B, 2, 4])], rule: "W5")
        assertRefused(.matmul(transposeA: false, transposeB: false), [f32([3]), f32([3, 4])], rule: "W5", says: "rank >= 2")
        assertRefused(.matmul(transposeA: false, transposeB: false), [i64([2, 3]), f32([3, 4])], rule: "W9")
    }

    func testMatmulBatchBroadcast() {
        let B = Self.B, C = Self.C
        let mm = Op.matmul(transposeA: false, transposeB: false)
        assertType(mm, [f32([B, 8, 2, 3]), f32([3, 4])], f32([B, 8, 2, 4]))
        assertType(mm, [f32([2, 3]), f32([B, 8, 3, 4])], f32([B, 8, 2, 4]))
        assertType(mm, [f32([2, 1, 2, 3]), f32([5, 3, 4])], f32([2, 5, 2, 4]))
        assertType(mm, [f32([B, 1, 2, 3]), f32([1, 6, 3, 4])], f32([B, 6, 2, 4]))
        assertRefused(mm, [f32([B, 2, 3]), f32([C, 3, 4])], rule: "W5", says: "cannot broadcast")
        assertRefused(mm, [f32([2, 2, 3]), f32([5, 3, 4])], rule: "W5", says: "cannot broadcast")
    }

    func testLinear() {
        let B = Self.B
        assertType(.linear, [f32([B, 16, 8]), f32([32, 8])], f32([B, 16, 32]))
        assertType(.linear, [f32([B, 16, 8]), f32([32, 8]), f32([32])], f32([B, 16, 32]))
        assertType(.linear, [f32([8]), f32([3, 8])], f32([3]))
        assertRefused(.linear, [f32([B, 8]), f32([32, 7])], rule: "W5", says: "x has 8 features, W expects 7")
        assertRefused(.linear, [f32([B, 8]), f32([32, 8]), f32([8])], rule: "W5", says: "bias must be [32]")
        assertRefused(.linear, [f32([B, 8]), f32([32, 8]), f32([1, 32])], rule: "W5")
        assertRefused(.linear, [f32([B, 8]), f32([2, 32, 8])], rule: "W5")
        assertRefused(.linear, [f32([]), f32([2, 8])], rule: "W5")
        assertRefused(.linear, [f32([B, 8]), i64([32, 8])], rule: "W9", says: "weight must be f32")
        assertRefused(.linear, [f32([B, 8]), f32([32, 8]), i64([32])], rule: "W9", says: "bias must be f32")
        assertRefused(.linear, [f32([B, 8])], rule: "W4", says: "linear takes 2+ inputs, has 1")
        assertRefused(.linear, [f32([B, 8]), f32([32, 8]), f32([32]), f32([32])], rule: "W4")
    }

    // MARK: - Normalization and attention pieces

    func testLayerNorm() {
        let B = Self.B
        assertType(.layerNorm(eps: 1e-5), [f32([B, 16, 8]), f32([8]), f32([8])], f32([B, 16, 8]))
        assertRefused(.layerNorm(eps: 1e-5), [f32([B, 8]), f32([4]), f32([8])], rule: "W5", says: "weight and bias must be [8]")
        assertRefused(.layerNorm(eps: 1e-5), [f32([B, 8]), f32([8]), f32([1, 8])], rule: "W5")
        assertRefused(.layerNorm(eps: 0), [f32([B, 8]), f32([8]), f32([8])], rule: "W5", says: "eps must be positive")
        assertRefused(.layerNorm(eps: -1), [f32([B, 8]), f32([8]), f32([8])], rule: "W5")
        assertRefused(.layerNorm(eps: .infinity), [f32([B, 8]), f32([8]), f32([8])], rule: "W5")
        assertRefused(.layerNorm(eps: .nan), [f32([B, 8]), f32([8]), f32([8])], rule: "W5")
        assertRefused(.layerNorm(eps: 1e-5), [f32([]), f32([]), f32([])], rule: "W5", says: "rank >= 1")
        assertRefused(.layerNorm(eps: 1e-5), [f32([B, 8]), i64([8]), f32([8])], rule: "W9")
        assertRefused(.layerNorm(eps: 1e-5), [f32([B, 8]), f32([8])], rule: "W4")
    }

    func testSoftmax() {
        let B = Self.B
        assertType(.softmax(axis: 3), [f32([B, 4, 16, 16])], f32([B, 4, 16, 16]))
        assertType(.softmax(axis: 0), [f32([B, 4])], f32([B, 4]))
        assertRefused(.softmax(axis: -1), [f32([B, 4])], rule: "W5", says: "axis -1 out of range for rank 2")
        assertRefused(.softmax(axis: 2), [f32([B, 4])], rule: "W5", says: "axis 2 out of range for rank 2")
        assertRefused(.softmax(axis: 0), [f32([])], rule: "W5")
        assertRefused(.softmax(axis: 0), [i64([3])], rule: "W9")
    }

    func testCausalMask() {
        let B = Self.B
        assertType(.causalMask(value: -.infinity), [f32([B, 4, 16, 16])], f32([B, 4, 16, 16]))
        assertType(.causalMask(value: 0), [f32([3, 5])], f32([3, 5]))
        assertRefused(.causalMask(value: 0), [f32([5, 3])], rule: "W5", says: "needs M <= N, has [5, 3]")
        assertRefused(.causalMask(value: 0), [f32([4, B])], rule: "W5", says: "must have a fixed size")
        assertRefused(.causalMask(value: 0), [f32([B, 4])], rule: "W5", says: "must have a fixed size")
        assertRefused(.causalMask(value: 0), [f32([4])], rule: "W5", says: "rank >= 2")
        assertRefused(.causalMask(value: 0), [i64([4, 4])], rule: "W9")
    }

    func testMaskAfter() {
        let B = Self.B
        assertType(.maskAfter(value: -.infinity), [f32([B, 4, 1, 16]), i64([1])], f32([B, 4, 1, 16]))
        assertType(.maskAfter(value: 0), [f32([B]), i64([1])], f32([B]))
        assertRefused(.maskAfter(value: 0), [f32([B, 16]), i64([2])], rule: "W9", says: "mask_after: position must be i64[1], is i64[2]")
        assertRefused(.maskAfter(value: 0), [f32([B, 16]), i64([])], rule: "W9")
        assertRefused(.maskAfter(value: 0), [f32([B, 16]), f32([1])], rule: "W9")
        assertRefused(.maskAfter(value: 0), [f32([]), i64([1])], rule: "W5", says: "rank >= 1")
        assertRefused(.maskAfter(value: 0), [f32([B, 16])], rule: "W4")
    }

    // MARK: - Layout

    func testReshape() {
        let B = Self.B, C = Self.C
        assertType(.reshape(shape: [B, 12]), [f32([B, 3, 4])], f32([B, 12]))
        assertType(.reshape(shape: [B, 3, 4]), [f32([B, 12])], f32([B, 3, 4]))
        // Symbols may move; the multiset of symbols must be equal.
        assertType(.reshape(shape: [12, B]), [f32([B, 3, 4])], f32([12, B]))
        assertType(.reshape(shape: [C, 2, B]), [f32([B, C, 2])], f32([C, 2, B]))
        // Any dtype; the dtype is kept.
        assertType(.reshape(shape: [6]), [i64([2, 3])], i64([6]))
        assertType(.reshape(shape: []), [f32([1, 1])], f32([]))
        assertType(.reshape(shape: [0, 5]), [f32([5, 0])], f32([0, 5]))
        assertRefused(.reshape(shape: [12]), [f32([B, 3, 4])], rule: "W5", says: "cannot reshape f32[B,3,4] to [12]")
        assertRefused(.reshape(shape: [C, 12]), [f32([B, 3, 4])], rule: "W5")
        assertRefused(.reshape(shape: [B, B, 12]), [f32([B, 3, 4])], rule: "W5")
        assertRefused(.reshape(shape: [5, 5]), [f32([4, 6])], rule: "W5")
        assertRefused(.reshape(shape: [-1, 12]), [f32([B, 12])], rule: "W5", says: "negative size -1")
        // Fixed products that overflow are refused, not wrapped.
        let big = Dim.fixed(1 << 40)
        assertRefused(.reshape(shape: [big, big]), [f32([big, big])], rule: "W5")
        assertRefused(.reshape(shape: [12]), [f32([12]), f32([12])], rule: "W4")
    }

    func testTranspose() {
        let B = Self.B
        assertType(.transpose(perm: [2, 0, 1]), [f32([B, 2, 3])], f32([3, B, 2]))
        assertType(.transpose(perm: [0, 2, 1, 3]), [f32([B, 16, 4, 64])], f32([B, 4, 16, 64]))
        assertType(.transpose(perm: []), [f32([])], f32([]))
        assertRefused(.transpose(perm: [0, 0, 1]), [f32([B, 2, 3])], rule: "W5", says: "is not a permutation of 0..<3")
        assertRefused(.transpose(perm: [0, 1]), [f32([B, 2, 3])], rule: "W5")
        assertRefused(.transpose(perm: [0, 1, 3]), [f32([B, 2, 3])], rule: "W5")
        assertRefused(.transpose(perm: [1, 0]), [i64([2, 3])], rule: "W9")
    }

    func testSlice() {
        let B = Self.B
        assertType(.slice(axis: 1, start: 2, end: 5), [f32([B, 8])], f32([B, 3]))
        assertType(.slice(axis: 1, start: 0, end: 8), [f32([B, 8])], f32([B, 8]))
        assertType(.slice(axis: 1, start: 4, end: 4), [f32([B, 8])], f32([B, 0]))
        assertRefused(.slice(axis: 1, start: 0, end: 9), [f32([B, 8])], rule: "W5", says: "range 0..<9 outside 0..<8")
        assertRefused(.slice(axis: 1, start: 5, end: 4), [f32([B, 8])], rule: "W5")
        assertRefused(.slice(axis: 1, start: -1, end: 4), [f32([B, 8])], rule: "W5")
        assertRefused(.slice(axis: 0, start: 0, end: 1), [f32([B, 8])], rule: "W5", says: "axis 0 must have a fixed size, is B")
        assertRefused(.slice(axis: 2, start: 0, end: 1), [f32([B, 8])], rule: "W5", says: "out of range")
        assertRefused(.slice(axis: 0, start: 0, end: 1), [i64([8])], rule: "W9")
    }

    func testConcat() {
        let B = Self.B
        assertType(.concat(axis: 1), [f32([B, 2, 4]), f32([B, 3, 4]), f32([B, 1, 4])], f32([B, 6, 4]))
        assertType(.concat(axis: 0), [f32([2])], f32([2]))
        assertRefused(.concat(axis: 1), [f32([B, 2, 4]), f32([B, 3, 5])], rule: "W5", says: "operands differ on axis 2: 5 vs 4")
        assertRefused(.concat(axis: 1), [f32([B, 2, 4]), f32([.symbol("C"), 3, 4])], rule: "W5")
        assertRefused(.concat(axis: 1), [f32([B, 2, 4]), f32([B, 2])], rule: "W5", says: "differ in dtype or rank")
        assertRefused(.concat(axis: 0), [f32([B, 2]), f32([B, 2])], rule: "W5", says: "must have a fixed size")
        assertRefused(.concat(axis: 3), [f32([B, 2, 4])], rule: "W5", says: "out of range")
        assertRefused(.concat(axis: 0), [f32([2]), i64([2])], rule: "W9")
        assertRefused(.concat(axis: 0), [], rule: "W4")
    }

    func testFlip() {
        let B = Self.B
        assertType(.flip(axis: 1), [f32([B, 8])], f32([B, 8]))
        // The flipped axis may be a symbol.
        assertType(.flip(axis: 0), [f32([B, 8])], f32([B, 8]))
        assertRefused(.flip(axis: 2), [f32([B, 8])], rule: "W5", says: "axis 2 out of range for rank 2")
        assertRefused(.flip(axis: -1), [f32([B, 8])], rule: "W5")
        assertRefused(.flip(axis: 0), [i64([8])], rule: "W9")
    }

    func testPad() {
        let B = Self.B
        assertType(.pad(axis: 1, before: 1, after: 2), [f32([B, 4])], f32([B, 7]))
        assertType(.pad(axis: 0, before: 0, after: 0), [f32([3])], f32([3]))
        assertRefused(.pad(axis: 1, before: -1, after: 2), [f32([B, 4])], rule: "W5", says: "negative padding")
        assertRefused(.pad(axis: 1, before: 1, after: -2), [f32([B, 4])], rule: "W5")
        assertRefused(.pad(axis: 0, before: 1, after: 1), [f32([B, 4])], rule: "W5", says: "must have a fixed size")
        assertRefused(.pad(axis: 2, before: 1, after: 1), [f32([B, 4])], rule: "W5")
        assertRefused(.pad(axis: 0, before: 1, after: 1), [i64([4])], rule: "W9")
    }

    func testGather() {
        let B = Self.B
        assertType(.gather, [f32([10, 4]), i64([B])], f32([B, 4]))
        assertType(.gather, [f32([10, 4]), i64([B, 3])], f32([B, 3, 4]))
        assertType(.gather, [f32([10, 4]), i64([])], f32([4]))
        assertType(.gather, [f32([10]), i64([B])], f32([B]))
        assertType(.gather, [f32([10, B]), i64([2])], f32([2, B]))
        assertRefused(.gather, [f32([10, 4]), f32([B])], rule: "W9", says: "gather: indices must be i64, are f32")
        assertRefused(.gather, [i64([10, 4]), i64([B])], rule: "W9", says: "table must be f32")
        assertRefused(.gather, [f32([B, 4]), i64([3])], rule: "W5", says: "axis 0 must have a fixed size")
        assertRefused(.gather, [f32([]), i64([3])], rule: "W5", says: "rank >= 1")
        assertRefused(.gather, [f32([10, 4])], rule: "W4")
    }

    func testWriteSlice() {
        let B = Self.B
        let pos = i64([1])
        assertType(.writeSlice(axis: 2), [f32([B, 4, 16, 64]), f32([B, 4, 1, 64]), pos], f32([B, 4, 16, 64]))
        assertType(.writeSlice(axis: 0), [f32([8, 2]), f32([8, 2]), pos], f32([8, 2]))
        assertType(.writeSlice(axis: 0), [f32([8]), f32([0]), pos], f32([8]))
        assertRefused(.writeSlice(axis: 2), [f32([B, 4, 16, 64]), f32([B, 4, 1, 64]), i64([])], rule: "W9",
                      says: "write_slice: position must be i64[1], is i64[]")
        assertRefused(.writeSlice(axis: 2), [f32([B, 4, 16, 64]), f32([B, 4, 1, 64]), f32([1])], rule: "W9")
        assertRefused(.writeSlice(axis: 1), [f32([B, 4]), i64([B, 1]), pos], rule: "W9", says: "update must be f32")
        assertRefused(.writeSlice(axis: 1), [f32([B, 4]), f32([B, 5]), pos], rule: "W5", says: "update is longer (5) than the state (4) on axis 1")
        assertRefused(.writeSlice(axis: 1), [f32([B, 4]), f32([2, 1]), pos], rule: "W5", says: "state and update differ on axis 0: B vs 2")
        assertRefused(.writeSlice(axis: 1), [f32([B, 4]), f32([1]), pos], rule: "W5", says: "differ in rank")
        assertRefused(.writeSlice(axis: 0), [f32([B, 4]), f32([1, 4]), pos], rule: "W5", says: "must have a fixed size")
        assertRefused(.writeSlice(axis: 2), [f32([B, 4]), f32([B, 1]), pos], rule: "W5", says: "out of range")
        assertRefused(.writeSlice(axis: 1), [f32([B, 4]), f32([B, 1])], rule: "W4")
    }

    // MARK: - Reductions

    func testReductions() {
        let B = Self.B
        for keep in [false, true] {
            let makers: [([Int], Bool) -> Op] = [{ .reduceSum(axes: $0, keepDims: $1) }, { .reduceMean(axes: $0, keepDims: $1) }]
            for make in makers {
                let x = f32([B, 3, 4])
                assertType(make([1, 2], keep), [x], keep ? f32([B, 1, 1]) : f32([B]))
                assertType(make([0], keep), [x], keep ? f32([1, 3, 4]) : f32([3, 4]))
                assertType(make([0, 2], keep), [x], keep ? f32([1, 3, 1]) : f32([3]))
                assertType(make([0, 1, 2], keep), [x], keep ? f32([1, 1, 1]) : f32([]))
                assertRefused(make([], keep), [x], rule: "W5", says: "must be non-empty, sorted and unique")
                assertRefused(make([2, 1], keep), [x], rule: "W5", says: "must be non-empty, sorted and unique")
                assertRefused(make([1, 1], keep), [x], rule: "W5")
                assertRefused(make([3], keep), [x], rule: "W5", says: "axis 3 out of range for rank 3")
                assertRefused(make([-1], keep), [x], rule: "W5")
                assertRefused(make([0], keep), [i64([3])], rule: "W9")
            }
        }
    }

    /// Every op's arity, as the verifier (W4) and the shape rules read it.
    func testArities() {
        XCTAssertEqual(Op.constant(tensor: "t").arity, 0...0)
        XCTAssertEqual(Op.full(value: 0, shape: []).arity, 0...0)
        XCTAssertEqual(Op.linear.arity, 2...3)
        XCTAssertEqual(Op.layerNorm(eps: 1).arity, 3...3)
        XCTAssertEqual(Op.writeSlice(axis: 0).arity, 3...3)
        XCTAssertEqual(Op.maskAfter(value: 0).arity, 2...2)
        XCTAssertEqual(Op.gather.arity, 2...2)
        XCTAssertEqual(Op.concat(axis: 0).arity.lowerBound, 1)
        XCTAssertTrue(Op.concat(axis: 0).arity.contains(100))
    }
}
