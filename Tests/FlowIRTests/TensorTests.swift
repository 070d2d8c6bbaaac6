import FlowIR
import XCTest

/// The one host `Tensor`: every storage kind with its dtype, count and conversions, the checked
/// integer view of label files, the one checked element count, and the host-only dtypes that
/// neither a model file (F5) nor a graph (W9) may hold.
final class TensorTests: XCTestCase {
    /// The unchecked integer view never traps: NaN is 0, beyond Int64 saturates.
    func testInt64sOfNonIntegersDoesNotTrap() {
        XCTAssertEqual(Tensor(shape: [5], doubles: [.nan, .infinity, -.infinity, 1e300, -2.7]).int64s, [0, .max, .min, .max, -2])
        XCTAssertEqual(Tensor(shape: [3], floats: [.nan, 1e30, 2.9]).int64s, [0, .max, 2])
    }

    func testEveryStorageKind() {
        let cases: [(Tensor, DType, [Float])] = [
            (Tensor(shape: [2], floats: [1.5, -2]), .float32, [1.5, -2]),
            (Tensor(shape: [2], storage: .float16([0x3C00, 0xC000])), .float16, [1, -2]),
            (Tensor(shape: [2], storage: .bfloat16([0x3F80, 0xC040])), .bfloat16, [1, -3]),
            (Tensor(shape: [1, 2], doubles: [0.25, 3]), .float64, [0.25, 3]),
            (Tensor(shape: [2], bytes: [7, 255]), .uint8, [7, 255]),
            (Tensor(shape: [2, 1], int32s: [-3, 4]), .int32, [-3, 4]),
            (Tensor(shape: [2], int64s: [5, -1]), .int64, [5, -1]),
        ]
        XCTAssertEqual(Set(cases.map(\.1)), Set(DType.allCases))
        for (t, dtype, values) in cases {
            XCTAssertEqual(t.dtype, dtype)
            XCTAssertEqual(t.count, 2, "\(dtype)")
            XCTAssertEqual(t.byteCount, 2 * dtype.byteSize, "\(dtype)")
            XCTAssertEqual(t.floats, values, "\(dtype)")
            XCTAssertEqual(t.asDoubles(), values.map(Double.init), "\(dtype)")
            XCTAssertEqual(t.int64s, values.map { Int64($0) }, "\(dtype)")
            // Little-endian bytes decode back to the same tensor, and widen as the model file does.
            let bytes = t.littleEndianBytes()
            XCTAssertEqual(bytes.count, t.byteCount, "\(dtype)")
            XCTAssertEqual(bytes.withUnsafeBytes { Tensor(shape: t.shape, dtype: dtype, decoding: $0) }, t, "\(dtype)")
            XCTAssertEqual(bytes.withUnsafeBytes { dtype.floats(fromLittleEndian: $0) }, values, "\(dtype)")
        }
        let big: [UInt8] = [0x3F, 0xC0, 0, 0]  // 1.5 as big-endian float32
        XCTAssertEqual(big.withUnsafeBytes { Tensor(shape: [], dtype: .float32, decoding: $0, bigEndian: true) }.floats, [1.5])
    }

    func testAsInt64sAcceptsOnlyExactIntegers() throws {
        XCTAssertEqual(try Tensor(shape: [1], doubles: [3.0]).asInt64s(), [3])
        XCTAssertEqual(try Tensor(shape: [2], floats: [7, -1]).asInt64s(), [7, -1])
        XCTAssertEqual(try Tensor(shape: [1], bytes: [200]).asInt64s(), [200])
        XCTAssertThrowsError(try Tensor(shape: [2], doubles: [1, 1.5]).asInt64s()) {
            XCTAssertEqual($0 as? TensorFailure, .notAnInteger(dtype: .float64, index: 1, value: 1.5))
            XCTAssertEqual("\($0)", "expected integer values but float64 element 1 is 1.5; "
                + "store labels as an integer dtype or as exact whole numbers")
        }
        XCTAssertThrowsError(try Tensor(shape: [1], floats: [.nan]).asInt64s())
    }

    func testElementCountIsChecked() {
        XCTAssertEqual(elementCount([]), 1)
        XCTAssertEqual(elementCount([2, 0, 5]), 0)
        XCTAssertEqual(elementCount([2, 3, 4]), 24)
        XCTAssertEqual(elementCount([2, 3, 4][1...]), 12)
        XCTAssertNil(elementCount([-1, 3]))
        XCTAssertNil(elementCount([1 << 32, 1 << 32]))
        XCTAssertNil(elementCount([Int.max, 2]))
        // With a limit, every partial product counts: a later 0 does not rescue a huge prefix.
        XCTAssertEqual(elementCount([4, 8], limit: 32), 32)
        XCTAssertNil(elementCount([4, 9], limit: 32))
        XCTAssertNil(elementCount([4, 9, 0], limit: 32))
    }

    func testHostOnlyDTypes() {
        XCTAssertEqual(DType.allCases.filter(\.inModelFile), [.float32, .float16, .bfloat16, .int64])
        XCTAssertEqual(DType.allCases.map(\.rawValue), ["float32", "float16", "bfloat16", "int64", "float64", "uint8", "int32"])
    }

    func testWriterRefusesAFloat64Constant() {
        let w = WeightTensor(name: "w", tensor: Tensor(shape: [2], doubles: [1, 2]))
        XCTAssertEqual(w.tensor(), Tensor(shape: [2], doubles: [1, 2]))
        let model = Model(graphs: [], tensors: [w], metadata: [:])
        XCTAssertThrowsError(try ModelFile.encode(model)) {
            XCTAssertEqual("\($0)", "tensor 'w': dtype f64 is not one of the four a model file stores (f32, f16, bf16, i64) "
                + "[rule F5, see Spec/ModelFile.md]")
        }
        // The model-file dtypes round-trip through WeightTensor unchanged.
        let f16 = Tensor(shape: [2], storage: .float16([0x3C00, 0x7BFF]))
        XCTAssertEqual(WeightTensor(name: "h", tensor: f16).tensor(), f16)
        XCTAssertEqual(WeightTensor(name: "h", tensor: f16).floats(), [1, 65504])
    }

    func testVerifierRefusesAFloat64Value() {
        let b = GraphBuilder(name: "g", constants: [:])
        let x = b.input("x", TensorType(.float64, [2]))
        b.output(x)
        XCTAssertThrowsError(try Verifier.verify(b.graph)) {
            XCTAssertEqual("\($0)", "graph 'g': value 'x' has dtype f64, which graphs do not compute with (f32, f16, bf16, i64) "
                + "[rule W9, see Spec/IR.md]")
        }
    }
}
