import CTarFlowZlib
import FlowIR
import Foundation

/// Shard `index` of `count` (0-based) of a run split over a job array. A shard takes a
/// contiguous range of the images the unsharded run would process; since every image's noise
/// depends on (seed, image index) alone, the parts joined in order are the unsharded output.
public struct Shard: Sendable, Hashable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1 else { throw TarFlowError.invalidInput(.shardCount(index: index, count: count)) }
        guard (0..<count).contains(index) else {
            throw TarFlowError.invalidInput(.shardIndex(index: index, count: count))
        }
        self.index = index
        self.count = count
    }

    public var description: String { "\(index)/\(count)" }

    /// `--shard K/N`, or `--shard auto` with the job array's environment: Slurm's
    /// SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MIN/MAX, and
    /// SLURM_ARRAY_TASK_STEP when the array has a step), or a Kubernetes Indexed Job's
    /// JOB_COMPLETION_INDEX with `shards` (`--shards N`, the Job's completions).
    public static func parse(_ spec: String, shards: Int? = nil,
                             environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Shard {
        if spec != "auto" {
            let parts = spec.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let k = decimal(parts[0]), let n = decimal(parts[1]) else {
                throw TarFlowError.invalidInput(.shardSpec(spec))
            }
            guard shards == nil else {
                throw TarFlowError.invalidInput(.shardsBesideCount(spec: spec))
            }
            return try Shard(index: k, count: n)
        }
        if let s = shards, s < 1 { throw TarFlowError.invalidInput(.shardsNotPositive(s)) }
        if let id = environment["SLURM_ARRAY_TASK_ID"] {
            func number(_ name: String) throws -> Int? {
                guard let text = environment[name] else { return nil }
                guard let v = decimal(Substring(text)) else { throw TarFlowError.invalidInput(.environmentNotInteger(name: name, value: text)) }
                return v
            }
            guard let task = try number("SLURM_ARRAY_TASK_ID") else { throw TarFlowError.invalidInput(.environmentNotInteger(name: "SLURM_ARRAY_TASK_ID", value: id)) }
            let low = try number("SLURM_ARRAY_TASK_MIN") ?? 0
            let step = max(try number("SLURM_ARRAY_TASK_STEP") ?? 1, 1)
            let n: Int
            if let c = try number("SLURM_ARRAY_TASK_COUNT") {
                n = c
            } else if let high = try number("SLURM_ARRAY_TASK_MAX"), high >= low {
                n = (high - low) / step + 1
            } else {
                throw TarFlowError.invalidInput(.slurmWithoutCount)
            }
            guard task >= low, (task - low) % step == 0, (task - low) / step < n else {
                throw TarFlowError.invalidInput(.slurmTaskOutside(task: task, count: n, min: low, step: step))
            }
            if let s = shards, s != n {
                throw TarFlowError.invalidInput(.shardsDisagreeWithSlurm(shards: s, tasks: n))
            }
            return try Shard(index: (task - low) / step, count: n)
        }
        if let text = environment["JOB_COMPLETION_INDEX"] {
            guard let k = decimal(Substring(text)) else { throw TarFlowError.invalidInput(.environmentNotInteger(name: "JOB_COMPLETION_INDEX", value: text)) }
            guard let n = shards else {
                throw TarFlowError.invalidInput(.kubernetesWithoutShards)
            }
            return try Shard(index: k, count: n)
        }
        throw TarFlowError.invalidInput(.noJobArray)
    }

    /// Digits only: no sign, space or hex, so "1/ 2" or "+1/2" is refused rather than guessed at.
    static func decimal(_ s: Substring) -> Int? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(s)
    }

    /// This shard's contiguous part of `range`: sizes differ by at most one, earlier shards first.
    public func part(of range: Range<Int>) -> Range<Int> {
        // ⌊k·n / count⌋ in double width: no overflow for any range.
        func bound(_ k: Int) -> Int { count.dividingFullWidth(k.multipliedFullWidth(by: range.count)).quotient }
        return (range.lowerBound + bound(index))..<(range.lowerBound + bound(index + 1))
    }

    /// NAME.shard-K-of-N.EXT: where a shard writes an output the unsharded run writes to NAME.EXT.
    public func fileName(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let ext = url.pathExtension
        let tag = "shard-\(index)-of-\(count)"
        let base = ext.isEmpty ? path : String(path.dropLast(ext.count + 1))
        return ext.isEmpty ? "\(base).\(tag)" : "\(base).\(tag).\(ext)"
    }
}

/// What a shard records about its run in each part it writes, so `tarflow merge` can refuse
/// parts of different runs and find gaps and overlaps. Stored as JSON: in a safetensors part's
/// `__metadata__` under `tarflow.run`, in an `.npz` part as the member `tarflow_run.json`, and
/// beside an `.npy` part in `PART.run.json`.
public struct RunRecord: Codable, Sendable, Equatable {
    public static let currentFormat = "tarflow-run-1"
    public var format = RunRecord.currentFormat
    /// sample, likelihood or classify.
    public var command: String
    /// Which of the command's outputs this part is: "-o", "--save" or "--save-losses".
    public var output: String
    /// `ContentDigest` of the model file.
    public var model: String
    /// Seed of generated noise; nil when the run draws none.
    public var seed: UInt64?
    /// Every flag that changes the output bytes, as given (inputs by their content digest).
    public var parameters: [String: String]
    public var shard: Int
    public var shards: Int
    /// Images of this part (global indices).
    public var start: Int
    public var end: Int
    /// Images of the whole run.
    public var runStart: Int
    public var runEnd: Int
    /// Classification against true labels: correct predictions in this part (the accuracy of
    /// the merged run is their sum over its count, the unsharded computation exactly).
    public var correct: Int?

    enum CodingKeys: String, CodingKey {
        case format, command, output, model, seed, parameters, shard, shards, start, end, correct
        case runStart = "run_start", runEnd = "run_end"
    }

    public init(command: String, output: String, model: String, seed: UInt64?, parameters: [String: String],
                shard: Shard, part: Range<Int>, run: Range<Int>, correct: Int? = nil) {
        self.command = command
        self.output = output
        self.model = model
        self.seed = seed
        self.parameters = parameters
        self.shard = shard.index
        self.shards = shard.count
        start = part.lowerBound
        end = part.upperBound
        runStart = run.lowerBound
        runEnd = run.upperBound
        self.correct = correct
    }

    public func json() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        // Encoding a struct of strings and integers cannot fail.
        return String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func parse(_ text: String, source: String) throws -> RunRecord {
        let r: RunRecord
        do { r = try JSONDecoder().decode(RunRecord.self, from: Data(text.utf8)) } catch {
            throw TarFlowError.invalidInput(.invalidRunRecord(detail: "\(error)"), file: source)
        }
        guard r.format == currentFormat else {
            throw TarFlowError.invalidInput(.runRecordFormat(r.format), file: source)
        }
        guard r.shards >= 1, (0..<r.shards).contains(r.shard), r.start <= r.end, r.runStart <= r.start, r.end <= r.runEnd else {
            throw TarFlowError.invalidInput(.inconsistentRunRecord(r), file: source)
        }
        return r
    }
}

/// A cheap content digest (CRC-32 and length, zlib's C code, fast even in debug builds) that
/// tells apart the inputs of different runs; not a defence against deliberate collisions.
public enum ContentDigest {
    public static func of(_ bytes: UnsafeRawBufferPointer) -> String {
        var crc = crc32(0, nil, 0)
        var rest = bytes
        while !rest.isEmpty {
            let n = min(rest.count, 1 << 30)
            crc = crc32(crc, rest.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(n))
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
        return String(format: "crc32:%08lx,bytes:%d", UInt(crc), bytes.count)
    }

    public static func of<T>(_ values: [T]) -> String { values.withUnsafeBytes { of($0) } }

    /// A file, memory-mapped (a model file of gigabytes is not copied).
    public static func file(_ url: URL) throws -> String {
        let file: MappedFile
        do { file = try MappedFile(path: url.path) } catch {
            throw TarFlowError.invalidInput(.cannotDigest(reason: error.reason), file: url.path)
        }
        return file.withUnsafeBytes { of($0) }  // MappedFile is guarded against SIGBUS
    }

    /// The pixels of an image set, however they were stored (PNG folder, IDX, .npy).
    public static func of(_ set: ImageSet) -> String {
        switch set.pixels {
        case .float(let f): return "f32:\(set.count)x\(set.channels)x\(set.size)x\(set.size)," + of(f)
        case .integer(let b): return "u8:\(set.count)x\(set.channels)x\(set.size)x\(set.size)," + of(b)
        }
    }
}
