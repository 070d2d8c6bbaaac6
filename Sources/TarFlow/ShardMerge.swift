import Foundation
import FlowIR

/// The file formats a shard's part can have, and that `tarflow merge` joins.
public enum PartFormat: String, Sendable, CaseIterable {
    case npy, npz, safetensors

    public init(path: String) throws {
        guard let f = PartFormat(rawValue: URL(fileURLWithPath: path).pathExtension.lowercased()) else {
            throw TarFlowError.invalidInput(.notAPartFormat, file: path)
        }
        self = f
    }
}

/// Writing the parts of a sharded run and joining them back: arrays are concatenated along
/// their first (image) axis in index order, and the result is byte for byte the file the
/// unsharded run writes (same writer, same tensor order, no run record).
public enum ShardMerge {
    /// The member of an `.npz` part that holds its run record.
    public static let npzRecordMember = "tarflow_run.json"
    /// The `__metadata__` key of a safetensors part that holds its run record.
    public static let safetensorsRecordKey = "tarflow.run"

    /// Where the run record of an `.npy` part lives.
    public static func sidecar(of path: String) -> URL { URL(fileURLWithPath: path + ".run.json") }

    /// Writes `arrays` to `url` in the format its extension names; with a record (a shard's part)
    /// the record goes with it, without one the file is what the unsharded command writes.
    public static func write(_ arrays: [(name: String, array: Tensor)], record: RunRecord?, to url: URL) throws {
        switch try PartFormat(path: url.path) {
        case .npy:
            guard arrays.count == 1 else { throw TarFlowError.invalidInput(.npyArrayCount(arrays.count), file: url.path) }
            try NPY.write(arrays[0].array, to: url)
            if let record { try writeAtomically(Array(record.json().utf8), to: sidecar(of: url.path)) }
        case .npz:
            try NPZ.write(arrays: arrays, extra: record.map { [(npzRecordMember, Array($0.json().utf8))] } ?? [], to: url)
        case .safetensors:
            try SafetensorsWriter.write(arrays, to: url, metadata: record.map { [safetensorsRecordKey: $0.json()] } ?? [:])
        }
    }

    /// One part as read back: its arrays (in file order) and its run record.
    public struct Part: Sendable {
        public var path: String
        public var format: PartFormat
        public var arrays: [(name: String, array: Tensor)]
        public var record: RunRecord
    }

    public static func read(_ path: String) throws -> Part {
        let url = URL(fileURLWithPath: path)
        guard FileManager.default.fileExists(atPath: path) else { throw TarFlowError.invalidInput(.noSuchFile, file: path) }
        let format = try PartFormat(path: path)
        switch format {
        case .npy:
            let side = sidecar(of: path)
            guard FileManager.default.fileExists(atPath: side.path) else {
                throw TarFlowError.invalidInput(.missingSidecar(name: side.lastPathComponent), file: path)
            }
            let text = String(decoding: try readFileBytes(at: side, maxBytes: 1 << 20), as: UTF8.self)
            return Part(path: path, format: format, arrays: [("", try NPY.read(contentsOf: url))], record: try RunRecord.parse(text, source: side.path))
        case .npz:
            let (arrays, other) = try NPZ.readArrays(contentsOf: url)
            guard let r = other.first(where: { $0.name == npzRecordMember }) else {
                throw TarFlowError.invalidInput(.missingRecordMember, file: path)
            }
            return Part(path: path, format: format, arrays: arrays, record: try RunRecord.parse(String(decoding: r.bytes, as: UTF8.self), source: path))
        case .safetensors:
            let (arrays, metadata) = try SafetensorsReader.read(contentsOf: url)
            guard let text = metadata[safetensorsRecordKey] else {
                throw TarFlowError.invalidInput(.missingRecordMetadata, file: path)
            }
            return Part(path: path, format: format, arrays: arrays, record: try RunRecord.parse(text, source: path))
        }
    }

    /// The joined run: arrays in the parts' order and the record fields they share.
    public struct Merged: Sendable {
        public var format: PartFormat
        public var arrays: [(name: String, array: Tensor)]
        public var record: RunRecord
        /// Images of the whole run.
        public var count: Int { record.runEnd - record.runStart }
        /// Correct predictions over the run, when every part counted them.
        public var correct: Int?
    }

    /// Checks that the parts are of one run and tile its images exactly, then concatenates.
    public static func merge(_ input: [Part]) throws -> Merged {
        guard let first = input.first else { throw TarFlowError.invalidInput(.noParts) }
        for p in input.dropFirst() {
            guard p.format == first.format else {
                throw TarFlowError.invalidInput(.mixedFormats(path: p.path, format: p.format, firstPath: first.path, firstFormat: first.format))
            }
            if let field = difference(first.record, p.record) {
                throw TarFlowError.invalidInput(.differentRuns(path: p.path, firstPath: first.path, field: field))
            }
        }
        let parts = input.sorted { ($0.record.start, $0.record.end, $0.record.shard) < ($1.record.start, $1.record.end, $1.record.shard) }
        var at = first.record.runStart
        var previous: Part?
        for p in parts {
            let r = p.record
            if r.start > at {
                throw TarFlowError.invalidInput(.gap(from: at, to: r.start, run: r.runStart..<r.runEnd, missing: missingShards(parts), shards: r.shards))
            }
            if r.start < at, let q = previous {
                throw TarFlowError.invalidInput(.overlap(path: p.path, record: r, otherPath: q.path, other: q.record))
            }
            at = r.end
            previous = p
        }
        if at < first.record.runEnd {
            throw TarFlowError.invalidInput(.gap(from: at, to: first.record.runEnd, run: first.record.runStart..<first.record.runEnd,
                                                 missing: missingShards(parts), shards: first.record.shards))
        }

        // The same arrays in every part, each with one row per image.
        let names = first.arrays.map(\.name)
        var columns: [[Tensor]] = names.map { _ in [] }
        for p in parts {
            guard p.arrays.map(\.name) == names else {
                throw TarFlowError.invalidInput(.differentArrays(path: p.path, names: p.arrays.map(\.name), firstPath: first.path, firstNames: names))
            }
            let rows = p.record.end - p.record.start
            for (i, (name, a)) in p.arrays.enumerated() {
                guard a.shape.first == rows else {
                    throw TarFlowError.invalidInput(.rowCount(path: p.path, name: name, shape: a.shape, rows: rows, images: p.record.start..<p.record.end))
                }
                let f = first.arrays[i].array
                guard a.dtype == f.dtype, Array(a.shape.dropFirst()) == Array(f.shape.dropFirst()) else {
                    throw TarFlowError.invalidInput(.arrayMismatch(path: p.path, name: name, dtype: a.dtype, shape: a.shape, firstDType: f.dtype, firstShape: f.shape))
                }
                columns[i].append(a)
            }
        }
        var record = first.record
        record.shard = 0
        record.shards = 1
        record.start = record.runStart
        record.end = record.runEnd
        let counted = parts.allSatisfy { $0.record.correct != nil }
        record.correct = nil
        return Merged(format: first.format, arrays: zip(names, columns).map { ($0, concatenate($1)) }, record: record,
                      correct: counted ? parts.reduce(0) { $0 + ($1.record.correct ?? 0) } : nil)
    }

    /// Shards numbered in the record that no part is.
    static func missingShards(_ parts: [Part]) -> [Int] {
        let have = Set(parts.map(\.record.shard))
        return (0..<(parts.first?.record.shards ?? 0)).filter { !have.contains($0) }
    }

    /// The first run field in which two records differ, named for the message; nil when the
    /// records describe the same run (they may differ in shard and image range only).
    public static func difference(_ a: RunRecord, _ b: RunRecord) -> String? {
        if a.command != b.command { return "command (\(a.command) vs \(b.command))" }
        if a.output != b.output { return "output (\(a.output) vs \(b.output))" }
        if a.model != b.model { return "model (\(a.model) vs \(b.model))" }
        if a.seed != b.seed { return "seed (\(a.seed.map(String.init) ?? "none") vs \(b.seed.map(String.init) ?? "none"))" }
        for key in Set(a.parameters.keys).union(b.parameters.keys).sorted() where a.parameters[key] != b.parameters[key] {
            return "\(key) (\(a.parameters[key] ?? "not given") vs \(b.parameters[key] ?? "not given"))"
        }
        if a.shards != b.shards { return "shard count (\(a.shards) vs \(b.shards))" }
        if a.runStart != b.runStart || a.runEnd != b.runEnd {
            return "the run's images (\(a.runStart)..<\(a.runEnd) vs \(b.runStart)..<\(b.runEnd))"
        }
        if (a.correct == nil) != (b.correct == nil) { return "true labels (one part counted correct predictions, the other did not)" }
        return nil
    }

    /// Arrays of one element type and trailing shape, stacked along axis 0.
    static func concatenate(_ arrays: [Tensor]) -> Tensor {
        let rows = arrays.reduce(0) { $0 + ($1.shape.first ?? 0) }
        let shape = [rows] + Array(arrays[0].shape.dropFirst())
        let bytes = arrays.flatMap { $0.littleEndianBytes() }
        return bytes.withUnsafeBytes { Tensor(shape: shape, dtype: arrays[0].dtype, decoding: $0) }
    }
}

/// Reads the safetensors files this project writes (any of its element types: F32, F64, U8,
/// I32, I64) with their `__metadata__`, arrays in data order, which is the order
/// `SafetensorsWriter` was given them. (Checkpoints go through `CheckpointSafetensors`.)
public enum SafetensorsReader {
    public static func read(contentsOf url: URL) throws -> (arrays: [(name: String, array: Tensor)], metadata: [String: String]) {
        func bad(_ d: InputFailureKind.SafetensorsDamage) -> TarFlowError { .invalidInput(.incompleteSafetensors(d), file: url.path) }
        let bytes = try readFileBytes(at: url, maxBytes: NPY.maxFileBytes)
        guard bytes.count >= 8 else { throw bad(.shorterThanHeaderLength(bytes: bytes.count)) }
        var n = 0
        for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
        guard n >= 2, n <= min(CheckpointSafetensors.maxHeaderBytes, bytes.count - 8) else { throw bad(.headerLength(n)) }
        var parser = CheckpointSafetensors.JSONParser(bytes: Array(bytes[8..<(8 + n)]))
        guard let root = try? parser.parseDocument(), case .object(let members) = root else { throw bad(.headerNotObject) }
        let dataStart = 8 + n
        var metadata: [String: String] = [:]
        var entries: [(name: String, begin: Int, array: Tensor)] = []
        for (name, value) in members {
            guard case .object(let fields) = value else { throw bad(.entryNotObject(name: name)) }
            if name == "__metadata__" {
                for (k, v) in fields { if case .string(let s) = v { metadata[k] = s } }
                continue
            }
            func field(_ key: String) -> CheckpointSafetensors.JSONValue? { fields.first { $0.0 == key }?.1 }
            guard case .string(let dtype)? = field("dtype"), case .array(let dims)? = field("shape"),
                  case .array(let offsets)? = field("data_offsets"), offsets.count == 2,
                  case .integer(let begin) = offsets[0], case .integer(let end) = offsets[1] else { throw bad(.entryFieldsMissing(name: name)) }
            guard let element = SafetensorsWriter.readableTypes.first(where: { SafetensorsWriter.dtypeName($0) == dtype }) else {
                throw bad(.entryDType(name: name, dtype: dtype))
            }
            var shape: [Int] = []
            for d in dims { guard case .integer(let v) = d, v >= 0 else { throw bad(.entryShape(name: name)) }; shape.append(v) }
            guard let count = elementCount(shape), count.multipliedReportingOverflow(by: element.byteSize) == (end - begin, false),
                  begin >= 0, begin <= end, end <= bytes.count - dataStart else { throw bad(.entryOffsets(name: name, begin: begin, end: end, shape: shape, dtype: dtype)) }
            let array = bytes.withUnsafeBytes {
                Tensor(shape: shape, dtype: element, decoding: UnsafeRawBufferPointer(rebasing: $0[(dataStart + begin)..<(dataStart + end)]))
            }
            entries.append((name, begin, array))
        }
        let ordered = entries.sorted { ($0.begin, $0.array.byteCount) < ($1.begin, $1.array.byteCount) }
        return (ordered.map { ($0.name, $0.array) }, metadata)
    }
}
