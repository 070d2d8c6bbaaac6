import FlowIR

/// Builds the graphs of a TarFlow model out of primitive FlowIR ops, reading weights by their
/// official `state_dict` names. Mirrors `transformer_flow.py` line by line; no kernel is called.
public enum TarFlowGraphs {
    /// The forward pass `Model.forward(x, y)`:
    /// inputs `x` f32[B,C,H,W] and, for conditional models, `y` i64[B] (−1 = no label: the mean
    /// class embedding); outputs `block0` … `block{n−2}`, `z` (= the last block) f32[B,T,D] and
    /// `logdets` f32[B] (the sum over blocks of −mean(a)).
    public static func forward(_ c: TarFlowConfig, constants: [String: TensorType]) throws(IRError) -> Graph {
        let b = GraphBuilder(name: "forward", constants: constants)
        let B = Dim.batch
        let T = c.numPatches, D = c.patchDim, C = c.channels, p = c.patchSize, h = c.imgSize / p
        let x = b.input("x", TensorType(.float32, [B, .fixed(c.inChannels), .fixed(c.imgSize), .fixed(c.imgSize)]))
        let y: ValueID? = c.numClasses > 0 ? b.input("y", TensorType(.int64, [B])) : nil

        // patchify = unfold(p, stride p).transpose(1, 2): token (i, j), feature (c, ki, kj).
        var seq = try b.apply(.reshape(shape: [B, .fixed(c.inChannels), .fixed(h), .fixed(p), .fixed(h), .fixed(p)]), x)
        seq = try b.apply(.transpose(perm: [0, 2, 4, 1, 3, 5]), seq)
        seq = try b.apply(.reshape(shape: [B, .fixed(T), .fixed(D)]), seq, name: "patches")

        var logdets: ValueID? = nil
        for k in 0..<c.numBlocks {
            let pre = "blocks.\(k)"
            let flip = k % 2 == 1
            let xin = flip ? try b.apply(.flip(axis: 1), seq) : seq
            var pos = try b.constant("\(pre).pos_embed")
            if flip { pos = try b.apply(.flip(axis: 0), pos) }
            var hcur = try b.apply(.linear, inputs: [xin, try b.constant("\(pre).proj_in.weight"), try b.constant("\(pre).proj_in.bias")])
            hcur = try b.apply(.add, hcur, pos)
            if let y {
                hcur = try b.apply(.add, hcur, try classEmbedding(b, pre: pre, labels: y, classes: c.numClasses, channels: C))
            }
            for l in 0..<c.layersPerBlock {
                hcur = try attentionLayer(b, pre: "\(pre).attn_blocks.\(l)", h: hcur, c: c, tokens: T) { (q, k, v) throws(IRError) in
                    // scaled_dot_product_attention with scale (hd^-1/4)^2 and a lower-triangular mask.
                    var s = try b.apply(.matmul(transposeA: false, transposeB: true), q, k)
                    s = try b.apply(.scale(attentionScale(c)), s)
                    s = try b.apply(.causalMask(value: -.infinity), s)
                    s = try b.apply(.softmax(axis: 3), s)
                    return try b.apply(.matmul(transposeA: false, transposeB: false), s, v)
                }
            }
            let out = try b.apply(.linear, inputs: [hcur, try b.constant("\(pre).proj_out.weight"), try b.constant("\(pre).proj_out.bias")])
            // Shift by one token: row t takes the output of row t − 1, row 0 is zero.
            let shifted = try b.apply(.pad(axis: 1, before: 1, after: 0), try b.apply(.slice(axis: 1, start: 0, end: T - 1), out))
            var z: ValueID
            if c.nvp {
                let xa = try b.apply(.slice(axis: 2, start: 0, end: D), shifted)
                let xb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), shifted)
                z = try b.apply(.mul, try b.apply(.sub, xin, xb), try b.apply(.exp, try b.apply(.neg, xa)))
                let ld = try b.apply(.neg, try b.apply(.reduceMean(axes: [1, 2], keepDims: false), xa))
                logdets = try logdets.map { (v) throws(IRError) in try b.apply(.add, v, ld) } ?? ld
            } else {
                z = try b.apply(.sub, xin, shifted)
            }
            if flip { z = try b.apply(.flip(axis: 1), z) }
            b.rename(z, k == c.numBlocks - 1 ? "z" : "block\(k)")
            b.output(z)
            seq = z
        }
        let ld = try logdets ?? b.apply(.full(value: 0, shape: [B]))
        b.rename(ld, "logdets")
        b.output(ld)
        return b.graph
    }

    /// `class_embed[y]`, with −1 picking the mean of the class embeddings: the table gets the
    /// mean appended as a last row and `gather` counts negative indices from the end.
    static func classEmbedding(_ b: GraphBuilder, pre: String, labels: ValueID, classes: Int, channels C: Int) throws(IRError) -> ValueID {
        let table = try b.apply(.reshape(shape: [.fixed(classes), .fixed(C)]), try b.constant("\(pre).class_embed"))
        let mean = try b.apply(.reduceMean(axes: [0], keepDims: true), table)
        let ext = try b.apply(.concat(axis: 0), table, mean)
        let rows = try b.apply(.gather, ext, labels)
        return try b.apply(.reshape(shape: [.batch, 1, .fixed(C)]), rows)
    }

    /// The official logit scale, `head_dim ** -0.25` squared.
    static func attentionScale(_ c: TarFlowConfig) -> Float {
        let r = 1 / Double(c.headDim).squareRoot().squareRoot()
        return Float(r * r)
    }

    /// One step of `MetaBlock.reverse` for block `k`: token i in, (a, b) for token i + 1 out,
    /// with the K/V cache of every layer as graph state updated in place.
    ///
    /// Inputs: `x` f32[B,1,D] (token i, in the block's permuted order), `pos` i64[1] (= i),
    /// `y` i64[B] for conditional models (−1 = mean class embedding), `logit_scale` f32[B,1,1,1]
    /// (the attention scale divided by the row's attention temperature), and the states
    /// `cache.k{l}`, `cache.v{l}` f32[B,H,T,hd]. Outputs: `a`, `b` f32[B,1,D] (a = 0 when
    /// volume-preserving). Guidance runs the unguided branch as more rows of the same batch.
    public static func decodeStep(_ c: TarFlowConfig, block k: Int, constants: [String: TensorType]) throws(IRError) -> Graph {
        let b = GraphBuilder(name: "decode\(k)", constants: constants)
        let B = Dim.batch
        let T = c.numPatches, D = c.patchDim, C = c.channels, H = c.numHeads, hd = c.headDim
        let pre = "blocks.\(k)"
        let x = b.input("x", TensorType(.float32, [B, 1, .fixed(D)]))
        let pos = b.input("pos", TensorType(.int64, [1]))
        let y: ValueID? = c.numClasses > 0 ? b.input("y", TensorType(.int64, [B])) : nil
        let logitScale = b.input("logit_scale", TensorType(.float32, [B, 1, 1, 1]))
        let cacheType = TensorType(.float32, [B, .fixed(H), .fixed(T), .fixed(hd)])
        var caches: [(ValueID, ValueID)] = []
        for l in 0..<c.layersPerBlock {
            caches.append((b.input("cache.k\(l)", cacheType), b.input("cache.v\(l)", cacheType)))
        }

        var table = try b.constant("\(pre).pos_embed")
        if k % 2 == 1 { table = try b.apply(.flip(axis: 0), table) }
        let posRow = try b.apply(.reshape(shape: [1, 1, .fixed(C)]), try b.apply(.gather, table, pos))
        var h = try b.apply(.linear, inputs: [x, try b.constant("\(pre).proj_in.weight"), try b.constant("\(pre).proj_in.bias")])
        h = try b.apply(.add, h, posRow)
        if let y { h = try b.apply(.add, h, try classEmbedding(b, pre: pre, labels: y, classes: c.numClasses, channels: C)) }
        var newCaches: [(ValueID, ValueID)] = []
        for l in 0..<c.layersPerBlock {
            h = try attentionLayer(b, pre: "\(pre).attn_blocks.\(l)", h: h, c: c, tokens: 1) { (q, kNew, vNew) throws(IRError) in
                let kc = try b.apply(.writeSlice(axis: 2), caches[l].0, kNew, pos, name: "cache.k\(l).next")
                let vc = try b.apply(.writeSlice(axis: 2), caches[l].1, vNew, pos, name: "cache.v\(l).next")
                newCaches.append((kc, vc))
                var s = try b.apply(.matmul(transposeA: false, transposeB: true), q, kc)  // [B,H,1,T]
                s = try b.apply(.mul, s, logitScale)
                s = try b.apply(.maskAfter(value: -.infinity), s, pos)
                s = try b.apply(.softmax(axis: 3), s)
                return try b.apply(.matmul(transposeA: false, transposeB: false), s, vc)
            }
        }
        let out = try b.apply(.linear, inputs: [h, try b.constant("\(pre).proj_out.weight"), try b.constant("\(pre).proj_out.bias")])
        let a: ValueID, bb: ValueID
        if c.nvp {
            a = try b.apply(.slice(axis: 2, start: 0, end: D), out, name: "a")
            bb = try b.apply(.slice(axis: 2, start: D, end: 2 * D), out, name: "b")
        } else {
            a = try b.apply(.full(value: 0, shape: [B, 1, .fixed(D)]), name: "a")
            bb = out
            b.rename(out, "b")
        }
        b.output(a)
        b.output(bb)
        var g = b.graph
        for (l, (kc, vc)) in newCaches.enumerated() {
            g.outputs += [kc, vc]
            g.state.append(StateBinding(input: caches[l].0, output: kc))
            g.state.append(StateBinding(input: caches[l].1, output: vc))
        }
        return g
    }

    /// Pre-LayerNorm self-attention and MLP, each with a residual connection. `attend` maps
    /// per-head q, k, v [B,H,tokens,hd] to the attention output [B,H,tokens,hd].
    static func attentionLayer(_ b: GraphBuilder, pre: String, h: ValueID, c: TarFlowConfig, tokens T: Int,
                               attend: (ValueID, ValueID, ValueID) throws(IRError) -> ValueID) throws(IRError) -> ValueID {
        let B = Dim.batch, C = c.channels, H = c.numHeads, hd = c.headDim
        let eps: Float = 1e-5
        func const(_ n: String) throws(IRError) -> ValueID { try b.constant("\(pre).\(n)") }

        let n1 = try b.apply(.layerNorm(eps: eps), h, try const("attention.norm.weight"), try const("attention.norm.bias"))
        let qkv = try b.apply(.linear, inputs: [n1, try const("attention.qkv.weight"), try const("attention.qkv.bias")])
        // reshape(B, T, 3H, hd).transpose(1, 2).chunk(3, dim=1)
        let heads = try b.apply(.transpose(perm: [0, 2, 1, 3]), try b.apply(.reshape(shape: [B, .fixed(T), .fixed(3 * H), .fixed(hd)]), qkv))
        let q = try b.apply(.slice(axis: 1, start: 0, end: H), heads)
        let k = try b.apply(.slice(axis: 1, start: H, end: 2 * H), heads)
        let v = try b.apply(.slice(axis: 1, start: 2 * H, end: 3 * H), heads)
        var o = try attend(q, k, v)
        o = try b.apply(.reshape(shape: [B, .fixed(T), .fixed(C)]), try b.apply(.transpose(perm: [0, 2, 1, 3]), o))
        let attn = try b.apply(.linear, inputs: [o, try const("attention.proj.weight"), try const("attention.proj.bias")])
        let h1 = try b.apply(.add, h, attn)

        let n2 = try b.apply(.layerNorm(eps: eps), h1, try const("mlp.norm.weight"), try const("mlp.norm.bias"))
        var m = try b.apply(.linear, inputs: [n2, try const("mlp.main.0.weight"), try const("mlp.main.0.bias")])
        m = try b.apply(.gelu, m)
        m = try b.apply(.linear, inputs: [m, try const("mlp.main.2.weight"), try const("mlp.main.2.bias")])
        return try b.apply(.add, h1, m)
    }
}
