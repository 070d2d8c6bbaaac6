import FlowIR

/// An argument, option or input file that the model or the command cannot take
/// (`TarFlowError.invalidInput`): the kind says what is wrong, with the flag, value, index or
/// path as data; `file` is the file concerned when the message starts with it.
public typealias InputFailure = FileFailure<InputFailureKind>

/// What is wrong with an argument, option or input file.
public enum InputFailureKind: Sendable, Equatable, CustomStringConvertible {
    /// A part of a `.safetensors` file this project reads back that is missing or malformed.
    public enum SafetensorsDamage: Sendable, Equatable, CustomStringConvertible {
        case shorterThanHeaderLength(bytes: Int)
        case headerLength(Int)
        case headerNotObject
        case entryNotObject(name: String)
        case entryFieldsMissing(name: String)
        case entryDType(name: String, dtype: String)
        case entryShape(name: String)
        case entryOffsets(name: String, begin: Int, end: Int, shape: [Int], dtype: String)

        public var description: String {
            switch self {
            case let .shorterThanHeaderLength(bytes): "\(bytes) bytes, shorter than the header length"
            case let .headerLength(n): "header length \(n) does not fit the file"
            case .headerNotObject: "the header is not a JSON object"
            case let .entryNotObject(name): "entry '\(name)' is not an object"
            case let .entryFieldsMissing(name): "entry '\(name)' lacks dtype, shape or data_offsets"
            case let .entryDType(name, dtype): "entry '\(name)' has dtype \(dtype), not one this project writes"
            case let .entryShape(name): "entry '\(name)' has a bad shape"
            case let .entryOffsets(name, begin, end, shape, dtype): "entry '\(name)': data_offsets [\(begin), \(end)] do not match shape \(shape) of \(dtype)"
            }
        }
    }

    // MARK: Compile lists and options
    /// A batch size of a `--batch` list is below 1.
    case batchNotPositive(Int)
    /// An entry of a `--batch` list is not a whole number in range.
    case batchNotWhole(String)
    /// A batch size list is empty or has a size out of range.
    case batchesOutOfRange([Int])
    /// An entry of a `--functions` list is not a function name.
    case unknownFunction(String)
    /// `--profile` of a decode step split between threads.
    case profileSplitDecode(batch: Int)

    // MARK: Sampling
    /// Prior noise has element type `dtype`, not float32.
    case noiseDType(DType)
    /// Prior noise has `shape`, not (B, tokens, patchDim) with B > 0.
    case noiseShape(shape: [Int], tokens: Int, patchDim: Int)
    /// Prior noise element `element` is `value` (NaN or infinite).
    case noiseNotFinite(element: Int, value: Float)
    /// `option` (guidance, temperature) is `value`, not a finite number >= 0.
    case notFiniteNonNegative(option: String, value: Float)
    /// `option` (attention temperature) is `value`, not a finite number > 0.
    case notFinitePositive(option: String, value: Float)
    /// `options` shape the guided branch only, and guidance (`guidanceOption`) is 0.
    case needsGuidance(options: [String], guidanceOption: String)
    /// `option` (the KV cache) is `dtype`, neither f32 nor f16.
    case kvCacheDType(option: String, dtype: DType)

    // MARK: Images and labels
    /// Labels for a model without classes.
    case labelsForUnconditional
    /// `classify` on a model without classes.
    case unconditionalClassify
    /// The model records no noise level and none was given.
    case noNoiseLevel
    /// The noise level `value` is not a finite number >= 0.
    case noiseStd(Double)
    /// An image tensor of `shape` (or not float32), not [B, channels, size, size].
    case imageTensorShape(shape: [Int], channels: Int, size: Int)
    /// An image array of a file has `shape`, not (B, channels, size, size) (or (B, size, size) for one channel).
    case imageArrayShape(shape: [Int], channels: Int, size: Int)
    /// Images of `channels`x`size`x`size`; the model takes `expectedChannels`x`expectedSize`x`expectedSize`.
    case imageGeometry(channels: Int, size: Int, expectedChannels: Int, expectedSize: Int)
    /// An empty batch.
    case noImages
    /// Image `image` holds a NaN or an infinity (at `element` of the image, when known).
    case imageNotFinite(image: Int, element: Int?)
    /// An image array has element type `dtype`, not float32, float64 or uint8.
    case imageDType(DType)
    /// `labels` labels for `images` images.
    case labelCount(labels: Int, images: Int)
    /// Label `label` is outside 0..<classes and not -1.
    case labelOutOfRange(label: Int, classes: Int)
    /// A labels array of `shape`, not one-dimensional.
    case labelsRank(shape: [Int])
    /// A labels array of element type `dtype`, not an integer type.
    case labelsDType(DType)
    /// A batch size below 1.
    case batchSizeNotPositive(Int)
    /// Image `range` is outside the `count` images.
    case rangeOutside(range: Range<Int>, count: Int)
    /// The path is not a file or folder.
    case noSuchFileOrFolder
    /// The file is none of the image formats.
    case unknownImageFormat
    /// `--labels-from-folders` on a folder without subfolders.
    case noClassFolders
    /// Class folder `folder` has no images.
    case emptyClassFolder(String)
    /// The folder has no images.
    case noImageFiles
    /// The folder has more images than memory can index.
    case tooManyImages
    /// Image `path` (in the folder) has `channels`, the model `expected`.
    case imageChannels(path: String, channels: Int, expected: Int)
    /// Image `path` (in the folder) is `width`x`height`, the model takes `size`x`size`.
    case imageSize(path: String, width: Int, height: Int, size: Int)
    /// `path` does not start as a JPEG file does.
    case notJPEG(path: String)
    /// libjpeg refused the file (its message, empty if it gave none).
    case undecodableJPEG(detail: String)

    // MARK: Files
    /// The file could not be read (`reason` as the system says it).
    case cannotRead(reason: String)
    /// A config file of `bytes` bytes, more than a config can be.
    case configTooLarge(bytes: Int)
    /// A file to digest could not be mapped.
    case cannotDigest(reason: String)

    // MARK: Shards
    /// `--shard index/count` with count < 1.
    case shardCount(index: Int, count: Int)
    /// `--shard index/count` with index outside 0..<count.
    case shardIndex(index: Int, count: Int)
    /// `--shard spec` is neither K/N nor auto.
    case shardSpec(String)
    /// `--shards` beside `--shard spec` (which gives the count).
    case shardsBesideCount(spec: String)
    /// `--shards` below 1.
    case shardsNotPositive(Int)
    /// Environment variable `name` is `value`, not a non-negative integer.
    case environmentNotInteger(name: String, value: String)
    /// SLURM_ARRAY_TASK_ID without a count or min/max.
    case slurmWithoutCount
    /// The Slurm task is not one of a contiguous array.
    case slurmTaskOutside(task: Int, count: Int, min: Int, step: Int)
    /// `--shards` disagrees with the Slurm array's task count.
    case shardsDisagreeWithSlurm(shards: Int, tasks: Int)
    /// A Kubernetes Indexed Job without `--shards`.
    case kubernetesWithoutShards
    /// `--shard auto` outside a job array.
    case noJobArray
    /// A run record that does not decode (the decoder's words).
    case invalidRunRecord(detail: String)
    /// A run record of another format version.
    case runRecordFormat(String)
    /// A run record whose numbers do not fit together.
    case inconsistentRunRecord(RunRecord)

    // MARK: Merging parts
    /// A part whose extension is not a part format.
    case notAPartFormat
    /// The part does not exist.
    case noSuchFile
    /// A `.npy` part with `count` arrays.
    case npyArrayCount(Int)
    /// The sidecar `name` of a `.npy` part is missing.
    case missingSidecar(name: String)
    /// A `.npz` part without its run record member.
    case missingRecordMember
    /// A `.safetensors` part without its run record metadata.
    case missingRecordMetadata
    /// No parts.
    case noParts
    /// Parts of two formats.
    case mixedFormats(path: String, format: PartFormat, firstPath: String, firstFormat: PartFormat)
    /// Parts of two runs: they differ in `field`.
    case differentRuns(path: String, firstPath: String, field: String)
    /// No part holds images `from..<to` of the run `run`; shards `missing` of `shards` are absent.
    case gap(from: Int, to: Int, run: Range<Int>, missing: [Int], shards: Int)
    /// Two parts hold some of the same images.
    case overlap(path: String, record: RunRecord, otherPath: String, other: RunRecord)
    /// Parts with different arrays.
    case differentArrays(path: String, names: [String], firstPath: String, firstNames: [String])
    /// Array `name` of part `path` has `shape`, not `rows` rows (images `images`).
    case rowCount(path: String, name: String, shape: [Int], rows: Int, images: Range<Int>)
    /// Array `name` of part `path` differs in element type or row shape from the first part's.
    case arrayMismatch(path: String, name: String, dtype: DType, shape: [Int], firstDType: DType, firstShape: [Int])
    /// A `.safetensors` file this project wrote is incomplete.
    case incompleteSafetensors(SafetensorsDamage)

    // MARK: Converter geometry flags
    /// `flag` is `value`, outside `range`.
    case flagOutOfRange(flag: String, value: Int, range: ClosedRange<Int>)
    /// `--image-size` is not a multiple of the `side`x`side` patch grid.
    case imageSizeNotGridMultiple(imageSize: Int, side: Int)
    /// `--in-channels` does not divide the patch dimension.
    case inChannelsNotDividing(inChannels: Int, patchDim: Int)
    /// `--in-channels` leaves a patch dimension that is not a square.
    case inChannelsNotSquare(inChannels: Int, patchDim: Int)
    /// The checkpoint does not fix C, p and H, and no flag does.
    case geometryUnderdetermined(patchDim: Int, tokens: Int)
    /// Patch size `patchSize` does not fit the patch dimension.
    case patchSizeNotFitting(patchSize: Int, patchDim: Int)
    /// `--patch-size` differs from what the other flags imply.
    case patchSizeDisagrees(given: Int, implied: Int)
    /// `--image-size` differs from what the patch size and tokens imply.
    case imageSizeDisagrees(given: Int, patchSize: Int, tokens: Int, implied: Int)
    /// `--in-channels` differs from what the patch size and patch dimension imply.
    case inChannelsDisagrees(given: Int, patchSize: Int, patchDim: Int, implied: Int)

    static let noRecord = "carries no run record, so it is not the part of a sharded run (write parts with --shard)"

    public var description: String {
        switch self {
        case let .batchNotPositive(b): "batch size \(b) must be positive (give a list like 1,16,64)"
        case let .batchNotWhole(p): "batch size '\(p)' is not a whole number in 1...\(Int32.max / 2) (give a list like 1,16,64)"
        case let .batchesOutOfRange(batches): "batch sizes must lie in 1...\(Int32.max / 2), are \(batches)"
        case let .unknownFunction(t):
            "unknown function '\(t)'; choose from \(AheadOfTime.Function.allCases.map(\.rawValue).joined(separator: ", "))"
        case let .profileSplitDecode(batch):
            "--profile: at batch \(batch) the decode step is split between threads, whose ops run at once; profile with --threads 1"

        case let .noiseDType(dtype): "noise must be float32, is \(dtype.rawValue)"
        case let .noiseShape(shape, t, d): "noise must have shape (B, \(t), \(d)) with B > 0, has \(shape)"
        case let .noiseNotFinite(i, v): "element \(i) is \(v); noise must be finite"
        case let .notFiniteNonNegative(option, v): "\(option) \(v) must be a finite number >= 0"
        case let .notFinitePositive(option, v): "\(option) \(v) must be a finite number > 0"
        case let .needsGuidance(given, guidance):
            "\(given.joined(separator: ", ")) act\(given.count == 1 ? "s" : "") only with guidance > 0; add \(guidance) W (W > 0) or leave \(given.count == 1 ? "it" : "them") out"
        case let .kvCacheDType(option, dtype): "the \(option) can be f32 or f16, not \(dtype)"

        case .labelsForUnconditional: "labels were given but the model is unconditional (num_classes = 0)"
        case .unconditionalClassify: "the model is unconditional (num_classes = 0); it cannot classify"
        case .noNoiseLevel: "the model records no training noise level: pass --noise-std σ"
        case let .noiseStd(sigma): "noise std must be a finite number >= 0, is \(sigma)"
        case let .imageTensorShape(shape, c, s): "images have shape \(shape); this model takes [B, \(c), \(s), \(s)] float32"
        case let .imageArrayShape(shape, c, s): "images have shape \(shape); the model takes (B, \(c), \(s), \(s))" + (c == 1 ? " or (B, \(s), \(s))" : "")
        case let .imageGeometry(c, s, ec, es): "images are \(c)x\(s)x\(s); the model takes \(ec)x\(es)x\(es)"
        case .noImages: "no images"
        case let .imageNotFinite(image, element): "image \(image) contains NaN or Inf" + (element.map { " at element \($0)" } ?? "")
        case let .imageDType(dtype): "images must be float32, float64 or uint8, are \(dtype.rawValue)"
        case let .labelCount(labels, images): "\(labels) labels for \(images) images"
        case let .labelOutOfRange(label, classes): "label \(label) is out of range: use 0...\(classes - 1), or -1 for no label"
        case let .labelsRank(shape): "labels must be 1-D, have shape \(shape)"
        case let .labelsDType(dtype): "labels must be int64 or int32, are \(dtype.rawValue)"
        case let .batchSizeNotPositive(b): "batch size must be positive, is \(b)"
        case let .rangeOutside(r, count): "range \(r.lowerBound)..<\(r.upperBound) is outside the \(count) images"
        case .noSuchFileOrFolder: "no such file or folder"
        case .unknownImageFormat: "unknown image format; give a .npy file, a folder of PNG/JPEG files, or an MNIST IDX file"
        case .noClassFolders: "--labels-from-folders: the folder has no subfolders (one per class)"
        case let .emptyClassFolder(folder): "class folder '\(folder)' has no .png, .jpg or .jpeg files"
        case .noImageFiles: "the folder has no .png, .jpg or .jpeg files"
        case .tooManyImages: "too many images"
        case let .imageChannels(path, c, expected): "\(path) has \(c) channel(s) after dropping alpha; the model takes \(expected)"
        case let .imageSize(path, w, h, s): "\(path) is \(w)x\(h); the model takes \(s)x\(s) (--resize scales and crops to it)"
        case let .notJPEG(path): "\(path) is not a JPEG file (missing the FF D8 FF start)"
        case let .undecodableJPEG(detail): "cannot decode JPEG: \(detail.isEmpty ? "libjpeg failed" : detail)"

        case let .cannotRead(reason): "cannot read: \(reason)"
        case let .configTooLarge(bytes): "\(bytes) bytes is too large for a config"
        case let .cannotDigest(reason): "cannot read it to digest it (\(reason))"

        case let .shardCount(k, n): "--shard \(k)/\(n): the shard count N must be at least 1"
        case let .shardIndex(k, n): "--shard \(k)/\(n): K must be in 0...\(n - 1) (shards are numbered from 0)"
        case let .shardSpec(spec): "--shard \(spec): expected K/N (e.g. 0/4, 0-based) or auto"
        case let .shardsBesideCount(spec): "--shards goes with --shard auto; --shard \(spec) already gives the count"
        case let .shardsNotPositive(s): "--shards \(s) must be at least 1"
        case let .environmentNotInteger(name, value): "--shard auto: \(name)=\(value) is not a non-negative integer"
        case .slurmWithoutCount:
            "--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX; submit with sbatch --array=0-(N-1)"
        case let .slurmTaskOutside(task, n, low, step):
            "--shard auto: task \(task) of an array of \(n) (min \(low), step \(step)) is not one of a contiguous range; submit with sbatch --array=0-\(max(n - 1, 0))"
        case let .shardsDisagreeWithSlurm(s, n): "--shards \(s) disagrees with the Slurm array's \(n) tasks; drop --shards"
        case .kubernetesWithoutShards: "--shard auto in a Kubernetes Indexed Job needs --shards N (the Job's completions)"
        case .noJobArray:
            "--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX (Kubernetes Indexed Job) is set; run inside one, or give --shard K/N"
        case let .invalidRunRecord(detail): "the run record is not valid (\(detail)); was the part written by `tarflow ... --shard`?"
        case let .runRecordFormat(format): "run record format '\(format)' is not \(RunRecord.currentFormat); write the parts again with this version"
        case let .inconsistentRunRecord(r):
            "the run record is inconsistent (shard \(r.shard)/\(r.shards), images \(r.start)..<\(r.end) of \(r.runStart)..<\(r.runEnd))"

        case .notAPartFormat: "only .npy, .npz and .safetensors parts can be merged"
        case .noSuchFile: "no such file"
        case let .npyArrayCount(n): "a .npy file holds one array, not \(n)"
        case let .missingSidecar(name): "\(name) is missing; the part \(Self.noRecord)"
        case .missingRecordMember: "no member \(ShardMerge.npzRecordMember); the part \(Self.noRecord)"
        case .missingRecordMetadata: "no '\(ShardMerge.safetensorsRecordKey)' in __metadata__; the part \(Self.noRecord)"
        case .noParts: "merge: give at least one part"
        case let .mixedFormats(path, format, firstPath, firstFormat):
            "\(path) is .\(format.rawValue) but \(firstPath) is .\(firstFormat.rawValue); merge parts of one output at a time"
        case let .differentRuns(path, firstPath, field): "\(path) and \(firstPath) are parts of different runs: they differ in \(field)"
        case let .gap(from, to, run, missing, shards):
            "gap: no part holds images \(from)..<\(to) of the run's \(run.lowerBound)..<\(run.upperBound)"
                + " (shard\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) of \(shards) missing?)"
        case let .overlap(path, r, otherPath, q):
            "overlap: \(path) (images \(r.start)..<\(r.end), shard \(r.shard)/\(r.shards)) and \(otherPath) (images \(q.start)..<\(q.end), shard \(q.shard)/\(q.shards)) share images; give each shard once"
        case let .differentArrays(path, names, firstPath, firstNames):
            "\(path) holds arrays \(names), \(firstPath) holds \(firstNames); write the parts again with one version"
        case let .rowCount(path, name, shape, rows, images):
            "\(Self.label(path, name)) has shape \(shape) but the part holds \(rows) image(s) (\(images.lowerBound)..<\(images.upperBound)); the file is damaged"
        case let .arrayMismatch(path, name, dtype, shape, firstDType, firstShape):
            "\(Self.label(path, name)) is \(dtype.rawValue) \(shape), the first part's is \(firstDType.rawValue) \(firstShape)"
        case let .incompleteSafetensors(damage): "\(damage); the file is not a complete safetensors file"

        case let .flagOutOfRange(flag, v, r): "\(flag) \(v) is out of range: use \(r.lowerBound)...\(r.upperBound)"
        case let .imageSizeNotGridMultiple(img, side): "--image-size \(img) is not a multiple of the \(side)x\(side) patch grid"
        case let .inChannelsNotDividing(c, d): "--in-channels \(c) does not divide the patch dimension \(d)"
        case let .inChannelsNotSquare(c, d): "--in-channels \(c): patch dimension \(d) / \(c) is not a square"
        case let .geometryUnderdetermined(d, t):
            "the checkpoint fixes C·p² = \(d) and (H/p)² = \(t) but not C, p and H: pass one of --image-size, --in-channels, --patch-size"
        case let .patchSizeNotFitting(p, d): "patch size \(p) does not fit the patch dimension \(d) = C·p²"
        case let .patchSizeDisagrees(x, p): "--patch-size \(x) disagrees with the other flags (they imply \(p))"
        case let .imageSizeDisagrees(x, p, t, img): "--image-size \(x) disagrees: with patch size \(p) the checkpoint's \(t) tokens make \(img)px images"
        case let .inChannelsDisagrees(x, p, d, c): "--in-channels \(x) disagrees: with patch size \(p) the patch dimension \(d) means \(c) channels"
        }
    }

    /// A part's array as messages name it: the path, and the array's name when it has one.
    static func label(_ path: String, _ name: String) -> String { name.isEmpty ? path : "\(path): '\(name)'" }
}
