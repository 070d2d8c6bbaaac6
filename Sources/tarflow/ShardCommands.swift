import ArgumentParser
import Foundation
import TarFlow

/// `--shard` and `--shards` of the commands that can run as one task of a job array.
/// The options a chunked, shardable image command (`likelihood`, `classify`) ends with.
struct ChunkedRunOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Threads for the GEMMs.") var threads: Int = 1
    @Flag(help: "Print one JSON line.") var json = false
    @Flag(help: "No progress bar (drawn on stderr only when it is a terminal).") var quiet = false
    @OptionGroup var sharding: ShardOptions

    /// Checks the batching flags, then resolves the shard of this task (nil: not sharded).
    func start(batchSize: Int, offset: Int, limit: Int?) throws -> Shard? {
        try Checks.batching(batchSize: batchSize, offset: offset, limit: limit, threads: threads)
        return try sharding.resolve()
    }
}

struct ShardOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Run shard K of N (0-based) of the images, or auto: from SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX with --shards; outputs go to NAME.shard-K-of-N.EXT.", valueName: "K/N|auto"))
    var shard: String?
    @Option(help: "The shard count for --shard auto in a Kubernetes Indexed Job (its completions).") var shards: Int?

    /// The shard of this task, nil when the run is not sharded.
    func resolve() throws -> Shard? {
        guard let shard else {
            if shards != nil { throw CLIError("--shards goes with --shard auto") }
            return nil
        }
        return try Shard.parse(shard, shards: shards)
    }
}

extension Shard {
    /// The shard's images of `run`; a shard with none is refused (more shards than images).
    func images(of run: Range<Int>) throws -> Range<Int> {
        let p = part(of: run)
        guard !p.isEmpty else {
            throw CLIError("--shard \(self): shard \(index) of \(count) gets none of the \(run.count) image(s); use at most \(run.count) shards")
        }
        return p
    }
}

/// Where an output goes: NAME.EXT unsharded, NAME.shard-K-of-N.EXT for a shard.
func shardPath(_ path: String?, _ shard: Shard?) -> String? {
    guard let path else { return nil }
    return shard.map { $0.fileName(for: path) } ?? path
}

/// The summary lines of likelihood and classify, shared with `merge` so a merged run prints
/// the bytes the unsharded run prints.
enum Summary {
    static func likelihood(_ r: TarFlowModel.LikelihoodResult, json: Bool) throws {
        if json {
            print("{\"bits_per_dim\": \(try Checks.json(r.meanBitsPerDim, "bits_per_dim")), \"nll\": \(try Checks.json(r.meanNLL, "nll")), \"count\": \(r.count)}")
        } else {
            print(String(format: "bits/dim %.4f  nll %.4f nats/dim  count %d", r.meanBitsPerDim, r.meanNLL, r.count))
        }
    }

    /// Accuracy as the unsharded command computes it: correct / count.
    static func classify(count n: Int, correct: Int?, json: Bool) {
        let accuracy = correct.map { Double($0) / Double(max(n, 1)) }
        if json {
            print("{" + (accuracy.map { "\"accuracy\": \($0), " } ?? "") + "\"count\": \(n)}")
        } else {
            print("classified \(n) image(s)" + (accuracy.map { String(format: ", accuracy %.2f%%", 100 * $0) } ?? ""))
        }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the parts of a sharded run (.npy, .npz, .safetensors) in image order into the unsharded output.",
        discussion: """
            Refuses gaps, overlaps and parts of different runs (each part records its model, seed, flags, \
            shard and image range). Prints the summary the unsharded command prints (likelihood: mean \
            bits/dim; classify: accuracy), computed in the same order, so the bytes match.
            """)

    @Argument(help: "The merged file to write (same extension as the parts).") var output: String
    @Argument(help: "The parts: NAME.shard-K-of-N.EXT files, in any order.") var parts: [String] = []
    @Flag(help: "Print the summary as one JSON line.") var json = false

    func run() throws {
        guarded {
            guard !parts.isEmpty else { throw CLIError("give the parts to merge: tarflow merge OUT PART...") }
            try Checks.output(output, "OUT")
            let format = try PartFormat(path: output)
            let out = URL(fileURLWithPath: output).standardizedFileURL.path
            if let p = parts.first(where: { URL(fileURLWithPath: $0).standardizedFileURL.path == out }) {
                throw CLIError("OUT \(output) is also the part \(p); write the merged file elsewhere")
            }
            let merged = try ShardMerge.merge(try parts.map(ShardMerge.read))
            guard merged.format == format else { throw CLIError("OUT \(output) must be .\(merged.format.rawValue), like the parts") }
            try ShardMerge.write(merged.arrays, record: nil, to: URL(fileURLWithPath: output))
            let r = merged.record
            FileHandle.standardError.write(Data("merged \(parts.count) part(s), images \(r.runStart)..<\(r.runEnd), into \(output)\n".utf8))
            switch r.command {
            case "likelihood":
                func doubles(_ name: String) throws -> [Double] {
                    guard let a = merged.arrays.first(where: { $0.name == name })?.array, case .float64(let v) = a.storage else {
                        throw CLIError("the parts hold no float64 '\(name)' array; write them again with this version")
                    }
                    return v
                }
                try Summary.likelihood(TarFlowModel.LikelihoodResult(bitsPerDim: try doubles("bits_per_dim"), nll: try doubles("nll"), logdets: [], z: []), json: json)
            case "classify":
                Summary.classify(count: merged.count, correct: merged.correct, json: json)
            default:
                print(json ? "{\"count\": \(merged.count)}" : "merged \(merged.count) image(s)")
            }
        }
    }
}
