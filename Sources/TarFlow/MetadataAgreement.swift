import FlowIR

// MARK: - Agreement between a model file's metadata and its tensors and graphs

extension TarFlowConfig {
    /// Reads each architecture size back from the file's tensors and graphs and compares it with
    /// the metadata key that records it, so an edited or damaged key is named (the graph checks
    /// that follow would only name the first graph value that no longer fits). Then every tensor
    /// the config implies must be present with its exact shape, and no other one.
    func checkMetadataAgrees(with model: Model) throws(TarFlowError) {
        func disagree(_ key: String, _ meta: any CustomStringConvertible, _ file: any CustomStringConvertible, _ source: String) -> TarFlowError {
            .invalidModel(.metadataDisagrees(key: "tarflow.\(key)", metadata: "\(meta)", found: "\(file)", source: source))
        }
        func shape(_ name: String) -> [Int]? { model.tensor(named: name)?.shape }

        // Blocks: blocks.K.proj_in.weight for K = 0, 1, ... (the decode graphs, one per block).
        var blocks = 0
        while blocks <= 1024, shape("blocks.\(blocks).proj_in.weight") != nil { blocks += 1 }
        guard blocks > 0, let projIn = shape("blocks.0.proj_in.weight"), projIn.count == 2 else {
            throw .invalidModel(.notTarFlow)
        }
        if blocks != numBlocks { throw disagree("num_blocks", numBlocks, blocks, "the tensors blocks.K.proj_in.weight") }
        var decodes = 0
        while decodes <= 1025, model.graph(named: "decode\(decodes)") != nil { decodes += 1 }
        if decodes != numBlocks { throw disagree("num_blocks", numBlocks, decodes, "the graphs decode0, decode1, ...") }
        if projIn[0] != channels { throw disagree("channels", channels, projIn[0], "tensor 'blocks.0.proj_in.weight' (rows)") }
        let D = projIn[1]

        // Image: the forward graph's input x is f32[B, C, H, W].
        if let f = model.graph(named: "forward"), let x = f.value(named: "x"), f.inputs.contains(x) {
            let s = f.values[x].type.shape
            if s.count == 4 {
                if let c = s[1].fixedSize, c != inChannels { throw disagree("in_channels", inChannels, c, "the forward graph's input 'x'") }
                if let h = s[2].fixedSize, h != imgSize { throw disagree("img_size", imgSize, h, "the forward graph's input 'x'") }
            }
        }
        if D != patchDim { throw disagree("patch_size", patchSize, "C·p² = \(D)", "tensor 'blocks.0.proj_in.weight' (columns)") }
        if let pos = shape("blocks.0.pos_embed"), pos.count == 2, pos[0] != numPatches {
            throw disagree("img_size", imgSize, "\(pos[0]) patches (config: \(numPatches))", "tensor 'blocks.0.pos_embed'")
        }
        if let out = shape("blocks.0.proj_out.weight"), out.count == 2, out[0] != (nvp ? 2 * D : D) {
            throw disagree("nvp", nvp, out[0] == 2 * D, "tensor 'blocks.0.proj_out.weight' (\(out[0]) rows for D = \(D))")
        }
        let classes = shape("blocks.0.class_embed").map { $0.first ?? 0 } ?? 0
        if classes != numClasses { throw disagree("num_classes", numClasses, classes, "tensor 'blocks.0.class_embed'") }
        var layers = 0
        while layers <= 1024, shape("blocks.0.attn_blocks.\(layers).attention.qkv.weight") != nil { layers += 1 }
        if layers != layersPerBlock { throw disagree("layers_per_block", layersPerBlock, layers, "the tensors blocks.0.attn_blocks.L") }
        if let mlp = shape("blocks.0.attn_blocks.0.mlp.main.0.weight"), mlp.count == 2, mlp[0] != channels * expansion {
            throw disagree("expansion", expansion, "\(mlp[0]) / \(channels)", "tensor 'blocks.0.attn_blocks.0.mlp.main.0.weight'")
        }
        // Heads: the KV cache of a decode step is f32[B, H, T, head_dim].
        for k in 0..<numBlocks where layersPerBlock > 0 {
            guard let g = model.graph(named: "decode\(k)"), let v = g.value(named: "cache.k0") else { continue }
            let s = g.values[v].type.shape
            if s.count == 4, let hd = s[3].fixedSize, hd != headDim { throw disagree("head_dim", headDim, hd, "graph 'decode\(k)' (its KV cache 'cache.k0')") }
        }

        // Every tensor of the official model with its exact shape, and nothing else.
        let expected = Converter.expectedShapes(self)
        for (name, s) in expected.sorted(by: { $0.key < $1.key }) {
            guard let got = shape(name) else { throw .invalidModel(.missingTensor(name: name)) }
            guard got == s else { throw .invalidModel(.tensorShape(name: name, shape: got, expected: s)) }
        }
        if let extra = model.tensors.first(where: { expected[$0.name] == nil }) {
            throw .invalidModel(.unexpectedTensor(name: extra.name))
        }
    }
}
