import FlowCompiler
import FlowIR
import FlowRuntime

extension TarFlowGraphs {
    /// The official training loss on top of the forward graph, `get_loss`:
    /// loss = 0.5 · mean(z²) − mean(logdets) over the batch (unit Gaussian prior, also for
    /// volume-preserving models), then its gradient with respect to the images, derived by the
    /// compiler's `Differentiate` pass. Outputs `loss` f32[] and `grad.x` f32[B,C,H,W].
    public static func gradient(forward: Graph, constants: [String: TensorType]) throws -> VerifiedGraph {
        let b = GraphBuilder(extending: forward, name: "gradient", constants: constants)
        guard let z = forward.value(named: "z"), let ld = forward.value(named: "logdets") else {
            throw TarFlowError.invalidModel(.forwardLacksOutputs)
        }
        let rank = b.type(z).rank
        let zz = try b.apply(.mul, z, z)
        let half = try b.apply(.scale(0.5), try b.apply(.reduceMean(axes: Array(0..<rank), keepDims: false), zz))
        let loss = try b.apply(.sub, half, try b.apply(.reduceMean(axes: [0], keepDims: false), ld), name: "loss")
        var g = b.graph
        g.outputs = [loss]
        return try Differentiate.verifiedGradientGraph(g, of: "loss", wrt: ["x"], constants: constants)
    }
}

extension TarFlowModel {
    /// The compiled gradient function (compiled on first use).
    func gradientPlan() throws -> Executor {
        lock.lock()
        defer { lock.unlock() }
        if let e = gradientExecutor { return e }
        let e = try makeExecutor("gradient") {
            try verifiedGraph("gradient") ?? TarFlowGraphs.gradient(forward: model.graph(named: "forward")!, constants: model.constantTypes)
        }
        gradientExecutor = e
        return e
    }
}
