import FlowIR

extension TarFlowError {
    /// A checkpoint could not be read. One line says which file, which tensor / opcode / global,
    /// what is wrong and what to do: the `reason` is a closed case with the sizes, offsets,
    /// names and limits as data, worded once in `Reason.description`.
    public struct CheckpointFailure: Sendable, Equatable, CustomStringConvertible {
        public var reason: Reason
        /// The checkpoint file.
        public var file: String
        /// The tensor, opcode, global or entry concerned, when there is one.
        public var subject: String?

        public init(_ reason: Reason, file: String, subject: String? = nil) {
            self.reason = reason
            self.file = file
            self.subject = subject
        }

        public var kind: Kind { reason.kind }

        public var description: String {
            var text = "checkpoint \(file): "
            if let subject { text += "\(subject): " }
            return text + reason.description
        }

        public enum Kind: String, Sendable {
            /// The file could not be opened or read.
            case unreadableFile
            /// Neither a zip-format `torch.save` archive nor safetensors.
            case unknownFormat
            /// The file ends before the structure it describes.
            case truncated
            /// Zip archive structure is wrong (missing entries, bad sizes, checksum mismatch).
            case malformedArchive
            /// The pickle program is inconsistent (stack underflow, wrong argument types, ...).
            case malformedPickle
            /// The pickle imports a global outside the state_dict allowlist.
            case refusedGlobal
            /// The pickle uses an opcode this restricted reader does not implement.
            case unsupportedOpcode
            /// A safety limit (memo, stack, nesting, sizes) was exceeded.
            case limitExceeded
            /// A tensor uses an element type other than float32/float16/bfloat16/int64.
            case unsupportedDType
            /// A tensor's shape, strides or offsets do not fit its data.
            case malformedTensor
            /// The safetensors JSON header is invalid.
            case malformedHeader
            /// The archive was written on a big-endian machine.
            case bigEndian
            /// The file holds something other than a flat name -> tensor dictionary.
            case notAStateDict
        }

        /// A field of a tensor rebuild call or persistent id that must be an int (or ints).
        public enum PickleField: String, Sendable {
            case storageOffset = "storage_offset"
            case size
            case stride
            case storageNumel = "storage numel"
        }

        /// How a pickle program is inconsistent (`Kind.malformedPickle`); type names are the
        /// Python types (or allowlisted globals) of the values found.
        public enum PickleDamage: Sendable, Equatable, CustomStringConvertible {
            case invalidUTF8
            case stackUnderflow
            case noMark
            case dictKeyType(String)
            case setItemsTarget(String)
            case oddSetItems
            case dictModifiedAfterNesting
            case appendTarget(String)
            case listModifiedAfterNesting
            case memoMissing(Int)
            case notAnInt(PickleField, type: String)
            case notAnIntTuple(PickleField, type: String)
            case tensorStorage(type: String)
            case rankMismatch(size: Int, stride: Int)
            case backwardHooks(type: String)
            case reduceOn(type: String)
            case orderedDictArguments
            case rebuildTensorArguments(Int)
            case rebuildTensorV2Arguments(Int)
            case requiresGrad(type: String)
            /// `torch._utils._rebuild_parameter` (or `_with_state`) called with `count` arguments.
            case parameterArguments(withState: Bool, count: Int)
            case parameterData(withState: Bool, type: String)
            case parameterState(type: String)
            /// A storage class (`global`, e.g. `torch.FloatStorage`) called by REDUCE.
            case storageCalled(global: String)
            case persistentIDShape
            case persistentIDStorageType(type: String)
            case persistentIDKey
            case persistentIDLocation
            case negativeNumel(storage: String, numel: Int)
            case valuesLeftAtStop
            case stackGlobalOperands
            case reduceArguments(type: String)
            case newObj
            case buildTarget(type: String)
            case buildState(type: String)

            public var description: String {
                switch self {
                case .invalidUTF8: "string is not valid UTF-8"
                case .stackUnderflow: "stack underflow"
                case .noMark: "no MARK on the stack"
                case let .dictKeyType(t): "dict key of type \(t) is not supported (only str and int)"
                case let .setItemsTarget(t): "SETITEM(S) target is a \(t), not a dict"
                case .oddSetItems: "SETITEMS with an odd number of values"
                case .dictModifiedAfterNesting: "dict modified after being nested in another value (cycles are not supported)"
                case let .appendTarget(t): "APPEND(S) target is a \(t), not a list"
                case .listModifiedAfterNesting: "list modified after being nested in another value (cycles are not supported)"
                case let .memoMissing(i): "memo entry \(i) was never stored"
                case let .notAnInt(field, t): "\(field.rawValue) is a \(t), expected int"
                case let .notAnIntTuple(field, t): "\(field.rawValue) is a \(t), expected a tuple of ints"
                case let .tensorStorage(t): "tensor storage argument is a \(t), expected a persistent storage id"
                case let .rankMismatch(size, stride): "size has \(size) dimensions but stride has \(stride)"
                case let .backwardHooks(t): "backward_hooks must be an empty OrderedDict, got \(t)"
                case let .reduceOn(t): "REDUCE on a \(t), which is not an allowlisted callable"
                case .orderedDictArguments: "collections.OrderedDict called with arguments"
                case let .rebuildTensorArguments(n): "_rebuild_tensor expects 4 arguments, got \(n)"
                case let .rebuildTensorV2Arguments(n): "_rebuild_tensor_v2 expects 6 or 7 arguments, got \(n)"
                case let .requiresGrad(t): "requires_grad is a \(t), expected bool"
                case let .parameterArguments(withState, n):
                    "\(Self.rebuildParameter(withState)) expects \(withState ? 4 : 3) arguments, got \(n)"
                case let .parameterData(withState, t): "\(Self.rebuildParameter(withState)) data is a \(t), expected tensor"
                case let .parameterState(t): "parameter state must be empty, got \(t)"
                case let .storageCalled(global): "\(global) cannot be called; storages come only from persistent ids"
                case .persistentIDShape: "persistent id is not ('storage', type, key, location, numel)"
                case let .persistentIDStorageType(t): "persistent id storage type is a \(t), expected a torch.*Storage class"
                case .persistentIDKey: "persistent id storage key is not a plain name"
                case .persistentIDLocation: "persistent id location is not a string"
                case let .negativeNumel(key, numel): "storage '\(key)' has negative element count \(numel)"
                case .valuesLeftAtStop: "values left on the stack at STOP"
                case .stackGlobalOperands: "STACK_GLOBAL operands are not strings"
                case let .reduceArguments(t): "REDUCE arguments are a \(t), expected a tuple"
                case .newObj: "NEWOBJ is only supported for collections.OrderedDict()"
                case let .buildTarget(t): "BUILD on a \(t); only OrderedDict state is supported"
                case let .buildState(t): "BUILD state is a \(t), expected a dict"
                }
            }

            static func rebuildParameter(_ withState: Bool) -> String {
                withState ? "torch._utils._rebuild_parameter_with_state" : "torch._utils._rebuild_parameter"
            }
        }

        /// How a safetensors JSON header is invalid (`Reason.invalidJSON`, which carries the offset).
        public enum JSONDamage: Sendable, Equatable, CustomStringConvertible {
            /// The two bracketed sequences: an object's members, an array's items.
            public enum Container: String, Sendable {
                case object
                case array

                /// The byte that closes the sequence.
                var closing: UInt8 { self == .object ? UInt8(ascii: "}") : UInt8(ascii: "]") }
            }

            /// Bytes other than whitespace follow the top-level value.
            case trailingData
            /// Values nested deeper than `limit` levels.
            case tooDeep(limit: Int)
            /// The header ends where a value should start.
            case unexpectedEnd
            case unexpectedCharacter
            case invalidLiteral
            case invalidNumber
            /// An integer literal (`text`) outside the 64-bit range.
            case integerOutOfRange(text: String)
            case expectedKey
            case expectedColon
            /// The header ends inside an object or an array.
            case unterminated(Container)
            /// Neither a comma nor the container's closing bracket after an element.
            case expectedCommaOr(Container)
            case unterminatedString
            case unterminatedEscape
            case invalidUTF8
            case controlCharacter
            case invalidEscape
            case truncatedUnicodeEscape
            case invalidHexDigit
            case unpairedSurrogate
            /// A `\u` escape that names no Unicode scalar.
            case invalidUnicodeEscape

            public var description: String {
                switch self {
                case .trailingData: "unexpected data after the header object"
                case let .tooDeep(limit): "nested deeper than \(limit) levels"
                case .unexpectedEnd: "unexpected end of header"
                case .unexpectedCharacter: "unexpected character"
                case .invalidLiteral: "invalid literal"
                case .invalidNumber: "invalid number"
                case let .integerOutOfRange(text): "integer \(text.prefix(32)) out of range"
                case .expectedKey: "expected a string key"
                case .expectedColon: "expected ':'"
                case let .unterminated(container): "unterminated \(container.rawValue)"
                case let .expectedCommaOr(container): "expected ',' or '\(Character(Unicode.Scalar(container.closing)))'"
                case .unterminatedString: "unterminated string"
                case .unterminatedEscape: "unterminated escape"
                case .invalidUTF8: "string is not valid UTF-8"
                case .controlCharacter: "control character in string"
                case .invalidEscape: "invalid escape"
                case .truncatedUnicodeEscape: "truncated \\u escape"
                case .invalidHexDigit: "invalid hex digit in \\u escape"
                case .unpairedSurrogate: "unpaired surrogate"
                case .invalidUnicodeEscape: "invalid \\u escape"
                }
            }
        }

        /// Why the zip reader (ZIPFoundation) refused an archive or an entry, as data.
        public enum ZipRefusal: Sendable, Equatable, CustomStringConvertible {
            /// No end-of-central-directory record: not a zip archive, or its end is cut off.
            case noEndOfCentralDirectory
            /// An entry's data disagrees with its stored CRC-32.
            case checksum
            /// A system call failed with `errno`.
            case system(errno: Int32)
            /// Another of the reader's errors, by its type and case (e.g. `CompressionError.corruptedData`).
            case other(name: String)

            public var description: String {
                switch self {
                case .noEndOfCentralDirectory: "no end-of-central-directory record"
                case .checksum: "the data disagrees with its CRC-32"
                case let .system(code): "\(FileAccessError.text(errno: code)) (errno \(code))"
                case let .other(name): name
                }
            }
        }

        /// What is wrong, with its data. The `subject` (tensor, entry, opcode) is not repeated here.
        public enum Reason: Sendable, Equatable, CustomStringConvertible {
            // MARK: The file
            case notRegularFile
            /// Opening failed (the system call and errno are in the error).
            case cannotOpen(FileAccessError)
            /// Bytes `offset..<offset+count` lie outside a file of `fileSize` bytes.
            case rangeOutsideFile(offset: Int, count: Int, fileSize: Int)
            case readFailed(FileAccessError)
            case shortRead(got: Int, count: Int, offset: Int)
            /// A pickle without the zip archive around it.
            case barePickle
            /// Neither format; `firstBytes` are up to 8 bytes the file starts with.
            case unknownMagic(firstBytes: [UInt8])

            // MARK: State dict
            /// Tensors `first` and `second` are both `stripped` once `Checkpoint.wrapperPrefixes` are removed.
            case sameNameWithoutPrefixes(first: String, second: String, stripped: String)
            /// `--key` given for a safetensors file.
            case keyForSafetensors
            /// The pickle's result is a `type`, not a dict.
            case pickleNotADict(type: String)
            /// `--key key` names no top-level dict; `candidates` are the entries holding tensors.
            case noSuchEntry(key: String, candidates: [String])
            /// No state dict under `CheckpointUnpickler.stateDictKeys`; `entries` are the first
            /// top-level entries as "key (type)", `candidates` the dicts of tensors.
            case noStateDict(entries: [String], candidates: [String])
            /// More than one of `CheckpointUnpickler.stateDictKeys` holds a state dict.
            case severalStateDicts([String])
            case intKey(Int)
            /// A tensor on `storage` (a torch storage class of an unsupported element type).
            case unsupportedStorage(storage: String)
            case notATensor(type: String)

            // MARK: Zip archive
            /// ZIPFoundation could not open the archive.
            case notAZipArchive(ZipRefusal)
            case duplicateEntry
            /// No `<name>/data.pkl` entry (`prefixes` empty) or several.
            case pickleEntries(prefixes: [String])
            case bigEndian
            case unexpectedByteOrder(String)
            case pickleEntryLost
            case storageEntryMissing(entry: String)
            case entryLargerThanFile(stored: UInt64, fileSize: Int)
            case entrySize(size: Int, declared: Int)
            case entryTooLarge(size: Int, limit: Int)
            case entryRatio(size: Int, stored: UInt64)
            case storedEntrySizes(stored: UInt64, size: Int)
            case entryOverflows(size: Int)
            /// ZIPFoundation could not extract the entry.
            case cannotExtract(ZipRefusal)
            case entryShort(got: Int, size: Int)
            case crcMismatch(computed: UInt32, recorded: UInt32)

            // MARK: Storages and views
            case storageConflict(storage: String, numel: Int, dtype: DType, otherNumel: Int, otherDType: DType)
            case offsetStrideOverflow
            case unusedStorage(storage: String, numel: Int, used: Int)
            case storageByteSizeOverflows
            case storageBytes(storage: String, bytes: Int, declared: Int)
            case elementCountOverflows(shape: [Int])
            case viewOutsideStorage(offset: Int, shape: [Int], stride: [Int], last: Int, storage: String, elements: Int)
            case expandedViewTooLarge(elements: Int, storageElements: Int, limit: Int)

            // MARK: Safetensors
            case headerLengthBeyondFile(length: UInt64, available: Int)
            case headerTooLarge(length: UInt64, limit: Int)
            /// The JSON parser stopped at byte `offset` of the header.
            case invalidJSON(offset: Int, damage: JSONDamage)
            case headerNotObject
            case nameTwice
            case metadataNotObject
            case entryNotObject
            case missingDType
            case unsupportedSafetensorsDType(String)
            case missingShape
            case negativeShape
            case missingDataOffsets
            case offsetsOutsideData(begin: Int, end: Int, dataLength: Int)
            case shapeOverflows(shape: [Int])
            case offsetsSpan(shape: [Int], dtype: DType, bytes: Int, span: Int)
            case offsetsOverlap(begin: Int, end: Int, other: String, otherEnd: Int)

            // MARK: Pickle program
            case malformedPickle(PickleDamage)
            case operandTruncated(needed: Int, remaining: Int)
            case valueTooLong(length: UInt64, limit: Int)
            case lengthPastEnd(length: Int, remaining: Int)
            case unterminatedGlobal
            case globalLineTooLong(limit: Int)
            case stackTooDeep(limit: Int)
            case nestingTooDeep(limit: Int)
            case marksTooDeep(limit: Int)
            case memoTooLarge(limit: Int)
            case refusedGlobal(module: String, name: String)
            case rankTooLarge(PickleField, rank: Int, limit: Int)
            case negativeView(offset: Int, shape: [Int], stride: [Int])
            case sizeOverflows(shape: [Int])
            case viewOverflows(shape: [Int], stride: [Int])
            case viewBeyondStorage(offset: Int, shape: [Int], stride: [Int], last: Int, storage: String, numel: Int)
            case protocolTooNew(UInt64)
            case frameTooLong(UInt64)
            case integerTooWide(bytes: UInt64)
            /// `opcode` is not one this reader implements (a known pickle opcode or not).
            case unsupportedOpcode(UInt8)
            case noStop

            public var kind: Kind { explained.kind }

            public var description: String {
                let e = explained
                return e.hint.map { "\(e.message) (\($0))" } ?? e.message
            }

            private enum Hint {
                static let redownload = "the file is truncated or corrupted; download or save it again"
                static let truncated = "the file is truncated or corrupted"
                static let corrupted = "the checkpoint is corrupted"
                static let torchSave = "pass the file written by torch.save(model.state_dict(), path)"
                static let archive = "the archive is corrupted"
                static let pickle = "the pickle is corrupted or was not written by torch.save(state_dict)"
                static let pickleTruncated = "data.pkl is truncated"
                static let saveAgain = "data.pkl is truncated; save the checkpoint again"
            }

            /// The kind, message and hint of each case, each worded once.
            private var explained: (kind: Kind, message: String, hint: String?) {
                switch self {
                case .notRegularFile: (.unreadableFile, "not a regular file", "pass the checkpoint file itself")
                case let .cannotOpen(e): (.unreadableFile, "cannot open: \(e.reason)", "check the path and permissions")
                case let .rangeOutsideFile(offset, count, size):
                    (.truncated, "needs bytes \(offset)..<\(offset &+ count) but the file has \(size) bytes", Hint.redownload)
                case let .readFailed(e): (.unreadableFile, "read failed: \(e.reason)", nil)
                case let .shortRead(got, count, offset):
                    (.truncated, "short read: got \(got) of \(count) bytes at offset \(offset)", "the file changed or is truncated")
                case .barePickle:
                    (.unknownFormat, "this is a bare pickle (legacy torch.save format before PyTorch 1.6), not a zip archive",
                     "re-save it with a current torch.save(model.state_dict(), path) or convert it to safetensors")
                case let .unknownMagic(bytes):
                    (.unknownFormat,
                     "not a PyTorch zip checkpoint (starts with PK\\x03\\x04) nor safetensors (8-byte length then '{'); first bytes: "
                        + (bytes.isEmpty ? "none, the file is empty" : bytes.map { String(format: "%02x", $0) }.joined(separator: " ")),
                     "pass the .pth written by torch.save(model.state_dict()) or a .safetensors file")

                case let .sameNameWithoutPrefixes(first, second, stripped):
                    (.notAStateDict,
                     "'\(first)' and '\(second)' are both '\(stripped)' once the prefixes \(Checkpoint.wrapperPrefixes.joined(separator: " and ")) are removed",
                     "save one model's state dict")
                case .keyForSafetensors:
                    (.notAStateDict, "a safetensors file holds one flat state dict, with no entries to choose from", "drop --key")
                case let .pickleNotADict(t):
                    (.notAStateDict, "the pickle holds a \(t), not a dict of tensors",
                     "save model.state_dict() rather than the model or a wrapper object")
                case let .noSuchEntry(key, found):
                    (.notAStateDict, "the checkpoint has no dict entry '\(key)' at the top level",
                     found.isEmpty ? "the file holds a plain state dict; drop --key" : "entries holding tensors: \(found.joined(separator: ", "))")
                case let .noStateDict(entries, all):
                    (.notAStateDict,
                     "no state dict found: the top level is not a dict of tensors and has none of \(CheckpointUnpickler.stateDictKeys.joined(separator: ", ")) holding one; entries: \(entries.joined(separator: ", "))",
                     all.isEmpty ? "save model.state_dict()" : "pass --key with one of: \(all.joined(separator: ", "))")
                case let .severalStateDicts(found):
                    (.notAStateDict, "several state dicts: \(found.joined(separator: ", "))",
                     "pass --key with one of them (--key \(found.first ?? "") for example)")
                case let .intKey(i): (.notAStateDict, "state_dict key int(\(i)) is not a string", "save model.state_dict()")
                case let .unsupportedStorage(storage):
                    (.unsupportedDType, "storage type \(storage) is not supported (only float32, float16, bfloat16, int64)",
                     "convert the state_dict, e.g. {k: v.float() for k, v in sd.items()}, and save again")
                case let .notATensor(t):
                    (.notAStateDict, "entry is a \(t), not a tensor",
                     "save a flat model.state_dict() (name -> tensor), or a training checkpoint with it under \(CheckpointUnpickler.stateDictKeys.joined(separator: ", "))")

                case let .notAZipArchive(refusal):
                    (.truncated, "not a readable zip archive (\(refusal)); the end-of-archive directory is missing or damaged", Hint.redownload)
                case .duplicateEntry:
                    (.malformedArchive, "the archive holds two entries with this name", "the file is corrupted or was tampered with")
                case let .pickleEntries(prefixes):
                    (.malformedArchive,
                     prefixes.isEmpty ? "the zip has no <name>/data.pkl entry, so it is not a torch.save archive"
                                      : "the zip has several data.pkl entries (\(prefixes.sorted().joined(separator: ", ")))",
                     Hint.torchSave)
                case .bigEndian:
                    (.bigEndian, "the checkpoint was saved on a big-endian machine",
                     "load and re-save it on a little-endian machine, or convert it to safetensors")
                case let .unexpectedByteOrder(order): (.malformedArchive, "unexpected byte order '\(order.prefix(16))'", "expected 'little'")
                case .pickleEntryLost: (.malformedArchive, "data.pkl disappeared from the index", nil)
                case let .storageEntryMissing(entry):
                    (.malformedArchive, "its storage entry \(entry) is missing from the archive", Hint.truncated)
                case let .entryLargerThanFile(stored, size):
                    (.truncated, "entry claims \(stored) stored bytes but the file has \(size)", Hint.truncated)
                case let .entrySize(size, declared):
                    (.malformedArchive, "entry holds \(size) bytes but the pickle declares \(declared)", Hint.corrupted)
                case let .entryTooLarge(size, limit): (.limitExceeded, "entry of \(size) bytes exceeds the \(limit)-byte limit", nil)
                case let .entryRatio(size, stored):
                    (.malformedArchive, "entry claims \(size) bytes from \(stored) compressed bytes", Hint.archive)
                case let .storedEntrySizes(stored, size):
                    (.malformedArchive, "stored entry has compressed size \(stored) but size \(size)", Hint.archive)
                case let .entryOverflows(size):
                    (.malformedArchive, "entry decompresses to more than its declared \(size) bytes", Hint.redownload)
                case let .cannotExtract(refusal): (.truncated, "cannot extract entry (\(refusal))", Hint.redownload)
                case let .entryShort(got, size): (.truncated, "entry yielded \(got) of \(size) bytes", Hint.redownload)
                case let .crcMismatch(computed, recorded):
                    (.malformedArchive, String(format: "CRC-32 mismatch (computed %08x, recorded %08x)", computed, recorded),
                     "the file is corrupted; download or save it again")

                case let .storageConflict(key, numel, dtype, otherNumel, otherDType):
                    (.malformedTensor,
                     "storage '\(key)' is declared both as \(numel) x \(dtype.rawValue) and as \(otherNumel) x \(otherDType.rawValue)",
                     Hint.corrupted)
                case .offsetStrideOverflow: (.malformedTensor, "offset/stride arithmetic overflows", nil)
                case let .unusedStorage(key, numel, used):
                    (.limitExceeded, "storage '\(key)' declares \(numel) elements but its tensors use \(used)",
                     "the checkpoint is damaged or hostile; save the tensors with .clone() (their own storages)")
                case .storageByteSizeOverflows: (.malformedTensor, "storage byte size overflows", nil)
                case let .storageBytes(key, bytes, declared):
                    (.malformedArchive, "storage '\(key)' holds \(bytes) bytes but the pickle declares \(declared)", Hint.corrupted)
                case let .elementCountOverflows(shape): (.malformedTensor, "element count of \(shape) overflows", nil)
                case let .viewOutsideStorage(offset, shape, stride, last, key, elements):
                    (.malformedTensor,
                     "view (offset \(offset), size \(shape), stride \(stride)) reaches element \(last) but storage '\(key)' holds \(elements)",
                     Hint.corrupted)
                case let .expandedViewTooLarge(count, storageElements, limit):
                    (.limitExceeded,
                     "expanded view of \(count) elements from a storage of \(storageElements) exceeds the \(limit)-element limit",
                     "save the tensor with .contiguous() first")

                case let .headerLengthBeyondFile(length, available):
                    (.truncated, "header length \(length) exceeds the \(available) bytes after the length field",
                     "the file is truncated or not safetensors")
                case let .headerTooLarge(length, limit): (.limitExceeded, "header of \(length) bytes exceeds the \(limit)-byte limit", nil)
                case let .invalidJSON(offset, damage):
                    (.malformedHeader, "invalid JSON at byte \(offset): \(damage)", "the file is corrupted or not safetensors")
                case .headerNotObject: (.malformedHeader, "header is not a JSON object", nil)
                case .nameTwice: (.malformedHeader, "tensor name appears twice in the header", nil)
                case .metadataNotObject: (.malformedHeader, "__metadata__ is not an object", nil)
                case .entryNotObject: (.malformedHeader, "tensor entry is not an object", nil)
                case .missingDType: (.malformedHeader, "missing string field \"dtype\"", nil)
                case let .unsupportedSafetensorsDType(name):
                    (.unsupportedDType, "dtype \(name) is not supported (only F32, F16, BF16, I64)",
                     "convert the tensor, e.g. to float32, before saving")
                case .missingShape: (.malformedHeader, "missing array field \"shape\"", nil)
                case .negativeShape: (.malformedHeader, "shape entries must be non-negative integers", nil)
                case .missingDataOffsets: (.malformedHeader, "missing field \"data_offsets\": [begin, end]", nil)
                case let .offsetsOutsideData(begin, end, length):
                    (.truncated, "data_offsets [\(begin), \(end)] fall outside the \(length)-byte data buffer", Hint.truncated)
                case let .shapeOverflows(shape): (.malformedHeader, "element count of shape \(shape) overflows", nil)
                case let .offsetsSpan(shape, dtype, bytes, span):
                    (.malformedHeader,
                     "shape \(shape) of \(CheckpointSafetensors.name(of: dtype)) needs \(bytes) bytes but data_offsets span \(span)",
                     "the file is corrupted")
                case let .offsetsOverlap(begin, end, other, otherEnd):
                    (.malformedHeader, "data_offsets [\(begin), \(end)] overlap tensor '\(other)' (which ends at \(otherEnd))",
                     "the file is corrupted or was written incorrectly")

                case let .malformedPickle(damage): (.malformedPickle, damage.description, Hint.pickle)
                case let .operandTruncated(needed, remaining):
                    (.truncated, "needs \(needed) bytes but only \(remaining) remain", Hint.saveAgain)
                case let .valueTooLong(length, limit):
                    (.limitExceeded, "length \(length) exceeds the \(limit)-byte limit for one value", nil)
                case let .lengthPastEnd(length, remaining):
                    (.truncated, "length \(length) runs past the end of the pickle (\(remaining) bytes remain)",
                     "data.pkl is truncated or corrupted")
                case .unterminatedGlobal: (.truncated, "GLOBAL operand is not terminated by a newline", Hint.pickleTruncated)
                case let .globalLineTooLong(limit): (.limitExceeded, "GLOBAL operand longer than \(limit) bytes", nil)
                case let .stackTooDeep(limit): (.limitExceeded, "stack deeper than \(limit) values", nil)
                case let .nestingTooDeep(limit): (.limitExceeded, "values nested deeper than \(limit) levels", nil)
                case let .marksTooDeep(limit): (.limitExceeded, "more than \(limit) nested MARKs", nil)
                case let .memoTooLarge(limit): (.limitExceeded, "more than \(limit) memo entries", nil)
                case let .refusedGlobal(module, name):
                    (.refusedGlobal,
                     "refusing global \(module).\(name): a state_dict pickle only needs collections.OrderedDict and torch._utils tensor rebuilders",
                     "the file may be malicious, or is a training checkpoint holding Python objects; never load it with torch.load(weights_only=False) — re-save model.state_dict() (or a dict of state dicts, numbers and strings) from a trusted source, or use safetensors")
                case let .rankTooLarge(field, rank, limit):
                    (.limitExceeded, "\(field.rawValue) has \(rank) dimensions (limit \(limit))", nil)
                case let .negativeView(offset, shape, stride):
                    (.malformedTensor, "negative offset, size or stride (offset \(offset), size \(shape), stride \(stride))", nil)
                case let .sizeOverflows(shape): (.malformedTensor, "element count of size \(shape) overflows", nil)
                case let .viewOverflows(shape, stride):
                    (.malformedTensor, "offset/stride arithmetic overflows (size \(shape), stride \(stride))", nil)
                case let .viewBeyondStorage(offset, shape, stride, last, key, numel):
                    (.malformedTensor,
                     "view (offset \(offset), size \(shape), stride \(stride)) reaches element \(last) of storage '\(key)' which has \(numel)",
                     Hint.corrupted)
                case let .protocolTooNew(version): (.unsupportedOpcode, "pickle protocol \(version) is newer than 5", nil)
                case let .frameTooLong(length): (.truncated, "frame of \(length) bytes runs past the end", Hint.pickleTruncated)
                case let .integerTooWide(n): (.limitExceeded, "integer of \(n) bytes does not fit 64 bits", nil)
                case let .unsupportedOpcode(op):
                    (.unsupportedOpcode,
                     CheckpointUnpickler.opcodeNames[op] != nil ? "opcode is not needed by a torch state_dict and is not supported"
                                                                : "unknown pickle opcode",
                     "the file is not a torch.save(state_dict) pickle, or it is corrupted")
                case .noStop: (.truncated, "pickle ended without STOP", Hint.saveAgain)
                }
            }
        }
    }

    /// The error of a checkpoint that cannot be read: `CheckpointFailure(reason, ...)`, thrown.
    static func checkpoint(_ reason: CheckpointFailure.Reason, file: String, subject: String? = nil) -> TarFlowError {
        .checkpoint(CheckpointFailure(reason, file: file, subject: subject))
    }
}
