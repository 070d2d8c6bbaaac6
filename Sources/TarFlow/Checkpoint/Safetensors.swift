import Foundation
import FlowIR

/// Reads safetensors: an 8-byte little-endian header length N, N bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`),
/// then the data buffer the offsets index. The JSON is parsed by a small order-preserving parser
/// so tensors come back in header order.
enum CheckpointSafetensors {
    /// The reference implementation's header size cap.
    static let maxHeaderBytes = 100_000_000

    /// The safetensors dtype names a checkpoint may use.
    static let dtypes: [String: DType] = ["F32": .float32, "F16": .float16, "BF16": .bfloat16, "I64": .int64]

    /// The safetensors name of `dtype`, one of `dtypes`.
    static func name(of dtype: DType) -> String { dtypes.first { $0.value == dtype }?.key ?? dtype.rawValue }

    /// One header entry, validated against the data buffer.
    struct Spec {
        var name: String
        var dtype: DType
        var shape: [Int]
        var begin: Int
        var end: Int
    }

    /// `check` sees every tensor's dtype and shape before any tensor data is read.
    static func read(file: CheckpointFile, check: (([CheckpointTensorInfo]) throws -> Void)? = nil) throws -> [CheckpointTensor] {
        let path = file.path
        let lengthBytes = try file.read(at: 0, count: 8, what: "safetensors header length")
        var headerLength: UInt64 = 0
        for (i, b) in lengthBytes.enumerated() { headerLength |= UInt64(b) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(file.size - 8) else {
            throw TarFlowError.checkpoint(.headerLengthBeyondFile(length: headerLength, available: file.size - 8), file: path, subject: "safetensors header")
        }
        guard headerLength <= UInt64(maxHeaderBytes) else {
            throw TarFlowError.checkpoint(.headerTooLarge(length: headerLength, limit: maxHeaderBytes), file: path, subject: "safetensors header")
        }
        let header = try file.read(at: 8, count: Int(headerLength), what: "safetensors header")
        let dataStart = 8 + Int(headerLength)
        let dataLength = file.size - dataStart

        var parser = JSONParser(bytes: header)
        let root: JSONValue
        do {
            root = try parser.parseDocument()
        } catch let error as JSONParser.Failure {
            throw TarFlowError.checkpoint(.invalidJSON(offset: error.offset, damage: error.damage), file: path, subject: "safetensors header")
        }
        guard case .object(let members) = root else {
            throw TarFlowError.checkpoint(.headerNotObject, file: path, subject: "safetensors header")
        }

        var specs: [Spec] = []
        var seen = Set<String>()
        for (name, value) in members {
            guard seen.insert(name).inserted else {
                throw TarFlowError.checkpoint(.nameTwice, file: path, subject: name)
            }
            if name == "__metadata__" {
                guard case .object = value else {
                    throw TarFlowError.checkpoint(.metadataNotObject, file: path, subject: name)
                }
                continue
            }
            specs.append(try parseSpec(name: name, value: value, dataLength: dataLength, file: path))
        }

        // Offsets must not overlap: each byte of the buffer belongs to at most one tensor.
        let byBegin = specs.indices.sorted { (specs[$0].begin, specs[$0].end) < (specs[$1].begin, specs[$1].end) }
        var previousEnd = 0
        var previousName = ""
        for i in byBegin where specs[i].end > specs[i].begin {
            let spec = specs[i]
            guard spec.begin >= previousEnd else {
                throw TarFlowError.checkpoint(.offsetsOverlap(begin: spec.begin, end: spec.end, other: previousName, otherEnd: previousEnd), file: path, subject: spec.name)
            }
            previousEnd = spec.end
            previousName = spec.name
        }

        try check?(specs.map { CheckpointTensorInfo(name: $0.name, dtype: $0.dtype, shape: $0.shape) })

        var tensors: [CheckpointTensor] = []
        tensors.reserveCapacity(specs.count)
        for spec in specs {
            let bytes = try file.read(at: dataStart + spec.begin, count: spec.end - spec.begin, what: spec.name)
            tensors.append(CheckpointTensor(name: spec.name, tensor: bytes.withUnsafeBytes { Tensor(shape: spec.shape, dtype: spec.dtype, decoding: $0) }))
        }
        return tensors
    }

    private static func parseSpec(name: String, value: JSONValue, dataLength: Int, file: String) throws -> Spec {
        guard case .object(let fields) = value else {
            throw TarFlowError.checkpoint(.entryNotObject, file: file, subject: name)
        }
        func field(_ key: String) -> JSONValue? { fields.first { $0.0 == key }?.1 }
        guard case .string(let dtypeName)? = field("dtype") else {
            throw TarFlowError.checkpoint(.missingDType, file: file, subject: name)
        }
        guard let dtype = dtypes[dtypeName] else {
            throw TarFlowError.checkpoint(.unsupportedSafetensorsDType(dtypeName), file: file, subject: name)
        }
        guard case .array(let dims)? = field("shape") else {
            throw TarFlowError.checkpoint(.missingShape, file: file, subject: name)
        }
        var shape: [Int] = []
        for dim in dims {
            guard case .integer(let d) = dim, d >= 0 else {
                throw TarFlowError.checkpoint(.negativeShape, file: file, subject: name)
            }
            shape.append(d)
        }
        guard case .array(let offsets)? = field("data_offsets"), offsets.count == 2,
              case .integer(let begin) = offsets[0], case .integer(let end) = offsets[1] else {
            throw TarFlowError.checkpoint(.missingDataOffsets, file: file, subject: name)
        }
        guard begin >= 0, begin <= end, end <= dataLength else {
            throw TarFlowError.checkpoint(.offsetsOutsideData(begin: begin, end: end, dataLength: dataLength), file: file, subject: name)
        }
        guard let count = elementCount(shape), let nbytes = CheckpointMath.multiply(count, dtype.byteSize) else {
            throw TarFlowError.checkpoint(.shapeOverflows(shape: shape), file: file, subject: name)
        }
        guard nbytes == end - begin else {
            throw TarFlowError.checkpoint(.offsetsSpan(shape: shape, dtype: dtype, bytes: nbytes, span: end - begin), file: file, subject: name)
        }
        return Spec(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    // MARK: - Minimal order-preserving JSON

    indirect enum JSONValue {
        case object([(String, JSONValue)])
        case array([JSONValue])
        case string(String)
        case integer(Int)
        case number(Double)
        case bool(Bool)
        case null
    }

    struct JSONParser {
        typealias Damage = TarFlowError.CheckpointFailure.JSONDamage

        struct Failure: Error {
            var offset: Int
            var damage: Damage
        }

        static let maxDepth = 32
        let bytes: [UInt8]
        var pos = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func fail(_ damage: Damage) -> Failure { Failure(offset: pos, damage: damage) }

        /// One value, then only whitespace (writers may pad the header with spaces).
        mutating func parseDocument() throws -> JSONValue {
            let value = try parseValue(depth: 0)
            skipWhitespace()
            guard pos == bytes.count else { throw fail(.trailingData) }
            return value
        }

        mutating func skipWhitespace() {
            while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0A || bytes[pos] == 0x0D || bytes[pos] == 0x09 {
                pos += 1
            }
        }

        mutating func parseValue(depth: Int) throws -> JSONValue {
            guard depth < Self.maxDepth else { throw fail(.tooDeep(limit: Self.maxDepth)) }
            skipWhitespace()
            guard pos < bytes.count else { throw fail(.unexpectedEnd) }
            switch bytes[pos] {
            case UInt8(ascii: "{"):
                return .object(try parseSequence(.object) { try $0.parseMember(depth: depth + 1) })
            case UInt8(ascii: "["):
                return .array(try parseSequence(.array) { try $0.parseValue(depth: depth + 1) })
            case UInt8(ascii: "\""):
                return .string(try parseString())
            case UInt8(ascii: "t"):
                try expectLiteral("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try expectLiteral("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try expectLiteral("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return try parseNumber()
            default:
                throw fail(.unexpectedCharacter)
            }
        }

        /// The elements of an object or array, from its opening bracket (at `pos`) through its
        /// closing one: none, or `element`s separated by commas.
        mutating func parseSequence<Element>(_ container: Damage.Container,
                                             element: (inout JSONParser) throws -> Element) throws -> [Element] {
            pos += 1
            var elements: [Element] = []
            skipWhitespace()
            if pos < bytes.count, bytes[pos] == container.closing { pos += 1; return elements }
            while true {
                elements.append(try element(&self))
                skipWhitespace()
                guard pos < bytes.count else { throw fail(.unterminated(container)) }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == container.closing { pos += 1; return elements }
                throw fail(.expectedCommaOr(container))
            }
        }

        /// `"key": value`, the value at `depth`.
        mutating func parseMember(depth: Int) throws -> (String, JSONValue) {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail(.expectedKey) }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail(.expectedColon) }
            pos += 1
            return (key, try parseValue(depth: depth))
        }

        mutating func expectLiteral(_ literal: String) throws {
            let utf8 = Array(literal.utf8)
            guard bytes.count - pos >= utf8.count, Array(bytes[pos..<(pos + utf8.count)]) == utf8 else {
                throw fail(.invalidLiteral)
            }
            pos += utf8.count
        }

        mutating func parseNumber() throws -> JSONValue {
            let start = pos
            if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            var isInteger = true
            func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
            guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail(.invalidNumber) }
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
            if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
                isInteger = false
                pos += 1
                guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail(.invalidNumber) }
                while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
            }
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
                isInteger = false
                pos += 1
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
                guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail(.invalidNumber) }
                while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
            }
            let text = String(decoding: bytes[start..<pos], as: UTF8.self)
            if isInteger {
                guard let value = Int(text) else { throw Failure(offset: start, damage: .integerOutOfRange(text: text)) }
                return .integer(value)
            }
            guard let value = Double(text) else { throw Failure(offset: start, damage: .invalidNumber) }
            return .number(value)
        }

        mutating func parseString() throws -> String {
            pos += 1  // opening quote
            var out: [UInt8] = []
            while true {
                guard pos < bytes.count else { throw fail(.unterminatedString) }
                let b = bytes[pos]
                pos += 1
                switch b {
                case UInt8(ascii: "\""):
                    guard let s = String(validating: out, as: UTF8.self) else { throw fail(.invalidUTF8) }
                    return s
                case UInt8(ascii: "\\"):
                    guard pos < bytes.count else { throw fail(.unterminatedEscape) }
                    let e = bytes[pos]
                    pos += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try parseHex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard bytes.count - pos >= 6, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                                throw fail(.unpairedSurrogate)
                            }
                            pos += 2
                            let low = try parseHex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw fail(.unpairedSurrogate) }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw fail(.invalidUnicodeEscape) }
                        out.append(contentsOf: Array(String(Character(unicode)).utf8))
                    default:
                        throw fail(.invalidEscape)
                    }
                case 0x00..<0x20:
                    throw fail(.controlCharacter)
                default:
                    out.append(b)
                }
            }
        }

        mutating func parseHex4() throws -> UInt32 {
            guard bytes.count - pos >= 4 else { throw fail(.truncatedUnicodeEscape) }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[pos]
                pos += 1
                let digit: UInt32
                switch b {
                case 0x30...0x39: digit = UInt32(b - 0x30)
                case 0x41...0x46: digit = UInt32(b - 0x41 + 10)
                case 0x61...0x66: digit = UInt32(b - 0x61 + 10)
                default: throw fail(.invalidHexDigit)
                }
                value = value << 4 | digit
            }
            return value
        }
    }
}
