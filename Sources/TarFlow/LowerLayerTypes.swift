import FlowIR
import FlowRuntime

// The few types of the lower layers that TarFlow's API hands out or takes, under their own
// names, so a user of the library (the `tarflow` command among them) imports TarFlow alone.
// Anything else of FlowIR, FlowCompiler and FlowRuntime stays behind TarFlow's functions.

/// A model file's contents: graphs, weights, metadata, compiled functions.
public typealias Model = FlowIR.Model
/// Reads and writes model files (verified on reading, written atomically).
public typealias ModelFile = FlowIR.ModelFile
/// A model whose graphs passed the verifier (`ModelFile.readVerified`, `Model.verified()`): what
/// `AheadOfTime.compile` takes without checking it again.
public typealias VerifiedModel = FlowIR.VerifiedModel
/// Element types of tensors and weights (f32, f16, bf16, i64).
public typealias DType = FlowIR.DType
/// Temporary files of atomic writes, removed on SIGINT/SIGTERM/SIGHUP.
public typealias TemporaryFiles = FlowIR.TemporaryFiles
/// What this process may allocate (RLIMIT_AS, RLIMIT_DATA, cgroup memory.max, RAM).
public typealias MemoryLimit = FlowRuntime.MemoryLimit
