import FlowCompiler
import FlowIR
import FlowRuntime
import FlowTestSupport
import XCTest

/// `HalfPrecisionState`: KV caches read only by attention become f16 (input and expected
/// graph); caches with any other reader stay f32, and so does the partner of such a cache; the
/// executor's f16 cache (write_slice rounding, attention widening) matches the reference
/// interpreter over several decode steps.
final class HalfPrecisionStateTests: XCTestCase {
    let B = Dim.batch
    let H = 2, d = 4, C = 8, cacheT = 6

    func f32(_ s: [Dim]) -> TensorType { TensorType(.float32, s) }

    /// A fused decode step: qkv [B,1,3C] → caches written at `pos` → attention over the caches.
    /// `extraReader`: a reduce over the new k (or v) cache, also a graph output.
    func decodeGraph(extraReader: String? = nil) throws -> Graph {
        let b = GraphBuilder(name: "decode", constants: [:])
        let qkv = b.input("qkv", f32([B, 1, .fixed(3 * C)]))
        let cacheType = f32([B, .fixed(H), .fixed(cacheT), .fixed(d)])
        let kc0 = b.input("cache.k", cacheType)
        let vc0 = b.input("cache.v", cacheType)
        let pos = b.input("pos", TensorType(.int64, [1]))
        let heads = try b.apply(.transpose(perm: [0, 2, 1, 3]), try b.apply(.reshape(shape: [B, 1, .fixed(3 * H), .fixed(d)]), qkv))
        let k = try b.apply(.slice(axis: 1, start: H, end: 2 * H), heads)
        let v = try b.apply(.slice(axis: 1, start: 2 * H, end: 3 * H), heads)
        let kc = try b.apply(.writeSlice(axis: 2), kc0, k, pos, name: "cache.k.next")
        let vc = try b.apply(.writeSlice(axis: 2), vc0, v, pos, name: "cache.v.next")
        let o = try b.apply(.attention(heads: H, scale: 0.5, mask: .afterPosition, offsets: [0, 0, 0], rowScale: false),
                            inputs: [qkv, kc, vc, pos], name: "out")
        b.output(o)
        if let extraReader {
            b.output(try b.apply(.reduceSum(axes: [1, 2, 3], keepDims: false), extraReader == "k" ? kc : vc, name: "peek"))
        }
        var g = b.graph
        g.outputs += [kc, vc]
        g.state = [StateBinding(input: kc0, output: kc), StateBinding(input: vc0, output: vc)]
        try Verifier.verify(g)
        return g
    }

    func run(_ g: Graph) throws -> (Graph, Bool) {
        var out = g
        let changed = try HalfPrecisionState().run(&out, context: PassContext(constants: [:]))
        try Verifier.verify(out)
        return (out, changed)
    }

    func testCachesReadOnlyByAttentionBecomeHalf() throws {
        let g = try decodeGraph()
        let (half, changed) = try run(g)
        XCTAssertTrue(changed)
        var expected = g
        for name in ["cache.k", "cache.v", "cache.k.next", "cache.v.next"] {
            let v = try XCTUnwrap(g.value(named: name))
            expected.values[v].type = TensorType(.float16, g.values[v].type.shape)
        }
        XCTAssertEqual(half, expected, Printer.print(half))
        XCTAssertTrue(half.hasHalfPrecisionState)
        // Running it again changes nothing.
        XCTAssertFalse(try run(half).1)
    }

    func testACacheWithAnotherReaderKeepsBothInFloat32() throws {
        for reader in ["k", "v"] {
            let g = try decodeGraph(extraReader: reader)
            let (out, changed) = try run(g)
            XCTAssertFalse(changed, "a reduce reads the \(reader) cache")
            XCTAssertEqual(out, g)
        }
    }

    func testTheVerifierRefusesHalfWhereOpsNeedFloat32() throws {
        var g = try decodeGraph()
        let q = try XCTUnwrap(g.value(named: "qkv"))
        g.values[q].type = TensorType(.float16, g.values[q].type.shape)
        XCTAssertThrowsError(try Verifier.verify(g)) { XCTAssertTrue("\($0)".contains("W9"), "\($0)") }
    }

    /// Several decode steps through the executor (f16 caches in its arena) against the
    /// reference interpreter on the same half-precision graph, state carried by hand.
    func testExecutorMatchesReferenceOverSteps() throws {
        var options = Compiler.Options()
        options.halfPrecisionState = true
        let plan = try Compiler.compile(try decodeGraph(), constants: [:], options: options)
        XCTAssertTrue(plan.graph.hasHalfPrecisionState, "\(plan.passLog)")
        let model = Model(graphs: [], tensors: [], metadata: [:])
        let bound = try Executor(plan: plan, model: model).bind(["B": 3])
        bound.resetState()
        var rng = SplitMix64(99)
        let g = plan.graph
        var kState = Tensor(shape: [3, H, cacheT, d], doubles: [Double](repeating: 0, count: 3 * H * cacheT * d))
        var vState = kState
        for p in 0..<cacheT {
            let qkv = rng.floats(3 * 3 * C, -1...1)
            bound.buffer("qkv")!.pointer.copyMemory(from: qkv, byteCount: qkv.count * 4)
            bound.buffer("pos")!.pointer.storeBytes(of: Int64(p), as: Int64.self)
            try bound.run()
            let got = UnsafeBufferPointer(start: bound.buffer("out")!.pointer.assumingMemoryBound(to: Float.self), count: 3 * C)
            let ref = try ReferenceInterpreter.run(g, model: model, inputs: [
                "qkv": Tensor(shape: [3, 1, 3 * C], doubles: qkv.map(Double.init)), "pos": Tensor(shape: [1], doubles: [Double(p)]),
                "cache.k": kState, "cache.v": vState,
            ])
            let out = try XCTUnwrap(ref[g.value(named: "out")!])
            for (a, b) in zip(got, out.asDoubles()) { XCTAssertEqual(Double(a), b, accuracy: 1e-5, "step \(p)") }
            XCTAssertFalse(got.contains { !$0.isFinite })
            kState = try XCTUnwrap(ref[g.value(named: "cache.k.next")!])
            vState = try XCTUnwrap(ref[g.value(named: "cache.v.next")!])
            // The executor's cache holds exactly the rounded values the reference stored.
            let kc = bound.read(g.value(named: "cache.k.next")!)
            XCTAssertEqual(kc.floats.map(Double.init), kState.asDoubles(), "step \(p)")
        }
    }
}
