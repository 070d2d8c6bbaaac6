import ArgumentParser
import Foundation
import FlowRuntime
import TarFlow

enum GuideWhat: String, ExpressibleByArgument, CaseIterable {
    case a, b, ab
}

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate images with the model's inverse pass (Model.reverse), with optional guidance.")

    @Argument(help: "The model file.") var model: String
    @Option(help: "Prior noise: a float32 .npy of shape (B, T, D).") var noise: String?
    @Option(parsing: .unconditional, help: "Number of images, with noise generated from --seed.") var count: Int?
    @Option(help: "Seed of the generated noise (counter-based: the same seed gives the same noise everywhere).") var seed: UInt64 = 0
    @Option(help: "Labels: an int64/int32 .npy, one per image; -1 = unconditional.") var labels: String?
    @Option(parsing: .unconditional, help: "One label for every image; -1 = unconditional.") var label: Int?
    @Option(parsing: .unconditional, help: "Classifier-free guidance weight W >= 0.") var guidance: Float = 0
    @Option(help: "Guide a, b or both.") var guideWhat: GuideWhat = .ab
    @Option(parsing: .unconditional, help: "Attention temperature of the unguided branch (> 0).") var attnTemp: Float = 1
    @Flag(help: "Annealed guidance: g_i = (i+1)/(T-1)·W.") var annealed = false
    @Option(parsing: .unconditional, help: "Scale of the prior noise.") var temperature: Float = 1
    @Flag(help: "Follow sampling with one score-based denoising step (x + σ²∇ log p), the official pipeline.") var denoise = false
    @Option(parsing: .unconditional, help: "Noise level σ for --denoise (default: the model's).") var noiseStd: Double?
    @Option(name: .shortAndLong, help: "Output: OUT.npy (float32 B,C,H,W in [-1, 1]) or OUT.png (a grid).") var output: String?
    @Option(help: "Write one PNG per image into this folder.") var outDir: String?
    @Option(help: "Columns of the PNG grid (default: the square root of the count).") var gridColumns: Int?
    @Flag(help: "Min-max normalize PNG output, as torchvision's save_image(normalize=True).") var normalize = false
    @Option(help: "Threads for the GEMMs.") var threads: Int = 1
    @Flag(help: "No progress bar.") var quiet = false

    func run() throws {
        guarded {
            guard output != nil || outDir != nil else { throw TarFlowError.invalidInput("give -o OUT.npy|OUT.png or --out-dir DIR") }
            if let output {
                let ext = URL(fileURLWithPath: output).pathExtension.lowercased()
                guard ext == "npy" || ext == "png" else { throw TarFlowError.invalidInput("-o must end in .npy or .png, is \(output)") }
            }
            guard threads > 0 else { throw TarFlowError.invalidInput("--threads must be positive") }
            if let count, count <= 0 { throw TarFlowError.invalidInput("--count must be positive") }
            if let g = gridColumns, g <= 0 { throw TarFlowError.invalidInput("--grid-columns must be positive") }
            if labels != nil && label != nil { throw TarFlowError.invalidInput("give --labels or --label, not both") }
            let m = try TarFlowModel(contentsOf: URL(fileURLWithPath: model), threads: threads)
            let opts = SamplingOptions(guidance: guidance, guideWhat: guideWhat.rawValue, attentionTemperature: attnTemp,
                                       annealed: annealed, temperature: temperature)

            // Batch size: the noise's first dimension, else --count, else the number of labels.
            var labs = try labels.map { try ImageSet.loadLabels(contentsOf: URL(fileURLWithPath: $0)) }
            var z: Tensor
            if let noise {
                if count != nil { throw TarFlowError.invalidInput("give --noise or --count, not both") }
                let a = try NPY.read(contentsOf: URL(fileURLWithPath: noise))
                guard case .float32(let f) = a.storage else { throw TarFlowError.invalidInput("\(noise): noise must be float32, is \(a.element)") }
                z = Tensor(shape: a.shape, floats: f)
                guard a.shape.count == 3, a.shape[0] > 0 else {
                    throw TarFlowError.invalidInput("\(noise): noise must have shape (B, \(m.config.numPatches), \(m.config.patchDim)), has \(a.shape)")
                }
            } else {
                guard let n = count ?? labs?.count else { throw TarFlowError.invalidInput("give --count K (or --noise, or --labels) to set the number of images") }
                z = m.noise(count: n, seed: seed)
            }
            let b = z.shape[0]
            if let l = labs, l.count != b { throw TarFlowError.invalidInput("\(l.count) labels for \(b) images") }
            if let label { labs = [Int](repeating: label, count: b) }

            let bar = ProgressBar(enabled: !quiet, images: b)
            var x = try m.sample(noise: z, labels: labs, options: opts, progress: { bar.update($0) })
            bar.finish()
            if denoise { x = try m.denoise(images: x, labels: labs, noiseStd: noiseStd).images }
            try writeImages(x, output: output, outDir: outDir, columns: gridColumns, normalize: normalize)
            if !quiet { FileHandle.standardError.write(Data("sampled \(b) image(s) in \(String(format: "%.2f", bar.elapsed)) s\n".utf8)) }
        }
    }
}

/// Writes model-space images f32[B,C,H,W] as .npy, a PNG grid, and/or one PNG per image.
func writeImages(_ x: Tensor, output: String?, outDir: String?, columns: Int?, normalize: Bool) throws {
    let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    if let output {
        let url = URL(fileURLWithPath: output)
        if url.pathExtension.lowercased() == "npy" {
            try NPY.write(HostArray(shape: x.shape, floats: x.floats), to: url)
        } else {
            guard c == 1 || c == 3 else { throw TarFlowError.invalidInput("PNG output needs 1 or 3 channels, images have \(c); use .npy") }
            let cols = columns ?? Int(Double(b).squareRoot().rounded(.up))
            let g = PNGImage.grid(images: x.floats, count: b, channels: c, height: h, width: w, columns: cols, normalize: normalize)
            try PNGImage.write(width: g.width, height: g.height, channels: g.channels, pixels: g.pixels, to: url)
        }
    }
    if let outDir {
        guard c == 1 || c == 3 else { throw TarFlowError.invalidInput("PNG output needs 1 or 3 channels, images have \(c)") }
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let per = c * h * w
        let f = x.floats
        for i in 0..<b {
            let g = PNGImage.grid(images: Array(f[(i * per)..<((i + 1) * per)]), count: 1, channels: c, height: h, width: w, columns: 1, normalize: normalize)
            try PNGImage.write(width: g.width, height: g.height, channels: g.channels, pixels: g.pixels,
                               to: URL(fileURLWithPath: outDir).appendingPathComponent(String(format: "%05d.png", i)))
        }
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar {
    let enabled: Bool
    let images: Int
    let start = Date()
    var lastDraw = Date.distantPast

    init(enabled: Bool, images: Int) {
        self.enabled = enabled && isatty(2) == 1
        self.images = images
    }

    var elapsed: Double { Date().timeIntervalSince(start) }

    func update(_ p: SamplingProgress) {
        guard enabled, Date().timeIntervalSince(lastDraw) > 0.1 || p.fraction >= 1 else { return }
        lastDraw = Date()
        let width = 30, filled = Int(p.fraction * Double(width))
        let rate = p.fraction > 0 ? Double(images) * p.fraction / max(elapsed, 1e-9) : 0
        let line = "\r[\(String(repeating: "#", count: filled))\(String(repeating: " ", count: width - filled))] block \(p.block + 1)/\(p.blocks) token \(p.token)/\(p.tokens)  \(String(format: "%.1f", rate)) img/s"
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
