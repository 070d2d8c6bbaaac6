import FlowIR

/// Errors of the TarFlow layer (the one error type it throws, besides the lower layers' own);
/// each says what to do. A file that cannot be read or written is the case of its format,
/// carrying the kind of failure and the path (`NPYFailure`, `PNGFailure`, ...); every other case
/// carries a closed failure too (`ConfigFailure`, `ModelFailure`, `StateDictFailure`,
/// `InputFailure`, `NonFiniteResult`), so no caller has to read the text.
public enum TarFlowError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A config (JSON file, model metadata, inferred from a checkpoint) breaks a constraint.
    case invalidConfig(ConfigFailure)
    /// A model file's metadata, tensors and graphs are not those of a TarFlow model.
    case invalidModel(ModelFailure)
    /// A checkpoint's state dict is not one of the official model.
    case invalidCheckpoint(StateDictFailure)
    /// An argument, option or input file does not fit the model or the command.
    case invalidInput(InputFailure)
    /// A result (latent, log-determinant, bits/dim, loss, image) came out NaN or infinite.
    case nonFinite(NonFiniteResult)
    /// The run needs more memory than the process may use (refused by the preflight).
    case insufficientMemory(MemoryShortfall)
    /// A checkpoint (`.pth`, `.safetensors`) could not be read.
    case checkpoint(CheckpointFailure)
    /// A `.npy` array could not be read or written.
    case npy(NPYFailure)
    /// A `.npz` archive could not be read or written.
    case npz(NPZFailure)
    /// A PNG image could not be read or written.
    case png(PNGFailure)
    /// An IDX (MNIST) file could not be read.
    case idx(IDXFailure)
    /// A safetensors file could not be written.
    case safetensorsWriter(SafetensorsWriterFailure)

    public var description: String {
        switch self {
        case .invalidConfig(let f): "invalid config: \(f)"
        case .invalidModel(let f): "invalid model: \(f)"
        case .invalidCheckpoint(let f): "invalid checkpoint: \(f)"
        case .invalidInput(let f): "invalid input: \(f)"
        case .nonFinite(let r): "non-finite result: \(r)"
        // These name their file or their shortfall themselves.
        case let .insufficientMemory(f as any CustomStringConvertible), let .checkpoint(f as any CustomStringConvertible),
             let .npy(f as any CustomStringConvertible), let .npz(f as any CustomStringConvertible),
             let .png(f as any CustomStringConvertible), let .idx(f as any CustomStringConvertible),
             let .safetensorsWriter(f as any CustomStringConvertible):
            f.description
        }
    }
}
