import Foundation
import FlowIR
import XCTest
@testable import TarFlow

/// Sharded runs (`--shard K/N`) and `tarflow merge`: shard specs, image ranges, run records,
/// and a sharded run of each command equal to the unsharded run byte for byte at 1–4 shards.
final class ShardingTests: XCTestCase {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tarflow-shard-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    @discardableResult
    func tarflow(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try runTarflow(args, repo: repo) }

    func path(_ name: String) -> String { tmp.appendingPathComponent(name).path }
    func bytes(_ p: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: p)) }

    // MARK: Shard specs

    func testShardSpecParsing() throws {
        XCTAssertEqual(try Shard.parse("0/4", environment: [:]), try Shard(index: 0, count: 4))
        XCTAssertEqual(try Shard.parse("3/4", environment: [:]), try Shard(index: 3, count: 4))
        XCTAssertEqual(try Shard.parse("0/1", environment: [:]), try Shard(index: 0, count: 1))
        for bad in ["4/4", "5/4", "0/0", "-1/4", "1/-4", "a/b", "1", "1/2/3", " 1/2", "1/2 ", "+1/2", "0x1/2", "", "/", "1/",
                    "99999999999999999999/2", "Auto"] {
            XCTAssertThrowsError(try Shard.parse(bad, environment: [:]), bad) { e in
                XCTAssertTrue("\(e)".contains("--shard"), "\(bad): \(e)")
            }
        }
        XCTAssertThrowsError(try Shard.parse("1/2", shards: 2, environment: [:])) { XCTAssertTrue("\($0)".contains("--shards"), "\($0)") }
    }

    func testShardAutoFromSlurmAndKubernetes() throws {
        XCTAssertEqual(try Shard.parse("auto", environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"]), try Shard(index: 2, count: 4))
        // --array=4-7: tasks 4…7 are shards 0…3.
        let minMax = ["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_MAX": "7"]
        XCTAssertEqual(try Shard.parse("auto", environment: minMax), try Shard(index: 1, count: 4))
        // --array=0-6:2: tasks 0, 2, 4, 6.
        XCTAssertEqual(try Shard.parse("auto", environment: ["SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
                                                             "SLURM_ARRAY_TASK_STEP": "2"]), try Shard(index: 3, count: 4))
        XCTAssertEqual(try Shard.parse("auto", shards: 3, environment: ["JOB_COMPLETION_INDEX": "2"]), try Shard(index: 2, count: 3))
        let refused: [([String: String], Int?, String)] = [
            ([:], nil, "neither SLURM_ARRAY_TASK_ID"),
            (["SLURM_ARRAY_TASK_ID": "1"], nil, "SLURM_ARRAY_TASK_COUNT"),
            (["SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"], nil, "SLURM_ARRAY_TASK_ID=x"),
            (["SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"], nil, "contiguous"),
            (["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"], 3, "--shards 3"),
            (["JOB_COMPLETION_INDEX": "1"], nil, "--shards N"),
            (["JOB_COMPLETION_INDEX": "3"], 3, "K must be in 0...2"),
            (["JOB_COMPLETION_INDEX": "1"], 0, "--shards 0"),
        ]
        for (env, shards, message) in refused {
            XCTAssertThrowsError(try Shard.parse("auto", shards: shards, environment: env), "\(env)") { e in
                XCTAssertTrue("\(e)".contains(message), "\(env): \(e)")
            }
        }
    }

    func testShardPartsTileTheRun() throws {
        for n in 0..<23 {
            for count in 1...7 {
                let run = 5..<(5 + n)
                var at = run.lowerBound
                for k in 0..<count {
                    let p = try Shard(index: k, count: count).part(of: run)
                    XCTAssertEqual(p.lowerBound, at, "n \(n) shard \(k)/\(count)")
                    XCTAssertTrue(p.count == n / count || p.count == n / count + 1, "n \(n) shard \(k)/\(count): \(p)")
                    at = p.upperBound
                }
                XCTAssertEqual(at, run.upperBound)
            }
        }
        XCTAssertEqual(try Shard(index: 2, count: 3).part(of: 0..<(Int.max - 1)).upperBound, Int.max - 1)
        XCTAssertEqual(try Shard(index: 1, count: 4).fileName(for: "/a/b/out.safetensors"), "/a/b/out.shard-1-of-4.safetensors")
        XCTAssertEqual(try Shard(index: 0, count: 2).fileName(for: "out"), "out.shard-0-of-2")
    }

    func testNoiseDependsOnImageIndexOnly() throws {
        let m = try TarFlowModel(model: try TinyModels.model())
        let all = m.noise(count: 10, seed: 9).floats
        let per = m.config.numPatches * m.config.patchDim
        XCTAssertEqual(m.noise(images: 3..<7, seed: 9).floats, Array(all[(3 * per)..<(7 * per)]))
        XCTAssertNotEqual(m.noise(images: 3..<7, seed: 8).floats, Array(all[(3 * per)..<(7 * per)]))
        // Dequantization noise likewise: images 4..<9 alone give the bytes of a run over 0..<12.
        var px = [UInt8](repeating: 0, count: 12 * 16)
        for i in px.indices { px[i] = UInt8(truncatingIfNeeded: i &* 37) }
        let set = ImageSet(count: 12, channels: 1, size: 4, pixels: .integer(px))
        XCTAssertEqual(set.batch(4..<9, dequantization: .uniform(seed: 3)).floats,
                       Array(set.batch(0..<12, dequantization: .uniform(seed: 3)).floats[(4 * 16)..<(9 * 16)]))
    }

    // MARK: Sharded runs equal unsharded runs

    /// Files of a tiny conditional model and 13 integer images with labels.
    func fixtures() throws -> (model: String, images: String, labels: String) {
        let model = path("m.tflow"), images = path("x.npy"), labels = path("y.npy")
        try ModelFile.write(try TinyModels.model(classes: 3), to: URL(fileURLWithPath: model))
        var px = [UInt8](repeating: 0, count: 13 * 16)
        var s: UInt64 = 7
        for i in px.indices { s = s &* 6_364_136_223_846_793_005 &+ 1; px[i] = UInt8(truncatingIfNeeded: s >> 56) }
        try NPY.write(Tensor(shape: [13, 1, 4, 4], bytes: px), to: URL(fileURLWithPath: images))
        try NPY.write(Tensor(shape: [13], int64s: (0..<13).map { Int64($0 % 3) }), to: URL(fileURLWithPath: labels))
        return (model, images, labels)
    }

    /// Runs `args` unsharded writing `outputs` (flag, file name), then at 1…4 shards with
    /// another batch size and thread count, merges each output and compares bytes and the summary.
    func checkShardedEqualsUnsharded(_ args: [String], outputs: [(flag: String, name: String)], summary: Bool, batches: Bool = true) throws {
        var full = args
        for (flag, name) in outputs { full += [flag, path(name)] }
        let ref = try tarflow(full + (batches ? ["--batch-size", "5"] : []))
        XCTAssertEqual(ref.status, 0, ref.err)
        for n in 1...4 {
            for k in 0..<n {
                var a = args
                for (flag, name) in outputs { a += [flag, path("\(n)-" + name)] }
                let r = try tarflow(a + ["--shard", "\(k)/\(n)", "--threads", "\(k % 2 + 1)"] + (batches ? ["--batch-size", "\(k + 2)"] : []))
                XCTAssertEqual(r.status, 0, r.err)
            }
            for (_, name) in outputs {
                let merged = path("merged-\(n)-" + name)
                let base = (name as NSString).deletingPathExtension, ext = (name as NSString).pathExtension
                let parts = (0..<n).reversed().map { path("\(n)-\(base).shard-\($0)-of-\(n).\(ext)") }
                let m = try tarflow(["merge", merged] + parts + (summary ? ["--json"] : []))
                XCTAssertEqual(m.status, 0, m.err)
                XCTAssertEqual(try bytes(merged), try bytes(path(name)), "\(args[0]) \(name) at \(n) shards")
                if summary { XCTAssertEqual(m.out, ref.out, "\(args[0]) summary at \(n) shards") }
            }
        }
    }

    func testShardedLikelihoodEqualsUnsharded() throws {
        let f = try fixtures()
        try checkShardedEqualsUnsharded(["likelihood", f.model, "--images", f.images, "--labels", f.labels, "--seed", "4", "--offset", "1", "--json"],
                                        outputs: [("--save", "lik.safetensors")], summary: true)
        XCTAssertEqual(try SafetensorsReader.read(contentsOf: URL(fileURLWithPath: path("lik.safetensors"))).metadata, [:])
        let part = try SafetensorsReader.read(contentsOf: URL(fileURLWithPath: path("4-lik.shard-3-of-4.safetensors")))
        let record = try RunRecord.parse(try XCTUnwrap(part.metadata[ShardMerge.safetensorsRecordKey]), source: "part")
        XCTAssertEqual([record.start, record.end, record.runStart, record.runEnd, record.shard, record.shards], [10, 13, 1, 13, 3, 4])
        XCTAssertEqual(record.seed, 4)
        XCTAssertEqual(part.arrays.map(\.name), ["bits_per_dim", "nll", "z", "logdets", "bpd"])
    }

    func testShardedClassifyEqualsUnsharded() throws {
        let f = try fixtures()
        try checkShardedEqualsUnsharded(["classify", f.model, "--images", f.images, "--true-labels", f.labels, "--limit", "11", "--json"],
                                        outputs: [("--save", "pred.npy"), ("--save-losses", "loss.npy")], summary: true)
    }

    func testShardedSampleEqualsUnsharded() throws {
        let f = try fixtures()
        try NPY.write(Tensor(shape: [9], int64s: [0, 1, 2, -1, 0, 1, 2, 2, 1]), to: URL(fileURLWithPath: path("y9.npy")))
        try checkShardedEqualsUnsharded(["sample", f.model, "--count", "9", "--labels", path("y9.npy"), "--guidance", "1.5", "--seed", "2", "--quiet"],
                                        outputs: [("-o", "s.npy")], summary: false, batches: false)
        // Noise from a file: a shard takes its rows.
        try NPY.write(Tensor(shape: [5, 4, 4], floats: (0..<80).map { Float(($0 * 29) % 17) / 8 - 1 }), to: URL(fileURLWithPath: path("z.npy")))
        try checkShardedEqualsUnsharded(["sample", f.model, "--noise", path("z.npy"), "--temperature", "0.9", "--quiet"],
                                        outputs: [("-o", "n.npy")], summary: false, batches: false)
        // --out-dir: every shard writes into one folder, files named by global index.
        let dir = path("each"), dir3 = path("each3")
        XCTAssertEqual(try tarflow(["sample", f.model, "--count", "7", "--label", "1", "--out-dir", dir, "--quiet"]).status, 0)
        for k in 0..<3 { XCTAssertEqual(try tarflow(["sample", f.model, "--count", "7", "--label", "1", "--out-dir", dir3, "--quiet", "--shard", "\(k)/3"]).status, 0) }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir3).sorted()
        XCTAssertEqual(names, (0..<7).map { String(format: "%06d.png", $0) })
        for n in names { XCTAssertEqual(try bytes(dir + "/" + n), try bytes(dir3 + "/" + n), n) }
    }

    func testNPZPartsMerge() throws {
        let arrays: (Range<Int>) -> [(name: String, array: Tensor)] = { r in
            [("a", Tensor(shape: [r.count, 2], floats: r.flatMap { [Float($0), -Float($0)] })), ("b", Tensor(shape: [r.count], int64s: r.map(Int64.init)))]
        }
        let whole = path("whole.npz")
        try ShardMerge.write(arrays(0..<7), record: nil, to: URL(fileURLWithPath: whole))
        var parts: [ShardMerge.Part] = []
        for k in 0..<3 {
            let s = try Shard(index: k, count: 3), p = s.part(of: 0..<7)
            let file = s.fileName(for: path("p.npz"))
            try ShardMerge.write(arrays(p), record: RunRecord(command: "sample", output: "-o", model: "m", seed: 1, parameters: [:], shard: s, part: p, run: 0..<7),
                                 to: URL(fileURLWithPath: file))
            parts.append(try ShardMerge.read(file))
        }
        let merged = try ShardMerge.merge(parts.reversed())
        try ShardMerge.write(merged.arrays, record: nil, to: URL(fileURLWithPath: path("merged.npz")))
        XCTAssertEqual(try bytes(path("merged.npz")), try bytes(whole))
        let back = try NPZ.readArrays(contentsOf: URL(fileURLWithPath: whole))
        XCTAssertEqual(back.arrays.map(\.name), ["a", "b"])
        XCTAssertTrue(back.other.isEmpty)
        XCTAssertEqual(back.arrays[1].array.shape, [7])
    }

    // MARK: Refusals

    func testMergeRefusesGapsOverlapsAndOtherRuns() throws {
        let f = try fixtures()
        let lik = ["likelihood", f.model, "--images", f.images, "--labels", f.labels, "--limit", "9"]
        for k in 0..<3 { XCTAssertEqual(try tarflow(lik + ["--save", path("a.safetensors"), "--shard", "\(k)/3", "--seed", "1"]).status, 0) }
        func part(_ k: Int, _ name: String = "a", n: Int = 3) -> String { path("\(name).shard-\(k)-of-\(n).safetensors") }
        // Other seed, other model, other flags, other shard count.
        XCTAssertEqual(try tarflow(lik + ["--save", path("seed.safetensors"), "--shard", "1/3", "--seed", "2"]).status, 0)
        let other = path("other.tflow")
        try ModelFile.write(try TinyModels.model(classes: 3, noiseStd: 0.2), to: URL(fileURLWithPath: other))
        XCTAssertEqual(try tarflow(["likelihood", other, "--images", f.images, "--labels", f.labels, "--limit", "9", "--save", path("model.safetensors"), "--shard", "1/3", "--seed", "1"]).status, 0)
        XCTAssertEqual(try tarflow(["likelihood", f.model, "--images", f.images, "--limit", "9", "--save", path("flags.safetensors"), "--shard", "1/3", "--seed", "1"]).status, 0)
        XCTAssertEqual(try tarflow(lik + ["--save", path("four.safetensors"), "--shard", "1/4", "--seed", "1"]).status, 0)
        let cases: [([String], String)] = [
            ([part(0), part(2)], "gap: no part holds images 3..<6"),
            ([part(0), part(1)], "gap: no part holds images 6..<9"),
            ([part(1), part(2)], "gap: no part holds images 0..<3"),
            ([part(0), part(1), part(1), part(2)], "overlap"),
            ([part(0), part(1, "seed"), part(2)], "differ in seed (1 vs 2)"),
            ([part(0), part(1, "model"), part(2)], "differ in model"),
            ([part(0), part(1, "flags"), part(2)], "differ in --labels"),
            ([part(0), part(1, "four", n: 4), part(2)], "differ in shard count (3 vs 4)"),
            ([path("missing.safetensors")], "no such file"),
        ]
        let out = path("merged.safetensors")
        for (parts, message) in cases {
            let r = try tarflow(["merge", out] + parts)
            XCTAssertEqual(r.status, 1, "\(parts): \(r.err)")
            XCTAssertTrue(r.err.hasPrefix("error: ") && r.err.contains(message), "\(message): \(r.err)")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
        // A file that is not a part: the unsharded output has no run record.
        XCTAssertEqual(try tarflow(lik + ["--save", path("plain.safetensors")]).status, 0)
        let r = try tarflow(["merge", out, path("plain.safetensors")])
        XCTAssertTrue(r.status == 1 && r.err.contains("no run record"), r.err)
        // Other flags of sample name the flag.
        for (k, g) in [(0, "1"), (1, "2")] {
            XCTAssertEqual(try tarflow(["sample", f.model, "--count", "4", "--label", "1", "--guidance", g, "-o", path("g\(g).npy"), "--shard", "\(k)/2", "--quiet"]).status, 0)
        }
        let g = try tarflow(["merge", path("g.npy"), path("g1.shard-0-of-2.npy"), path("g2.shard-1-of-2.npy")])
        XCTAssertTrue(g.status == 1 && g.err.contains("differ in --guidance (1.0 vs 2.0)"), g.err)
    }

    func testBadShardFlagsAreOneLineErrors() throws {
        let f = try fixtures()
        let out = path("keep.npy")
        try Data("precious".utf8).write(to: URL(fileURLWithPath: out))
        for (extra, message) in [(["--shard", "4/4"], "K must be in 0...3"), (["--shard", "0/0"], "at least 1"), (["--shard", "x"], "expected K/N"),
                                 (["--shard", "1/2", "--shards", "2"], "--shards goes with --shard auto"), (["--shards", "2"], "--shards goes with --shard auto"),
                                 (["--shard", "0/21"], "gets none of the 13 image(s)")] {
            for args in [["classify", f.model, "--images", f.images, "--save", out], ["likelihood", f.model, "--images", f.images],
                         ["sample", f.model, "--count", "13", "-o", out, "--quiet"]] {
                let r = try tarflow(args + extra)
                XCTAssertEqual(r.status, 1, "\(args + extra)")
                XCTAssertTrue(r.err.contains(message), "\(extra): \(r.err)")
                XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
            }
        }
        let d = try tarflow(["sample", f.model, "--count", "4", "--denoise", "-o", out, "--quiet", "--shard", "0/2"])
        XCTAssertTrue(d.status == 1 && d.err.contains("--denoise cannot be sharded"), d.err)
        XCTAssertEqual(try bytes(out), Data("precious".utf8))
    }
}
