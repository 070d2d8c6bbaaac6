import ArgumentParser
import Foundation
import FlowCompiler
import FlowIR
import FlowRuntime
import TarFlow

struct TarflowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tarflow",
        abstract: "Run TarFlow normalizing flows: exact likelihoods, sampling, no Python.",
        subcommands: [Convert.self, Compile.self, Inspect.self, Likelihood.self, Sample.self, Denoise.self, Classify.self, Merge.self, Bench.self]
    )
}

/// Prints one line on stderr and exits non-zero: the way every command reports bad input.
/// Messages that span lines (from a parser or a system library) are joined into one.
func fail(_ message: String, code: Int32 = 1) -> Never {
    var text = message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty }.joined(separator: "; ")
    if text.lowercased().hasPrefix("error: ") { text.removeFirst(7) }
    // Names in messages come from files: no control character (an escape sequence) reaches the terminal.
    text = String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : $0 }))
    FileHandle.standardError.write(Data("error: \(text.isEmpty ? "failed" : text)\n".utf8))
    Foundation.exit(code)
}

/// The tool's `print`: text printed from a model file (tensor, graph and value names, metadata)
/// may hold control characters; they are written escaped (\u{1B}), all but newline and tab, so
/// a file cannot send escape sequences to the terminal (`inspect`).
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    let text = items.map { "\($0)" }.joined(separator: separator)
    var out = ""
    out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
    for u in text.unicodeScalars {
        if u.properties.generalCategory == .control && u != "\n" && u != "\t" {
            out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
        } else {
            out.unicodeScalars.append(u)
        }
    }
    Swift.print(out, terminator: terminator)
}

/// Runs a command body, turning any thrown error into one line and exit code 1.
func guarded(_ body: () throws -> Void) {
    do { try body() } catch let e as CancellationError {
        fail("cancelled: \(e)")
    } catch {
        fail("\(error)")
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Convert an official checkpoint (.pth or .safetensors) into a model file.")

    @Argument(help: "The checkpoint: torch.save(model.state_dict()) output, or a .safetensors file.")
    var checkpoint: String
    @Option(name: .shortAndLong, help: "The model file to write (.tflow).")
    var output: String
    @Option(help: "Image side in pixels.") var imageSize: Int?
    @Option(help: "Image channels.") var inChannels: Int?
    @Option(help: "Patch size.") var patchSize: Int?
    @Option(help: "Training noise level σ (read from official file names like afhq_model_8_768_8_8_0.07.pth when absent).")
    var noiseStd: Double?

    func run() throws {
        guarded {
            if let n = noiseStd, !(n >= 0 && n.isFinite) { throw CLIError("--noise-std \(n) must be a finite number >= 0") }
            try Checks.output(output, "-o")
            let model = try Converter.convert(checkpoint: URL(fileURLWithPath: checkpoint),
                                              options: .init(imageSize: imageSize, inChannels: inChannels, patchSize: patchSize, noiseStd: noiseStd))
            try ModelFile.write(model, to: URL(fileURLWithPath: output))
            let c = try TarFlowConfig(metadata: model.metadata)
            print("wrote \(output): \(c.inChannels)x\(c.imgSize)x\(c.imgSize), patch \(c.patchSize), \(c.channels) channels, \(c.numBlocks) blocks x \(c.layersPerBlock) layers, \(c.numClasses) classes, nvp=\(c.nvp), noise_std=\(model.metadata["tarflow.noise_std"]?.description ?? "unknown")")
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model file: metadata, tensor table and graphs.")

    @Argument(help: "The model file.") var model: String
    @Flag(help: "Also print the execution plans: stored ones (with their memory plans) for compiled functions, else as compiled now.") var plan = false
    @Option(help: "Write the graphs as compiled (optimized) to this Graphviz file.") var dot: String?

    func run() throws {
        guarded {
            let m = try ModelFile.read(contentsOf: URL(fileURLWithPath: model))
            print("metadata:")
            for (k, v) in m.metadata.sorted(by: { $0.key < $1.key }) { print("  \(k) = \(v)") }
            let total = m.tensors.reduce(0) { $0 + $1.bytes.count }
            print("tensors: \(m.tensors.count), \(total) bytes")
            for t in m.tensors { print("  \(t.name): \(t.dtype)[\(t.shape.map(String.init).joined(separator: ","))]") }
            for g in m.graphs {
                print()
                print(Printer.print(g), terminator: "")
                if plan && m.compiledFunction(named: g.name) == nil {
                    let p = try Compiler.compile(g, constants: m.constantTypes)
                    print("plan '\(g.name)': \(p.loadSteps.count) load-time steps, \(p.steps.count) run steps; passes changed: \(p.passLog.joined(separator: ", "))")
                    for (i, s) in p.steps.enumerated() {
                        let outs = s.outputs.map { "%" + p.graph.values[$0].name }.joined(separator: ",")
                        print(String(format: "  %4d ", i) + "\(outs) = \(s.op.name)(\(s.inputs.map { "%" + p.graph.values[$0].name }.joined(separator: ", ")))")
                    }
                }
            }
            if plan { try PlanReport.printCompiled(m) } else if !m.compiled.isEmpty {
                print("\ncompiled functions (tarflow compile; --plan shows them): "
                    + m.compiled.map { "\($0.name) (\($0.plans.count) plan\($0.plans.count == 1 ? "" : "s"))" }.joined(separator: ", "))
            }
            if let dot { try PlanReport.writeDot(m, to: dot) }
        }
    }
}

struct Likelihood: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Exact log-likelihood and bits/dim of images.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Images: a .npy (float in [-1, 1] used as is; uint8 dequantized), a folder of PNG files, or an MNIST IDX file (plain or .gz).")
    var images: String
    @Option(help: "Labels: an int64/int32 .npy or an IDX labels file; -1 = unconditional.") var labels: String?
    @Option(help: "Seed of the dequantization noise for integer images.") var seed: UInt64 = 0
    @Option(help: "Images per forward pass.") var batchSize: Int = 64
    @Option(help: "Index of the first image.") var offset: Int = 0
    @Option(help: "Number of images (default: all after --offset).") var limit: Int?
    @Option(help: "Write z (B,T,D), logdets (B) and bpd (B) (float32), bits_per_dim and nll (B, float64) to this .safetensors file.") var save: String?
    @Option(help: "Threads for the GEMMs.") var threads: Int = 1
    @Flag(help: "Print one JSON line.") var json = false
    @OptionGroup var sharding: ShardOptions

    func run() throws {
        guarded {
            try Checks.batching(batchSize: batchSize, offset: offset, limit: limit, threads: threads)
            let shard = try sharding.resolve()
            let save = shardPath(self.save, shard)
            if let save, ![PartFormat.safetensors, .npz].contains(try? PartFormat(path: save)) {
                throw CLIError("--save \(save) must end in .safetensors (or .npz)")
            }
            try Checks.output(save, "--save")
            let m = try Checks.model(model, threads: threads)
            let set = try ImageSet.load(contentsOf: URL(fileURLWithPath: images), channels: m.config.inChannels, size: m.config.imgSize)
            let labs = try labels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            if let labels, let labs {
                guard labs.count == set.count else { throw CLIError("--labels \(labels): \(labs.count) labels for \(set.count) images") }
                try Checks.labels(labs, from: "--labels \(labels)", config: m.config)
            }
            guard offset < set.count else { throw CLIError("--offset \(offset) is past the \(set.count) images") }
            let end = limit.map { min(set.count, offset + min($0, set.count)) } ?? set.count
            let part = try shard?.images(of: offset..<end) ?? offset..<end
            let rows = min(batchSize, part.count)
            var bytes = try Checks.forwardBytes(m, rows: rows)
            if save != nil { bytes = Checks.add(bytes, Checks.mul(part.count, Checks.mul(m.config.imageDim, 4))) }
            try Checks.memory(bytes, batchFlag: "--batch-size", batch: rows)
            let r = try m.likelihood(images: set, labels: labs, range: part, batchSize: batchSize, seed: seed, keepLatents: save != nil)
            if let save {
                let n = r.count
                let record = try shard.map { s in
                    RunRecord(command: "likelihood", output: "--save", model: try ContentDigest.file(URL(fileURLWithPath: model)),
                              seed: set.isInteger ? seed : nil,
                              parameters: ["--images": ContentDigest.of(set), "--labels": labs.map { ContentDigest.of($0) } ?? "none"],
                              shard: s, part: part, run: offset..<end)
                }
                // float64 figures first (8-byte aligned data), then the float32 tensors.
                try ShardMerge.write([
                    ("bits_per_dim", HostArray(shape: [n], doubles: r.bitsPerDim)),
                    ("nll", HostArray(shape: [n], doubles: r.nll)),
                    ("z", HostArray(shape: [n, m.config.numPatches, m.config.patchDim], floats: r.z)),
                    ("logdets", HostArray(shape: [n], floats: r.logdets)),
                    ("bpd", HostArray(shape: [n], floats: r.bitsPerDim.map { Float($0) })),
                ], record: record, to: URL(fileURLWithPath: save))
            }
            Summary.likelihood(r, json: json)
        }
    }
}
