import ArgumentParser
import Foundation
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
    leave(code)
}

/// Ends the process: flushes stdout and stderr, then `_exit`, without the exit handlers of the
/// libraries. OpenBLAS's joins its worker threads, and a worker that could not get its work
/// buffer under `ulimit -v` or `-d` retries forever (measured: every command hung after its
/// last line under `ulimit -v 200000`); nothing of ours needs an exit handler, since every
/// output file is complete (synced and renamed) before the command returns.
func leave(_ code: Int32) -> Never {
    fflush(nil)
    _exit(code)
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
    static let configuration = CommandConfiguration(
        abstract: "Convert an official checkpoint (.pth or .safetensors) into a model file.",
        discussion: """
            A .pth may be a training checkpoint: the state dict is taken from the top level or from the entry \
            model, state_dict, ema or model_ema (--key picks one); other entries (optimizer state, numbers, \
            strings) are skipped without running any code. Name prefixes module. and _orig_mod. are removed.
            """)

    @Argument(help: "The checkpoint: torch.save(model.state_dict()) output, a training checkpoint holding it, or a .safetensors file.")
    var checkpoint: String
    @Option(help: "The entry of a training checkpoint that holds the state dict, e.g. ema (needed when several do).") var key: String?
    @Option(name: .shortAndLong, help: "The model file to write (.tflow).")
    var output: String
    @Option(parsing: .unconditional, help: "Image side in pixels.") var imageSize: Int?
    @Option(parsing: .unconditional, help: "Image channels.") var inChannels: Int?
    @Option(parsing: .unconditional, help: "Patch size.") var patchSize: Int?
    @Option(parsing: .unconditional, help: "Training noise level σ (read from official file names like afhq_model_8_768_8_8_0.07.pth when absent).")
    var noiseStd: Double?
    @Option(help: "Storage of the linear-layer weights: f32, f16 or bf16 (rounded to nearest even; half the file, half the bytes a decode step reads).")
    var weights: WeightsDType = .f32
    @Flag(help: "No progress bar (drawn on stderr only when it is a terminal).") var quiet = false

    func run() throws {
        guarded {
            if let n = noiseStd, !(n >= 0 && n.isFinite) { throw CLIError("--noise-std \(n) must be a finite number >= 0") }
            try Checks.positive(imageSize, "--image-size")
            try Checks.positive(inChannels, "--in-channels")
            try Checks.positive(patchSize, "--patch-size")
            try Checks.output(output, "-o")
            try Checks.distinct(outputs: [("-o", output)], inputs: [("checkpoint", checkpoint)])
            try Checks.memory(Converter.memoryNeed(checkpoint: URL(fileURLWithPath: checkpoint)), "checkpoint \(checkpoint)",
                              fix: "convert on a machine (or under a limit) with more memory")
            var bar: ProgressBar?
            var model = try Converter.convert(checkpoint: URL(fileURLWithPath: checkpoint),
                                              options: .init(imageSize: imageSize, inChannels: inChannels, patchSize: patchSize, noiseStd: noiseStd, key: key),
                                              progress: { done, total in
                                                  if bar == nil { bar = ProgressBar("convert", total: total, unit: "tensors", quiet: quiet) }
                                                  bar?.update(done)
                                              })
            bar?.finish()
            if weights != .f32 {
                try Checks.memory(model.model.reencodingMemoryNeed(as: weights.dtype), "--weights \(weights.rawValue)", fix: "convert with --weights f32, then compile --weights \(weights.rawValue) in another run")
                model = try model.storingLinearWeights(as: weights.dtype)
            }
            try ModelFile.write(model, to: URL(fileURLWithPath: output))
            let c = try TarFlowConfig(metadata: model.metadata)
            print("wrote \(output): \(c.inChannels)x\(c.imgSize)x\(c.imgSize), patch \(c.patchSize), \(c.channels) channels, \(c.numBlocks) blocks x \(c.layersPerBlock) layers, \(c.numClasses) classes, nvp=\(c.nvp), noise_std=\(model.metadata["tarflow.noise_std"]?.description ?? "unknown")")
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model file: a one-screen summary; --graphs adds metadata, tensor table and graphs.")

    @Argument(help: "The model file.") var model: String
    @Flag(help: "Also print every metadata entry, the tensor table and the graphs.") var graphs = false
    @Flag(help: "Also print the execution plans: stored ones (with their memory plans) for compiled functions, else as compiled now.") var plan = false
    @Option(help: "Write the graphs as compiled (optimized) to this Graphviz file.") var dot: String?

    func run() throws {
        guarded {
            try Checks.output(dot, "--dot")
            try Checks.distinct(outputs: [("--dot", dot)], inputs: [("model", model)])
            try ModelReport.inspect(contentsOf: URL(fileURLWithPath: model), name: model,
                                    options: .init(graphs: graphs, plans: plan, dot: dot.map { URL(fileURLWithPath: $0) })) { print($0) }
        }
    }
}

struct Likelihood: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Exact log-likelihood and bits/dim of images.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Images: a .npy (float in [-1, 1] used as is; uint8 dequantized), a folder of PNG/JPEG files (recursive), or an MNIST IDX file (plain or .gz).")
    var images: String
    @Option(help: "Labels: an int64/int32 .npy or an IDX labels file; -1 = unconditional.") var labels: String?
    @Flag(help: "Image folders: the sorted subfolder names are the classes (labels 0, 1, ...), as torchvision's ImageFolder.") var labelsFromFolders = false
    @Flag(help: "Image folders: torchvision's Resize(image size) (shorter side, bilinear, antialiased) then CenterCrop; without it images must have the model's size.") var resize = false
    @Option(help: "Seed of the dequantization noise for integer images.") var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Images per forward pass.") var batchSize: Int = 64
    @Option(parsing: .unconditional, help: "Index of the first image.") var offset: Int = 0
    @Option(parsing: .unconditional, help: "Number of images (default: all after --offset).") var limit: Int?
    @Option(help: "Write z (B,T,D), logdets (B) and bpd (B) (float32), bits_per_dim and nll (B, float64) to this .safetensors or .npz file (the extension picks the format).") var save: String?
    @OptionGroup var common: ChunkedRunOptions

    func run() throws {
        guarded {
            let shard = try common.start(batchSize: batchSize, offset: offset, limit: limit)
            let save = shardPath(self.save, shard)
            try OutputFormat.check(save, "--save", allowed: [.safetensors, .npz])
            try Checks.output(save, "--save")
            try Checks.distinct(outputs: [("--save", save)], inputs: [("model", model), ("--images", images), ("--labels", labels)])
            if labels != nil, labelsFromFolders { throw CLIError("give --labels or --labels-from-folders, not both") }
            let m = try Checks.model(model, threads: common.threads)
            // Only the images up to --offset + --limit are read (and inflated).
            let needed = limit.map { Saturating.add(offset, $0) }
            let (set, folderLabels) = try Checks.images(images, model: m, resize: resize, labelsFromFolders: labelsFromFolders, limit: needed)
            let labelFile = try labels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0), limit: needed) }
            let labs = labelFile?.labels ?? folderLabels
            if let labels, let labelFile {
                guard labelFile.fileCount == set.fileCount else { throw CLIError("--labels \(labels): \(labelFile.fileCount) labels for \(set.fileCount) images") }
                try Checks.labels(labelFile.labels, from: "--labels \(labels)", config: m.config)
            }
            guard offset < set.count else { throw CLIError("--offset \(offset) is past the \(set.fileCount) images") }
            let end = limit.map { min(set.count, offset + min($0, set.count)) } ?? set.count
            let part = try shard?.images(of: offset..<end) ?? offset..<end
            try Checks.memory(m, .likelihood(images: part.count, batchSize: batchSize, keepLatents: save != nil), flag: "--batch-size")
            try Checks.imageRange(set, flag: "--images", path: images)
            let bar = ProgressBar("likelihood", total: part.count, unit: "images", quiet: common.quiet)
            let r = try m.likelihood(images: set, labels: labs, range: part, batchSize: batchSize, seed: seed, keepLatents: save != nil,
                                     progress: { done, _ in bar.update(done) })
            bar.finish()
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
                    ("bits_per_dim", Tensor(shape: [n], doubles: r.bitsPerDim)),
                    ("nll", Tensor(shape: [n], doubles: r.nll)),
                    ("z", Tensor(shape: [n, m.config.numPatches, m.config.patchDim], floats: r.z)),
                    ("logdets", Tensor(shape: [n], floats: r.logdets)),
                    ("bpd", Tensor(shape: [n], floats: r.bitsPerDim.map { Float($0) })),
                ], record: record, to: URL(fileURLWithPath: save))
            }
            try Summary.likelihood(r, json: common.json)
        }
    }
}
