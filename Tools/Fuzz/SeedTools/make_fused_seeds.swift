import Foundation
import FlowIR
@testable import TarFlow
// Writes model files whose graphs are the compiler's fused graphs (attention, fused_linear,
// affine_coupling), so the fuzzer reaches the fused ops' shape rules and kernels from files.
//
// Not part of any target. To run: make a package with an executable target whose main.swift is
// this file, depending on the main package by path (products TarFlow and FlowIR), build it in
// debug (so `@testable import` works), and run
//   seedgen Tools/Fuzz/Seeds/FuzzModelFile micro0 micro1_f16 micro2
let dir = URL(fileURLWithPath: CommandLine.arguments[1])
for name in CommandLine.arguments.dropFirst(2) {
    let m = try ModelFile.read(contentsOf: dir.appendingPathComponent(name + ".tflow"))
    let t = try TarFlowModel(model: m)
    var graphs: [Graph] = [try t.forwardPlan().plan.graph]
    for k in 0..<t.config.numBlocks { graphs.append(try t.decodePlan(k).plan.graph) }
    var fused = m
    fused.graphs = graphs
    let bytes = try ModelFile.encode(fused)
    _ = try TarFlowModel(model: try ModelFile.decode(bytes))
    try Data(bytes).write(to: dir.appendingPathComponent("fused_" + name + ".tflow"))
    print("fused_\(name).tflow", bytes.count, graphs.map { g in g.nodes.map(\.op.name).filter { ["attention", "fused_linear", "affine_coupling"].contains($0) }.count })
}
