import ArgumentParser
import Foundation
import TarFlow

extension GuidanceTarget: ExpressibleByArgument {
    /// a, b, both, or the official spelling ab.
    public init?(argument: String) {
        guard let t = GuidanceTarget(rawValue: argument) ?? GuidanceTarget(officialName: argument) else { return nil }
        self = t
    }
}

struct Sample: ParsableCommand {
    /// The flags of `SamplingOptions`, for its messages.
    static let optionNames: SamplingOptions.Names = {
        var n = SamplingOptions.Names()
        (n.guidance, n.guide, n.attentionTemperature, n.annealed, n.temperature, n.kvCache) =
            ("--guidance", "--guide-what", "--attn-temp", "--annealed", "--temperature", "--kv-cache")
        return n
    }()

    static let configuration = CommandConfiguration(abstract: "Generate images with the model's inverse pass (Model.reverse), with optional guidance.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Prior noise: a float32 .npy of shape (B, T, D).") var noise: String?
    @Option(parsing: .unconditional, help: "Number of images, with noise generated from --seed.") var count: Int?
    @Option(help: "Seed of the generated noise (counter-based: the same seed gives the same noise everywhere).") var seed: UInt64 = 0
    @Option(help: "Labels: an int64/int32 .npy, one per image; -1 = unconditional.") var labels: String?
    @Option(parsing: .unconditional, help: "One label for every image; -1 = unconditional.") var label: Int?
    @Option(parsing: .unconditional, help: "Classifier-free guidance weight W >= 0.") var guidance: Float = 0
    @Option(help: "With --guidance: guide a, b or both (ab) (default: both).") var guideWhat: GuidanceTarget?
    @Option(parsing: .unconditional, help: "With --guidance: attention temperature of the unguided branch (> 0; default 1).") var attnTemp: Float?
    @Flag(help: "With --guidance: annealed guidance, g_i = (i+1)/(T-1)·W.") var annealed = false
    @Option(parsing: .unconditional, help: "Scale of the prior noise.") var temperature: Float = 1
    @Flag(help: "Follow sampling with one score-based denoising step (x + σ²∇ log p), the official pipeline.") var denoise = false
    @Option(parsing: .unconditional, help: "Noise level σ for --denoise (default: the model's).") var noiseStd: Double?
    @Option(name: .shortAndLong, help: "Output: OUT.npy or OUT.npz (float32 B,C,H,W in model space, member 'images'; not clamped to [-1, 1], as the official code) or OUT.png (a grid, clamped).") var output: String?
    @Option(help: "Write one PNG per image into this folder.") var outDir: String?
    @Option(parsing: .unconditional, help: "Columns of the PNG grid (default: the square root of the count).") var gridColumns: Int?
    @Flag(help: "Min-max normalize PNG output, as torchvision's save_image(normalize=True).") var normalize = false
    @Option(parsing: .unconditional, help: "Threads for the GEMMs.") var threads: Int = 1
    @Option(help: "KV cache precision: f32 or f16 (math is f32; default: f16 for f16/bf16 models, f32 for f32 models).")
    var kvCache: KVCacheDType?
    @Flag(help: "No progress bar (drawn on stderr only when it is a terminal) and no summary line.") var quiet = false
    @OptionGroup var sharding: ShardOptions

    func run() throws {
        guarded {
            guard self.output != nil || outDir != nil else { throw CLIError("give -o OUT.npy|OUT.npz|OUT.png or --out-dir DIR") }
            let shard = try sharding.resolve()
            if shard != nil && denoise {
                // The denoising step's gradient is a batch computation whose rounding depends on
                // the batch, so shards could not give the unsharded bytes.
                throw CLIError("--denoise cannot be sharded (its gradient's rounding depends on the batch); sample with --shard, merge, then run `tarflow denoise` on the merged .npy")
            }
            let output = shardPath(self.output, shard)
            try OutputFormat.check(output, "-o", allowed: [.npy, .npz, .png])
            try Checks.output(output, "-o")
            try Checks.outputFolder(outDir, "--out-dir")
            try Checks.distinct(outputs: [("-o", output)], inputs: [("model", model), ("--noise", noise), ("--labels", labels)])
            try Checks.threads(threads)
            try Checks.positive(count, "--count")
            try Checks.positive(gridColumns, "--grid-columns")
            var opts = SamplingOptions(guidance: guidance, guide: guideWhat ?? .both, attentionTemperature: attnTemp ?? 1,
                                       annealed: annealed, temperature: temperature)
            opts.kvCache = kvCache?.dtype
            try Checks.input(nil) { try opts.validate(names: Sample.optionNames) }
            if let n = noiseStd, !(n >= 0 && n.isFinite) { throw CLIError("--noise-std \(n) must be a finite number >= 0") }
            if labels != nil && label != nil { throw CLIError("give --labels or --label, not both") }
            if noise != nil && count != nil { throw CLIError("give --noise or --count, not both") }
            let m = try Checks.model(model, threads: threads)
            let c = m.config
            if denoise, noiseStd == nil, m.noiseStd == nil { throw CLIError("--denoise: the model records no training noise level; pass --noise-std σ") }

            var labs = try labels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            if let labels { try Checks.labels(labs, from: "--labels \(labels)", config: c) }
            if let label { try Checks.labels([label], from: "--label", config: c) }
            // The run's images: the noise file's rows, else --count, else the labels; a shard
            // takes its part of them (noise rows, labels and file names by global index).
            let run: Range<Int>
            var part: Range<Int>
            var z: Tensor
            var noiseDigest = "generated"
            if let noise {
                let all = try Checks.input("--noise") { try m.noise(contentsOf: URL(fileURLWithPath: noise)) }
                run = 0..<all.shape[0]
                part = try shard?.images(of: run) ?? run
                try Checks.memory(m, .sample(images: part.count, options: opts, denoise: denoise), flag: "--noise batch")
                let per = c.numPatches * c.patchDim, f = all.floats
                z = Tensor(shape: [part.count, c.numPatches, c.patchDim], floats: Array(f[(part.lowerBound * per)..<(part.upperBound * per)]))
                if shard != nil { noiseDigest = ContentDigest.of(f) }
            } else {
                guard let n = count ?? labs?.count else { throw CLIError("give --count K (or --noise, or --labels) to set the number of images") }
                if let l = labs, l.count != n { throw CLIError("--labels \(labels ?? ""): \(l.count) labels for --count \(n) images") }
                run = 0..<n
                part = try shard?.images(of: run) ?? run
                try Checks.memory(m, .sample(images: part.count, options: opts, denoise: denoise), flag: "--count")
                z = m.noise(images: part, seed: seed)
            }
            let b = z.shape[0]
            try checkPNGOutput(output: output, outDir: outDir, count: b, channels: c.inChannels, size: c.imgSize, columns: gridColumns)
            if let l = labs, l.count != run.count { throw CLIError("--labels \(labels ?? ""): \(l.count) labels for \(run.count) images") }
            let labelDigest = labs.map { ContentDigest.of($0) } ?? label.map { "all \($0)" } ?? "none"
            labs = labs.map { Array($0[part]) }
            if let label { labs = [Int](repeating: label, count: b) }
            let guided = opts.isGuided

            if guided, (attnTemp ?? 1) == 1, (labs ?? []).allSatisfy({ $0 == -1 }) {
                // Both branches then see label -1 at the same temperature: the same a and b.
                FileHandle.standardError.write(Data("warning: --guidance \(guidance) with every label -1 changes nothing (the guided and unguided branches are the same); give --label/--labels, or --attn-temp\n".utf8))
            }
            let steps = c.numBlocks * (c.numPatches - 1)
            let bar = ProgressBar("sample", total: steps, unit: "steps", quiet: quiet)
            var x = try m.sample(noise: z, labels: labs, options: opts, progress: { bar.update($0.block * ($0.tokens) + $0.token) })
            bar.finish()
            try Finite.check(x.floats, rowSize: c.imageDim, what: "the sample", firstImage: 0)
            if denoise { x = try m.denoise(images: x, labels: labs, noiseStd: noiseStd).images }
            let record = try shard.map { s in
                RunRecord(command: "sample", output: "-o", model: try ContentDigest.file(URL(fileURLWithPath: model)), seed: noise == nil ? seed : nil,
                          parameters: ["--noise": noiseDigest, "--labels": labelDigest, "--guidance": "\(guidance)", "--guide-what": (guideWhat ?? .both).rawValue,
                                       "--attn-temp": "\(attnTemp ?? 1)", "--annealed": "\(annealed)", "--temperature": "\(temperature)",
                                       "--kv-cache": "\(opts.kvCache ?? m.defaultKVCache)"],
                          shard: s, part: part, run: run)
            }
            try writeImages(x, output: output, outDir: outDir, columns: gridColumns, normalize: normalize, first: part.lowerBound, record: record)
            if !quiet { FileHandle.standardError.write(Data("sampled \(b) image(s) in \(String(format: "%.2f", bar.elapsed)) s\n".utf8)) }
        }
    }
}

/// Refuses PNG output the writer would refuse (channels, grid size) before any sampling is done.
func checkPNGOutput(output: String?, outDir: String?, count b: Int, channels c: Int, size: Int, columns: Int?) throws {
    let png = output.map { URL(fileURLWithPath: $0).pathExtension.lowercased() == "png" } ?? false
    guard png || outDir != nil else { return }
    guard c == 1 || c == 3 else {
        throw CLIError("\(png ? "-o \(output ?? "")" : "--out-dir \(outDir ?? "")"): PNG output needs 1 or 3 channels, the model has \(c); write .npy instead")
    }
    guard png else { return }
    let g = PNGImage.gridLayout(count: b, height: size, width: size, columns: columns)
    guard g.fitsPNG else {
        throw CLIError("-o \(output ?? ""): a grid of \(b) images is \(g.width)x\(g.height) pixels, above the PNG limit of \(PNGImage.maxDimension) per side and \(PNGImage.maxPixels) pixels; use .npy, --out-dir or --grid-columns")
    }
}

/// Writes model-space images f32[B,C,H,W] as .npy, a PNG grid, and/or one PNG per image.
/// Files of --out-dir are named by global image index (`first` + position), so the shards of a
/// run fill one folder; a shard's .npy carries its run record.
func writeImages(_ x: Tensor, output: String?, outDir: String?, columns: Int?, normalize: Bool, first: Int = 0, record: RunRecord? = nil) throws {
    let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    if let output {
        let url = URL(fileURLWithPath: output)
        if try OutputFormat.of(output, "-o", allowed: [.npy, .npz, .png]) != .png {
            try ShardMerge.write([("images", Tensor(shape: x.shape, floats: x.floats))], record: record, to: url)
        } else {
            guard c == 1 || c == 3 else { throw CLIError.invalidInput("PNG output needs 1 or 3 channels, images have \(c); use .npy") }
            let cols = PNGImage.gridLayout(count: b, height: h, width: w, columns: columns).columns
            let g = PNGImage.grid(images: x.floats, count: b, channels: c, height: h, width: w, columns: cols, normalize: normalize)
            try PNGImage.write(g, to: url)
        }
    }
    if let outDir {
        guard c == 1 || c == 3 else { throw CLIError.invalidInput("PNG output needs 1 or 3 channels, images have \(c)") }
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let per = c * h * w
        let f = x.floats
        for i in 0..<b {
            let g = PNGImage.grid(images: Array(f[(i * per)..<((i + 1) * per)]), count: 1, channels: c, height: h, width: w, columns: 1, normalize: normalize)
            try PNGImage.write(g, to: URL(fileURLWithPath: outDir).appendingPathComponent(String(format: "%06d.png", first + i)))
        }
    }
}
