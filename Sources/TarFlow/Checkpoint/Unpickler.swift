import Foundation
import FlowIR

/// A restricted unpickler for the `data.pkl` that `torch.save(state_dict)` writes, or a training
/// checkpoint's: a dict holding the state dict (under `model`, `state_dict`, `ema`, ...) next to
/// optimizer state, numbers and strings.
///
/// Pickle is a program for a stack machine whose GLOBAL/REDUCE opcodes can import and call any
/// Python function, which is why loading an untrusted `.pth` with Python is code execution.
/// This reader executes nothing: it interprets the opcodes into plain values, accepts only the
/// handful of globals a state_dict needs (resolved to Swift enum cases at GLOBAL time, before any
/// REDUCE), and refuses everything else by name. Every count and length read from the file is
/// checked against the remaining bytes and fixed limits before anything is allocated.
enum CheckpointUnpickler {
    // MARK: Result

    /// A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
    struct StorageRef: Equatable {
        var key: String
        var dtype: DType
        var location: String
        /// Element count claimed by the pickle.
        var numel: Int
    }

    /// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage.
    struct TensorRef {
        var storage: StorageRef
        var offset: Int
        var shape: [Int]
        var stride: [Int]
    }

    /// Safety limits; generous for real state_dicts, small enough that a hostile file cannot
    /// make the reader allocate or recurse without bound.
    struct Limits {
        var maxMemoEntries = 1 << 21
        var maxStackDepth = 1 << 20
        var maxMarkDepth = 1 << 12
        /// Nesting of tuples/lists/dicts inside each other.
        var maxNesting = 64
        var maxTensorRank = 64
        var maxGlobalLineLength = 256
        var maxStringBytes = 1 << 26
        static let standard = Limits()
    }

    // MARK: Values

    /// The only callables and classes a state_dict pickle may name.
    enum Global: Equatable {
        case orderedDict
        case rebuildTensor
        case rebuildTensorV2
        case rebuildParameter
        case rebuildParameterWithState
        case storageType(DType)
        /// A torch storage class of an element type TarFlow weights never use (optimizer or RNG
        /// state: ByteStorage, DoubleStorage, ...). Tensors on it are kept opaque: skipped when
        /// outside the state dict, refused by name inside it.
        case otherStorage(String)

        var pythonName: String {
            switch self {
            case .orderedDict: return "collections.OrderedDict"
            case .rebuildTensor: return "torch._utils._rebuild_tensor"
            case .rebuildTensorV2: return "torch._utils._rebuild_tensor_v2"
            case .rebuildParameter: return "torch._utils._rebuild_parameter"
            case .rebuildParameterWithState: return "torch._utils._rebuild_parameter_with_state"
            case .storageType(let dtype):
                switch dtype {
                case .float32: return "torch.FloatStorage"
                case .float16: return "torch.HalfStorage"
                case .bfloat16: return "torch.BFloat16Storage"
                case .int64: return "torch.LongStorage"
                case .float64: return "torch.DoubleStorage"  // refused as otherStorage: never made
                case .uint8: return "torch.ByteStorage"
                case .int32: return "torch.IntStorage"
                }
            case .otherStorage(let name): return "torch.\(name)"
            }
        }
    }

    /// Dictionary keys the reader accepts (a state_dict only has string keys; ints are harmless).
    enum Key: Hashable {
        case string(String)
        case int(Int)

        var text: String {
            switch self {
            case .string(let s): return "'\(s)'"
            case .int(let i): return "\(i)"
            }
        }
    }

    /// A mutable list or dict. Containers are reference types because pickle mutates them
    /// through memo references; once a container is nested into another value it is sealed,
    /// which rules out cycles and keeps every nesting depth final and bounded.
    /// A list or dict a pickle builds: `depth` is its nesting depth, `sealed` says that another
    /// value holds it (after which it may not change: the reader keeps no cycles).
    protocol Container: AnyObject {
        var depth: Int { get }
        var sealed: Bool { get }
    }

    final class ListBox: Container {
        var items: [Value] = []
        var depth = 1
        var sealed = false
    }

    final class DictBox: Container {
        var keys: [Key] = []
        var values: [Value] = []
        var index: [Key: Int] = [:]
        var depth = 1
        var sealed = false
    }

    enum Value {
        case none
        case bool(Bool)
        case int(Int)
        case float(Double)
        case string(String)
        case bytes([UInt8])
        case tuple([Value], depth: Int)
        case list(ListBox)
        case dict(DictBox)
        case global(Global)
        case storage(StorageRef)
        case tensor(TensorRef)
        /// A storage or tensor of an `otherStorage` class, named by that class; never read.
        case opaqueStorage(String)
        case opaqueTensor(String)

        var depth: Int {
            switch self {
            case .tuple(_, let depth): return depth
            case .list(let box): return box.depth
            case .dict(let box): return box.depth
            default: return 0
            }
        }

        var typeName: String {
            switch self {
            case .none: return "None"
            case .bool: return "bool"
            case .int: return "int"
            case .float: return "float"
            case .string: return "str"
            case .bytes: return "bytes"
            case .tuple: return "tuple"
            case .list: return "list"
            case .dict: return "dict"
            case .global(let g): return g.pythonName
            case .storage: return "storage"
            case .tensor: return "tensor"
            case .opaqueStorage(let name): return "\(name)"
            case .opaqueTensor(let name): return "tensor on \(name)"
            }
        }
    }

    // MARK: Entry point

    /// Top-level entries of a training checkpoint that hold the model's state dict, in the
    /// order they are looked for.
    static let stateDictKeys = ["model", "state_dict", "ema", "model_ema"]

    /// Interprets `bytes` and returns the state dict's entries in dict order: the top-level
    /// dict when every value is a tensor, else the one of `stateDictKeys` that holds one
    /// (`key` picks an entry by name). Other entries are never materialized.
    static func load(_ bytes: [UInt8], file: String, key: String? = nil, limits: Limits = .standard) throws -> [(name: String, tensor: TensorRef)] {
        var machine = Machine(bytes: bytes, file: file, limits: limits)
        let result = try machine.run()
        guard case .dict(let root) = result else {
            throw TarFlowError.checkpoint(.pickleNotADict(type: result.typeName), file: file, subject: "data.pkl")
        }
        func isTensors(_ box: DictBox) -> Bool {
            box.values.allSatisfy { if case .tensor = $0 { true } else if case .opaqueTensor = $0 { true } else { false } }
        }
        func entry(_ name: String) -> DictBox? {
            guard let i = root.index[.string(name)], case .dict(let box) = root.values[i] else { return nil }
            return box
        }
        /// Top-level entries that are dicts of tensors with string keys (what --key may name).
        func candidates() -> [String] {
            zip(root.keys, root.values).compactMap { k, v in
                guard case .string(let name) = k, case .dict(let box) = v, !box.keys.isEmpty, isTensors(box),
                      box.keys.allSatisfy({ if case .string = $0 { true } else { false } }) else { return nil }
                return name
            }
        }
        let chosen: DictBox
        if let key {
            guard let box = entry(key) else {
                let found = candidates()
                throw TarFlowError.checkpoint(.noSuchEntry(key: key, candidates: found), file: file, subject: "--key \(key)")
            }
            chosen = box
        } else if isTensors(root) {
            chosen = root
        } else {
            let found = stateDictKeys.filter { name in entry(name).map(isTensors) ?? false }
            guard found.count == 1 else {
                let all = candidates()
                let names = zip(root.keys, root.values).prefix(12).map { k, v in "\(k.text) (\(v.typeName))" }
                throw TarFlowError.checkpoint(found.isEmpty ? .noStateDict(entries: names, candidates: all) : .severalStateDicts(found),
                                              file: file, subject: "data.pkl")
            }
            chosen = entry(found[0])!
        }
        var out: [(name: String, tensor: TensorRef)] = []
        out.reserveCapacity(chosen.keys.count)
        for (key, value) in zip(chosen.keys, chosen.values) {
            let name: String
            switch key {
            case .string(let s): name = s
            case .int(let i): throw TarFlowError.checkpoint(.intKey(i), file: file, subject: "data.pkl")
            }
            switch value {
            case .tensor(let tensor): out.append((name, tensor))
            case .opaqueTensor(let storage):
                throw TarFlowError.checkpoint(.unsupportedStorage(storage: storage), file: file, subject: name)
            default:
                throw TarFlowError.checkpoint(.notATensor(type: value.typeName), file: file, subject: name)
            }
        }
        return out
    }

    /// Names of every pickle opcode (protocols 0-5), so errors can say which one was refused.
    static let opcodeNames: [UInt8: String] = [
        0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT",
        0x49: "INT", 0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE",
        0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING",
        0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD",
        0x63: "GLOBAL", 0x64: "DICT", 0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET",
        0x69: "INST", 0x6A: "LONG_BINGET", 0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT",
        0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE",
        0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2",
        0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE",
        0x8A: "LONG1", 0x8B: "LONG4", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE",
        0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
        0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8",
        0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
    ]

    // MARK: Machine

    private struct Machine {
        let bytes: [UInt8]
        let file: String
        let limits: Limits
        var pos = 0
        /// Offset of the opcode being executed, for error messages.
        var opStart = 0
        var opName = ""
        var stack: [Value] = []
        /// Stack heights at each MARK.
        var marks: [Int] = []
        var memo: [Int: Value] = [:]

        init(bytes: [UInt8], file: String, limits: Limits) {
            self.bytes = bytes
            self.file = file
            self.limits = limits
        }

        // MARK: Errors

        func fail(_ reason: TarFlowError.CheckpointFailure.Reason) -> TarFlowError {
            let subject = opStart < bytes.count
                ? "data.pkl opcode \(opName) (\(String(format: "0x%02x", bytes[opStart]))) at offset \(opStart)"
                : "data.pkl at offset \(opStart) (end of data)"
            return .checkpoint(reason, file: file, subject: subject)
        }

        func malformed(_ damage: TarFlowError.CheckpointFailure.PickleDamage) -> TarFlowError {
            fail(.malformedPickle(damage))
        }

        // MARK: Reading operands

        mutating func readBytes(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, count <= bytes.count - pos else {
                throw fail(.operandTruncated(needed: count, remaining: bytes.count - pos))
            }
            let slice = bytes[pos..<(pos + count)]
            pos += count
            return slice
        }

        mutating func readUInt(_ count: Int) throws -> UInt64 {
            let slice = try readBytes(count)
            var value: UInt64 = 0
            for (i, b) in slice.enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
            return value
        }

        /// A length prefix, checked against the bytes that remain before anything is allocated.
        mutating func readLength(_ width: Int) throws -> Int {
            let raw = try readUInt(width)
            guard raw <= UInt64(limits.maxStringBytes) else {
                throw fail(.valueTooLong(length: raw, limit: limits.maxStringBytes))
            }
            let n = Int(raw)
            guard n <= bytes.count - pos else {
                throw fail(.lengthPastEnd(length: n, remaining: bytes.count - pos))
            }
            return n
        }

        mutating func readUTF8(_ count: Int) throws -> String {
            let slice = try readBytes(count)
            guard let s = String(validating: slice, as: UTF8.self) else {
                throw malformed(.invalidUTF8)
            }
            return s
        }

        /// A newline-terminated line (GLOBAL operands), bounded in length.
        mutating func readLine() throws -> String {
            var end = pos
            let limit = min(bytes.count, pos + limits.maxGlobalLineLength + 1)
            while end < limit, bytes[end] != 0x0A { end += 1 }
            guard end < bytes.count else {
                throw fail(.unterminatedGlobal)
            }
            guard bytes[end] == 0x0A else {
                throw fail(.globalLineTooLong(limit: limits.maxGlobalLineLength))
            }
            let line = try readUTF8(end - pos)
            pos += 1
            return line
        }

        // MARK: Stack

        var markBase: Int { marks.last ?? 0 }

        mutating func push(_ value: Value) throws {
            guard stack.count < limits.maxStackDepth else {
                throw fail(.stackTooDeep(limit: limits.maxStackDepth))
            }
            stack.append(value)
        }

        mutating func pop() throws -> Value {
            guard stack.count > markBase, let value = stack.popLast() else {
                throw malformed(.stackUnderflow)
            }
            return value
        }

        func top() throws -> Value {
            guard stack.count > markBase, let value = stack.last else {
                throw malformed(.stackUnderflow)
            }
            return value
        }

        /// Pops everything above the latest MARK and the MARK itself.
        mutating func popMark() throws -> [Value] {
            guard let mark = marks.popLast() else { throw malformed(.noMark) }
            let items = Array(stack[mark...])
            stack.removeSubrange(mark...)
            return items
        }

        /// Marks `value` as nested; returns its depth.
        func seal(_ value: Value) -> Int {
            switch value {
            case .list(let box): box.sealed = true
            case .dict(let box): box.sealed = true
            default: break
            }
            return value.depth
        }

        mutating func makeTuple(_ items: [Value]) throws -> Value {
            var depth = 0
            for item in items { depth = max(depth, seal(item)) }
            guard depth + 1 <= limits.maxNesting else {
                throw fail(.nestingTooDeep(limit: limits.maxNesting))
            }
            return .tuple(items, depth: depth + 1)
        }

        func key(_ value: Value) throws -> Key {
            switch value {
            case .string(let s): return .string(s)
            case .int(let i): return .int(i)
            default: throw malformed(.dictKeyType(value.typeName))
            }
        }

        func setItems(_ pairs: [Value], into target: Value) throws {
            guard case .dict(let box) = target else {
                throw malformed(.setItemsTarget(target.typeName))
            }
            guard pairs.count % 2 == 0 else { throw malformed(.oddSetItems) }
            let newDepth = try depth(of: box, adding: pairs, modified: .dictModifiedAfterNesting)
            var i = 0
            while i < pairs.count {
                let k = try key(pairs[i])
                if let existing = box.index[k] {
                    box.values[existing] = pairs[i + 1]  // Python semantics: replace, keep position
                } else {
                    box.index[k] = box.keys.count
                    box.keys.append(k)
                    box.values.append(pairs[i + 1])
                }
                i += 2
            }
            box.depth = newDepth
        }

        func append(_ items: [Value], to target: Value) throws {
            guard case .list(let box) = target else {
                throw malformed(.appendTarget(target.typeName))
            }
            box.depth = try depth(of: box, adding: items, modified: .listModifiedAfterNesting)
            box.items.append(contentsOf: items)
        }

        /// The nesting depth of `box` once `items` are added, sealing each (it is now held);
        /// refuses a box that is itself sealed by then (`modified`: nested elsewhere, or in
        /// `items`, a cycle) and one deeper than the limit.
        func depth(of box: some Container, adding items: [Value], modified: TarFlowError.CheckpointFailure.PickleDamage) throws -> Int {
            var newDepth = box.depth
            for value in items { newDepth = max(newDepth, seal(value) + 1) }
            guard !box.sealed else { throw malformed(modified) }
            guard newDepth <= limits.maxNesting else {
                throw fail(.nestingTooDeep(limit: limits.maxNesting))
            }
            return newDepth
        }

        mutating func memoPut(_ index: Int) throws {
            let value = try top()
            guard memo[index] != nil || memo.count < limits.maxMemoEntries else {
                throw fail(.memoTooLarge(limit: limits.maxMemoEntries))
            }
            memo[index] = value
        }

        mutating func memoGet(_ index: Int) throws {
            guard let value = memo[index] else { throw malformed(.memoMissing(index)) }
            try push(value)
        }

        // MARK: Globals

        /// Maps an imported name to an allowlisted global, or refuses it by name. Nothing is
        /// imported or called: this is a table lookup.
        func resolveGlobal(module: String, name: String) throws -> Global {
            switch (module, name) {
            case ("collections", "OrderedDict"): return .orderedDict
            case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
            case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
            case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
            case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
            case ("torch", "FloatStorage"): return .storageType(.float32)
            case ("torch", "HalfStorage"): return .storageType(.float16)
            case ("torch", "BFloat16Storage"): return .storageType(.bfloat16)
            case ("torch", "LongStorage"): return .storageType(.int64)
            default: break
            }
            if module == "torch", Self.otherStorages.contains(name) { return .otherStorage(name) }
            throw fail(.refusedGlobal(module: module, name: name))
        }

        /// torch's storage classes of other element types: data, never code (optimizer state,
        /// RNG state, counters). Their tensors are only ever skipped or refused.
        static let otherStorages: Set<String> = [
            "DoubleStorage", "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
            "ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage", "QUInt8Storage", "QInt32Storage",
        ]

        // MARK: Calls

        func int(_ value: Value, _ what: TarFlowError.CheckpointFailure.PickleField) throws -> Int {
            switch value {
            case .int(let i): return i
            case .bool(let b): return b ? 1 : 0
            default: throw malformed(.notAnInt(what, type: value.typeName))
            }
        }

        func intTuple(_ value: Value, _ what: TarFlowError.CheckpointFailure.PickleField) throws -> [Int] {
            guard case .tuple(let items, _) = value else {
                throw malformed(.notAnIntTuple(what, type: value.typeName))
            }
            guard items.count <= limits.maxTensorRank else {
                throw fail(.rankTooLarge(what, rank: items.count, limit: limits.maxTensorRank))
            }
            return try items.map { try int($0, what) }
        }

        /// Builds a tensor view and checks it fits the storage's claimed element count.
        func makeTensor(storage: Value, offset: Value, size: Value, stride: Value) throws -> Value {
            if case .opaqueStorage(let name) = storage { return .opaqueTensor(name) }
            guard case .storage(let ref) = storage else {
                throw malformed(.tensorStorage(type: storage.typeName))
            }
            let off = try int(offset, .storageOffset)
            let shape = try intTuple(size, .size)
            let strides = try intTuple(stride, .stride)
            guard shape.count == strides.count else {
                throw malformed(.rankMismatch(size: shape.count, stride: strides.count))
            }
            guard off >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
                throw fail(.negativeView(offset: off, shape: shape, stride: strides))
            }
            guard elementCount(shape) != nil else {
                throw fail(.sizeOverflows(shape: shape))
            }
            if !shape.contains(0) {
                var last = off
                for (d, s) in zip(shape, strides) {
                    guard let span = CheckpointMath.multiply(d - 1, s), let next = CheckpointMath.add(last, span) else {
                        throw fail(.viewOverflows(shape: shape, stride: strides))
                    }
                    last = next
                }
                guard last < ref.numel else {
                    throw fail(.viewBeyondStorage(offset: off, shape: shape, stride: strides, last: last, storage: ref.key, numel: ref.numel))
                }
            }
            return .tensor(TensorRef(storage: ref, offset: off, shape: shape, stride: strides))
        }

        func emptyHooks(_ value: Value) throws {
            switch value {
            case .none: return
            case .dict(let box) where box.keys.isEmpty: return
            default:
                throw malformed(.backwardHooks(type: value.typeName))
            }
        }

        /// "Applies" an allowlisted callable: builds the value torch would build, running nothing.
        func apply(_ callable: Value, _ args: [Value]) throws -> Value {
            guard case .global(let g) = callable else {
                throw malformed(.reduceOn(type: callable.typeName))
            }
            switch g {
            case .orderedDict:
                guard args.isEmpty else { throw malformed(.orderedDictArguments) }
                return .dict(DictBox())
            case .rebuildTensor:
                guard args.count == 4 else { throw malformed(.rebuildTensorArguments(args.count)) }
                return try makeTensor(storage: args[0], offset: args[1], size: args[2], stride: args[3])
            case .rebuildTensorV2:
                guard args.count == 6 || args.count == 7 else {
                    throw malformed(.rebuildTensorV2Arguments(args.count))
                }
                guard case .bool = args[4] else { throw malformed(.requiresGrad(type: args[4].typeName)) }
                try emptyHooks(args[5])
                return try makeTensor(storage: args[0], offset: args[1], size: args[2], stride: args[3])
            case .rebuildParameter, .rebuildParameterWithState:
                let expected = g == .rebuildParameter ? 3 : 4
                guard args.count == expected else {
                    throw malformed(.parameterArguments(withState: g == .rebuildParameterWithState, count: args.count))
                }
                switch args[0] {
                case .tensor, .opaqueTensor: break
                default: throw malformed(.parameterData(withState: g == .rebuildParameterWithState, type: args[0].typeName))
                }
                try emptyHooks(args[2])
                if expected == 4 {
                    switch args[3] {
                    case .none: break
                    case .dict(let box) where box.keys.isEmpty: break
                    default: throw malformed(.parameterState(type: args[3].typeName))
                    }
                }
                return args[0]
            case .storageType, .otherStorage:
                throw malformed(.storageCalled(global: g.pythonName))
            }
        }

        /// torch's persistent id for a storage: ('storage', storage_type, key, location, numel).
        func persistentLoad(_ pid: Value) throws -> Value {
            guard case .tuple(let items, _) = pid, items.count == 5, case .string("storage") = items[0] else {
                throw malformed(.persistentIDShape)
            }
            if case .global(.otherStorage(let name)) = items[1] { return .opaqueStorage("torch.\(name)") }
            guard case .global(.storageType(let dtype)) = items[1] else {
                throw malformed(.persistentIDStorageType(type: items[1].typeName))
            }
            guard case .string(let key) = items[2], !key.isEmpty, !key.contains("/"), key != ".", key != ".." else {
                throw malformed(.persistentIDKey)
            }
            guard case .string(let location) = items[3] else { throw malformed(.persistentIDLocation) }
            let numel = try int(items[4], .storageNumel)
            guard numel >= 0 else { throw malformed(.negativeNumel(storage: key, numel: numel)) }
            return .storage(StorageRef(key: key, dtype: dtype, location: location, numel: numel))
        }

        // MARK: Run loop

        mutating func run() throws -> Value {
            while pos < bytes.count {
                opStart = pos
                let op = bytes[pos]
                pos += 1
                opName = Self.opcodeName(op)
                switch op {
                case 0x80:  // PROTO
                    let version = try readUInt(1)
                    guard version <= 5 else { throw fail(.protocolTooNew(version)) }
                case 0x95:  // FRAME: framing is only a read-ahead hint
                    let length = try readUInt(8)
                    guard length <= UInt64(bytes.count - pos) else {
                        throw fail(.frameTooLong(length))
                    }
                case 0x2E:  // STOP
                    let result = try pop()
                    guard stack.isEmpty, marks.isEmpty else { throw malformed(.valuesLeftAtStop) }
                    return result
                case 0x28:  // MARK
                    guard marks.count < limits.maxMarkDepth else {
                        throw fail(.marksTooDeep(limit: limits.maxMarkDepth))
                    }
                    marks.append(stack.count)
                case 0x30:  // POP
                    if stack.count > markBase { _ = try pop() } else { _ = try popMark() }
                case 0x31:  // POP_MARK
                    _ = try popMark()
                case 0x32:  // DUP
                    try push(try top())
                case 0x4E:  // NONE
                    try push(.none)
                case 0x88:  // NEWTRUE
                    try push(.bool(true))
                case 0x89:  // NEWFALSE
                    try push(.bool(false))
                case 0x4A:  // BININT
                    try push(.int(Int(Int32(bitPattern: UInt32(try readUInt(4))))))
                case 0x4B:  // BININT1
                    try push(.int(Int(try readUInt(1))))
                case 0x4D:  // BININT2
                    try push(.int(Int(try readUInt(2))))
                case 0x8A:  // LONG1
                    try push(.int(try readLong(Int(try readUInt(1)))))
                case 0x8B:  // LONG4
                    let n = try readUInt(4)
                    guard n <= 8 else { throw fail(.integerTooWide(bytes: n)) }
                    try push(.int(try readLong(Int(n))))
                case 0x47:  // BINFLOAT (big-endian double)
                    let slice = try readBytes(8)
                    var bits: UInt64 = 0
                    for b in slice { bits = (bits << 8) | UInt64(b) }
                    try push(.float(Double(bitPattern: bits)))
                case 0x58:  // BINUNICODE
                    try push(.string(try readUTF8(try readLength(4))))
                case 0x8C:  // SHORT_BINUNICODE
                    try push(.string(try readUTF8(try readLength(1))))
                case 0x8D:  // BINUNICODE8
                    try push(.string(try readUTF8(try readLength(8))))
                case 0x42:  // BINBYTES
                    try push(.bytes(Array(try readBytes(try readLength(4)))))
                case 0x43:  // SHORT_BINBYTES
                    try push(.bytes(Array(try readBytes(try readLength(1)))))
                case 0x8E:  // BINBYTES8
                    try push(.bytes(Array(try readBytes(try readLength(8)))))
                case 0x29:  // EMPTY_TUPLE
                    try push(.tuple([], depth: 1))
                case 0x74:  // TUPLE
                    try push(try makeTuple(try popMark()))
                case 0x85:  // TUPLE1
                    let a = try pop()
                    try push(try makeTuple([a]))
                case 0x86:  // TUPLE2
                    let b = try pop(), a = try pop()
                    try push(try makeTuple([a, b]))
                case 0x87:  // TUPLE3
                    let c = try pop(), b = try pop(), a = try pop()
                    try push(try makeTuple([a, b, c]))
                case 0x5D:  // EMPTY_LIST
                    try push(.list(ListBox()))
                case 0x6C:  // LIST: the items since the mark, in a new list
                    let list = Value.list(ListBox())
                    try append(try popMark(), to: list)
                    try push(list)
                case 0x61:  // APPEND
                    try append([try pop()], to: try top())
                case 0x65:  // APPENDS
                    try append(try popMark(), to: try top())
                case 0x7D:  // EMPTY_DICT
                    try push(.dict(DictBox()))
                case 0x64:  // DICT: the key, value pairs since the mark, in a new dict
                    let dict = Value.dict(DictBox())
                    try setItems(try popMark(), into: dict)
                    try push(dict)
                case 0x73:  // SETITEM
                    let value = try pop(), key = try pop()
                    try setItems([key, value], into: try top())
                case 0x75:  // SETITEMS
                    try setItems(try popMark(), into: try top())
                case 0x63:  // GLOBAL
                    let module = try readLine()
                    let name = try readLine()
                    try push(.global(try resolveGlobal(module: module, name: name)))
                case 0x93:  // STACK_GLOBAL
                    let nameValue = try pop(), moduleValue = try pop()
                    guard case .string(let module) = moduleValue, case .string(let name) = nameValue else {
                        throw malformed(.stackGlobalOperands)
                    }
                    try push(.global(try resolveGlobal(module: module, name: name)))
                case 0x52:  // REDUCE
                    let argsValue = try pop(), callable = try pop()
                    guard case .tuple(let args, _) = argsValue else {
                        throw malformed(.reduceArguments(type: argsValue.typeName))
                    }
                    try push(try apply(callable, args))
                case 0x81:  // NEWOBJ: cls.__new__(cls, *args); only OrderedDict makes sense here
                    let argsValue = try pop(), cls = try pop()
                    guard case .global(.orderedDict) = cls, case .tuple(let args, _) = argsValue, args.isEmpty else {
                        throw malformed(.newObj)
                    }
                    try push(.dict(DictBox()))
                case 0x62:  // BUILD: torch sets OrderedDict attributes (`_metadata`); nothing to keep
                    let state = try pop()
                    let target = try top()
                    guard case .dict = target else {
                        throw malformed(.buildTarget(type: target.typeName))
                    }
                    switch state {
                    case .none, .dict: _ = seal(state)
                    default: throw malformed(.buildState(type: state.typeName))
                    }
                case 0x51:  // BINPERSID
                    let pid = try pop()
                    try push(try persistentLoad(pid))
                case 0x71:  // BINPUT
                    try memoPut(Int(try readUInt(1)))
                case 0x72:  // LONG_BINPUT
                    try memoPut(Int(try readUInt(4)))
                case 0x94:  // MEMOIZE
                    try memoPut(memo.count)
                case 0x68:  // BINGET
                    try memoGet(Int(try readUInt(1)))
                case 0x6A:  // LONG_BINGET
                    try memoGet(Int(try readUInt(4)))
                default:
                    throw fail(.unsupportedOpcode(op))
                }
            }
            opStart = pos
            throw fail(.noStop)
        }

        /// Little-endian two's-complement integer of `n` bytes (LONG1/LONG4), up to 64 bits.
        mutating func readLong(_ n: Int) throws -> Int {
            guard n <= 8 else { throw fail(.integerTooWide(bytes: UInt64(n))) }
            if n == 0 { return 0 }
            let slice = try readBytes(n)
            var value: UInt64 = 0
            for (i, b) in slice.enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
            if n < 8, let last = slice.last, last & 0x80 != 0 {
                value |= ~UInt64(0) << (8 * UInt64(n))  // sign-extend
            }
            return Int(Int64(bitPattern: value))
        }

        static func opcodeName(_ op: UInt8) -> String { CheckpointUnpickler.opcodeNames[op] ?? "UNKNOWN" }
    }
}
