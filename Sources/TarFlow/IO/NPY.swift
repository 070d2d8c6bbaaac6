import Foundation
import FlowIR

/// NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), the exchange format of the Python
/// tooling around TarFlow (`np.save` / `np.load`).
///
/// Reads C-ordered arrays of dtype `f4`, `f8`, `u1`, `i4`, `i8` in either byte order; writes
/// little-endian version 1.0 files laid out byte for byte as `np.save` does (dictionary keys
/// sorted, spare space for the growth axis, header padded to 64 bytes).
public enum NPY {
    /// Files larger than this are refused before anything is allocated.
    public static let maxFileBytes = 1 << 34
    /// Bound on the header dictionary (NumPy itself refuses more than 10 000 by default).
    public static let maxHeaderBytes = 1 << 20

    private static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"
    private static let alignment = 64
    /// NumPy reserves room for this many digits of the growth axis so headers can be rewritten in place.
    private static let growthAxisMaxDigits = 21

    // MARK: Reading

    public static func read(contentsOf url: URL) throws -> Tensor {
        let bytes = try readFileBytes(at: url, maxBytes: maxFileBytes)
        return try parse(bytes, path: url.path)
    }

    /// The first `maxItems` entries of the first axis (images, labels), or all when nil, and
    /// how many the file holds. Only the header and those rows are read: `--limit 2` on a 10 GB
    /// file reads two images. The file's size must still match its header exactly.
    public static func read(contentsOf url: URL, maxItems: Int?) throws -> (array: Tensor, fileCount: Int) {
        guard let maxItems else {
            let a = try read(contentsOf: url)
            return (a, a.shape.first ?? 1)
        }
        let file = try ReadOnlyFile(path: url.standardizedFileURL.path)
        let path = url.path
        let head = try file.read(0..<min(file.size, 12 + maxHeaderBytes))
        let l = try layout(head, path: path)
        try checkDataSize(l, available: file.size - l.dataStart, fileSize: file.size, path: path)
        guard let rows = l.shape.first, rows > maxItems, maxItems >= 0 else {
            guard file.size <= maxFileBytes else { throw FileAccessError.tooLarge(path: path, size: file.size, limit: maxFileBytes) }
            return (decode(try file.read(l.dataStart..<file.size), l), l.shape.first ?? 1)
        }
        let rowBytes = l.byteLength / rows
        var shape = l.shape
        shape[0] = maxItems
        let part = Layout(dataStart: 0, shape: shape, element: l.element, bigEndian: l.bigEndian, count: l.count / rows * maxItems,
                          byteLength: rowBytes * maxItems)
        return (decode(try file.read(l.dataStart..<(l.dataStart + part.byteLength)), part), rows)
    }

    /// Decodes an in-memory `.npy` file; `path` only labels errors.
    public static func parse(_ bytes: [UInt8], path: String = "<memory>") throws -> Tensor {
        let l = try layout(bytes, path: path)
        try checkDataSize(l, available: bytes.count - l.dataStart, fileSize: bytes.count, path: path)
        return bytes.withUnsafeBytes { decode(UnsafeRawBufferPointer(rebasing: $0[l.dataStart...]), l) }
    }

    /// Where the data starts and what it holds, from the magic and header dictionary.
    struct Layout {
        var dataStart: Int
        var shape: [Int]
        var element: DType
        var bigEndian: Bool
        var count: Int
        var byteLength: Int
    }

    /// The layout from the first bytes of a file (at least the whole header), every size checked.
    static func layout(_ bytes: [UInt8], path: String) throws -> Layout {
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw TarFlowError.npy(.notNPY(path: path)) }
        let major = bytes[6], minor = bytes[7]
        guard (1...3).contains(major), minor == 0 else {
            throw TarFlowError.npy(.unsupportedVersion(path: path, major: Int(major), minor: Int(minor)))
        }
        let headerStart: Int
        let headerLength: Int
        if major == 1 {
            headerStart = 10
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        } else {
            guard bytes.count >= 12 else {
                throw TarFlowError.npy(.truncated(path: path, what: "header length", expected: 12, actual: bytes.count))
            }
            headerStart = 12
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        }
        guard headerLength <= maxHeaderBytes else {
            throw TarFlowError.npy(.badHeader(path: path, damage: .tooLong(length: headerLength, limit: maxHeaderBytes)))
        }
        let dataStart = headerStart + headerLength
        guard dataStart <= bytes.count else {
            throw TarFlowError.npy(.truncated(path: path, what: "header", expected: dataStart, actual: bytes.count))
        }

        var parser = NPYHeaderParser(bytes: bytes[headerStart..<dataStart], path: path)
        let header = try parser.parseDictionary()
        guard !header.fortranOrder else { throw TarFlowError.npy(.fortranOrder(path: path)) }
        let (element, bigEndian) = try dtype(from: header.descr, path: path)

        guard let count = elementCount(header.shape) else {
            throw TarFlowError.npy(.badHeader(path: path, damage: .elementCountOverflows(shape: header.shape)))
        }
        let (byteLength, overflow) = count.multipliedReportingOverflow(by: element.byteSize)
        guard !overflow else {
            throw TarFlowError.npy(.badHeader(path: path, damage: .byteCountOverflows(shape: header.shape)))
        }
        return Layout(dataStart: dataStart, shape: header.shape, element: element, bigEndian: bigEndian, count: count, byteLength: byteLength)
    }

    /// The data after the header must be exactly what the header declares.
    private static func checkDataSize(_ l: Layout, available: Int, fileSize: Int, path: String) throws {
        guard available >= l.byteLength else {
            throw TarFlowError.npy(.truncated(path: path, what: "array data", expected: l.dataStart + l.byteLength, actual: fileSize))
        }
        guard available == l.byteLength else {
            throw TarFlowError.npy(.trailingBytes(path: path, extra: available - l.byteLength))
        }
    }

    /// `bytes` (exactly the data of `l`) as an array.
    private static func decode(_ bytes: [UInt8], _ l: Layout) -> Tensor {
        bytes.withUnsafeBytes { decode($0, l) }
    }

    private static func decode(_ raw: UnsafeRawBufferPointer, _ l: Layout) -> Tensor {
        Tensor(shape: l.shape, dtype: l.element, decoding: raw, bigEndian: l.bigEndian)
    }

    /// Maps a NumPy type string such as `<f4` to an element type and byte order.
    private static func dtype(from descr: String, path: String) throws -> (DType, bigEndian: Bool) {
        let chars = Array(descr)
        guard chars.count == 3 else { throw TarFlowError.npy(.unsupportedDType(path: path, descr: descr)) }
        let element: DType
        switch String(chars[1...]) {
        case "f4": element = .float32
        case "f8": element = .float64
        case "u1": element = .uint8
        case "i4": element = .int32
        case "i8": element = .int64
        default: throw TarFlowError.npy(.unsupportedDType(path: path, descr: descr))
        }
        switch chars[0] {
        case "<": return (element, false)
        case ">": return (element, true)
        case "=": return (element, 1.bigEndian == 1)
        case "|" where element.byteSize == 1: return (element, false)
        default: throw TarFlowError.npy(.unsupportedDType(path: path, descr: descr))
        }
    }

    // MARK: Writing

    public static func write(_ array: Tensor, to url: URL) throws {
        try writeAtomically(try encode(array), to: url)
    }

    /// The bytes `np.save` would write for this array.
    public static func encode(_ array: Tensor) throws -> [UInt8] {
        guard elementCount(array.shape) == array.count else {
            throw TarFlowError.npy(.shapeMismatch(shape: array.shape, count: array.count))
        }
        let descr: String
        switch array.dtype {
        case .float16, .bfloat16: throw TarFlowError.npy(.unsupportedDType(path: "<memory>", descr: array.dtype.rawValue))
        case .float32: descr = "<f4"
        case .float64: descr = "<f8"
        case .uint8: descr = "|u1"
        case .int32: descr = "<i4"
        case .int64: descr = "<i8"
        }
        let shapeRepr: String
        switch array.shape.count {
        case 0: shapeRepr = "()"
        case 1: shapeRepr = "(\(array.shape[0]),)"
        default: shapeRepr = "(" + array.shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeRepr), }"
        if let first = array.shape.first {
            header += String(repeating: " ", count: max(0, growthAxisMaxDigits - String(first).count))
        }
        let text = Array(header.utf8)

        // Version 1 stores the header length in 2 bytes; fall back to 2.0 as NumPy does.
        var prefix = magic
        var headerLength = 0
        for (major, lengthBytes) in [(UInt8(1), 2), (UInt8(2), 4)] {
            let unpadded = prefix.count + 2 + lengthBytes + text.count + 1
            let padding = alignment - unpadded % alignment
            headerLength = text.count + 1 + padding
            if lengthBytes == 4 || headerLength <= Int(UInt16.max) {
                prefix += [major, 0]
                for i in 0..<lengthBytes { prefix.append(UInt8(truncatingIfNeeded: headerLength >> (8 * i))) }
                break
            }
        }
        var out = prefix
        out.reserveCapacity(prefix.count + headerLength + array.byteCount)
        out += text
        out += [UInt8](repeating: 0x20, count: headerLength - text.count - 1)
        out.append(0x0A)
        out += array.littleEndianBytes()
        return out
    }
}

extension TarFlowError {
    /// Failures of `.npy` reading and writing; each names the file and what to do.
    public enum NPYFailure: Sendable, Equatable, CustomStringConvertible {
        /// How a `.npy` header is malformed (`NPYFailure.badHeader`); offsets count from the
        /// start of the header dictionary.
        public enum HeaderDamage: Sendable, Equatable, CustomStringConvertible {
            /// The header length field declares `length` bytes, over `limit`.
            case tooLong(length: Int, limit: Int)
            case elementCountOverflows(shape: [Int])
            case byteCountOverflows(shape: [Int])
            case duplicateKey(String)
            case trailingText
            /// The dictionary's keys, sorted, are not exactly descr, fortran_order and shape.
            case keys([String])
            case descrNotString
            case fortranOrderNotBool
            case shapeNotTuple
            /// The value of `key` is neither a string, a tuple nor True/False.
            case unsupportedValue(key: String)
            case expectedString(offset: Int)
            /// A backslash or a control character inside a string.
            case escapeInString
            case unterminatedString
            /// A shape dimension does not fit an `Int`.
            case dimensionTooLarge
            case expectedDimension(offset: Int)
            case expectedCharacter(Character, offset: Int)
            /// `True` or `False` expected.
            case expectedWord(String, offset: Int)

            public var description: String {
                switch self {
                case let .tooLong(length, limit): "header of \(length) bytes exceeds \(limit)"
                case let .elementCountOverflows(shape): "shape \(shape) overflows the element count"
                case let .byteCountOverflows(shape): "shape \(shape) overflows the byte count"
                case let .duplicateKey(key): "duplicate key '\(key)'"
                case .trailingText: "unexpected text after the dictionary"
                case let .keys(keys): "keys are \(keys), expected descr, fortran_order, shape"
                case .descrNotString: "'descr' must be a type string; structured dtypes are not supported"
                case .fortranOrderNotBool: "'fortran_order' must be True or False"
                case .shapeNotTuple: "'shape' must be a tuple of integers"
                case let .unsupportedValue(key): "unsupported value for '\(key)'"
                case let .expectedString(offset): "expected a quoted string at offset \(offset)"
                case .escapeInString: "escape sequences are not supported in strings"
                case .unterminatedString: "unterminated string"
                case .dimensionTooLarge: "dimension too large"
                case let .expectedDimension(offset): "expected a non-negative integer dimension at offset \(offset)"
                case let .expectedCharacter(c, offset): "expected '\(c)' at offset \(offset)"
                case let .expectedWord(word, offset): "expected \(word) at offset \(offset)"
                }
            }
        }

        case notNPY(path: String)
        case unsupportedVersion(path: String, major: Int, minor: Int)
        case truncated(path: String, what: String, expected: Int, actual: Int)
        case trailingBytes(path: String, extra: Int)
        /// The header dictionary, or the sizes it declares, cannot be read.
        case badHeader(path: String, damage: HeaderDamage)
        case unsupportedDType(path: String, descr: String)
        case fortranOrder(path: String)
        case shapeMismatch(shape: [Int], count: Int)

        public var description: String {
            switch self {
            case let .notNPY(path): "\(path) is not a .npy file (missing \\x93NUMPY magic)"
            case let .unsupportedVersion(path, major, minor):
                "\(path): .npy format version \(major).\(minor) is not supported (expected 1.0, 2.0 or 3.0)"
            case let .truncated(path, what, expected, actual):
                "\(path) is truncated: the \(what) needs \(expected) bytes but the file has \(actual)"
            case let .trailingBytes(path, extra):
                "\(path) has \(extra) bytes after the array data; is it an .npz or a concatenation of arrays?"
            case let .badHeader(path, damage): "\(path): malformed .npy header: \(damage)"
            case let .unsupportedDType(path, descr):
                "\(path): dtype '\(descr)' is not supported; convert with arr.astype('<f4'), '<f8', '|u1', '<i4' or '<i8'"
            case let .fortranOrder(path): "\(path) is stored in Fortran order; save np.ascontiguousarray(arr) instead"
            case let .shapeMismatch(shape, count): "cannot write .npy: shape \(shape) does not match \(count) elements"
            }
        }
    }
}

/// Parses the Python-literal header dictionary, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, without evaluating anything.
private struct NPYHeaderParser {
    struct Header {
        var descr: String
        var fortranOrder: Bool
        var shape: [Int]
    }

    private enum Value {
        case string(String)
        case bool(Bool)
        case tuple([Int])
    }

    private let bytes: [UInt8]
    private let path: String
    private var index = 0

    init(bytes: ArraySlice<UInt8>, path: String) {
        self.bytes = Array(bytes)
        self.path = path
    }

    mutating func parseDictionary() throws -> Header {
        var values: [String: Value] = [:]
        try expect(UInt8(ascii: "{"))
        while true {
            skipSpace()
            if peek() == UInt8(ascii: "}") { index += 1; break }
            let key = try parseString()
            try expect(UInt8(ascii: ":"))
            let value = try parseValue(for: key)
            guard values.updateValue(value, forKey: key) == nil else { throw fail(.duplicateKey(key)) }
            skipSpace()
            if peek() == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "}"))
            break
        }
        skipSpace()
        guard index == bytes.count else { throw fail(.trailingText) }

        guard Set(values.keys) == ["descr", "fortran_order", "shape"] else {
            throw fail(.keys(values.keys.sorted()))
        }
        guard case .string(let descr)? = values["descr"] else {
            throw fail(.descrNotString)
        }
        guard case .bool(let fortran)? = values["fortran_order"] else { throw fail(.fortranOrderNotBool) }
        guard case .tuple(let shape)? = values["shape"] else { throw fail(.shapeNotTuple) }
        return Header(descr: descr, fortranOrder: fortran, shape: shape)
    }

    private mutating func parseValue(for key: String) throws -> Value {
        skipSpace()
        switch peek() {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "("):
            return .tuple(try parseTuple())
        case UInt8(ascii: "T"):
            try expectWord("True")
            return .bool(true)
        case UInt8(ascii: "F"):
            try expectWord("False")
            return .bool(false)
        default:
            throw fail(.unsupportedValue(key: key))
        }
    }

    private mutating func parseString() throws -> String {
        skipSpace()
        guard let quote = peek(), quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
            throw fail(.expectedString(offset: index))
        }
        index += 1
        let start = index
        while let c = peek(), c != quote {
            guard c != UInt8(ascii: "\\"), c >= 0x20 else { throw fail(.escapeInString) }
            index += 1
        }
        guard peek() == quote else { throw fail(.unterminatedString) }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        index += 1
        return text
    }

    private mutating func parseTuple() throws -> [Int] {
        try expect(UInt8(ascii: "("))
        var dims: [Int] = []
        while true {
            skipSpace()
            if peek() == UInt8(ascii: ")") { index += 1; return dims }
            dims.append(try parseInteger())
            skipSpace()
            if peek() == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: ")"))
            return dims
        }
    }

    private mutating func parseInteger() throws -> Int {
        var value = 0
        var digits = 0
        while let c = peek(), c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(c - UInt8(ascii: "0")))
            guard !o1, !o2 else { throw fail(.dimensionTooLarge) }
            value = sum
            digits += 1
            index += 1
        }
        guard digits > 0 else { throw fail(.expectedDimension(offset: index)) }
        if peek() == UInt8(ascii: "L") { index += 1 }  // Python 2 long literal
        return value
    }

    private mutating func expect(_ byte: UInt8) throws {
        skipSpace()
        guard peek() == byte else {
            throw fail(.expectedCharacter(Character(Unicode.Scalar(byte)), offset: index))
        }
        index += 1
    }

    private mutating func expectWord(_ word: String) throws {
        let w = Array(word.utf8)
        guard index + w.count <= bytes.count, Array(bytes[index..<index + w.count]) == w else {
            throw fail(.expectedWord(word, offset: index))
        }
        index += w.count
    }

    private mutating func skipSpace() {
        while let c = peek(), c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D { index += 1 }
    }

    private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    private func fail(_ damage: TarFlowError.NPYFailure.HeaderDamage) -> TarFlowError { .npy(.badHeader(path: path, damage: damage)) }
}
