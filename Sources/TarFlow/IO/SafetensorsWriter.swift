import Foundation
import FlowIR

/// Writes safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian
/// header length, a JSON header, then the raw little-endian tensor data.
///
/// Tensor data is laid out in the order given, contiguously (the format allows no gaps), so a
/// caller wanting every tensor naturally aligned lists 8-byte types before 4- and 1-byte ones, as
/// the reference writer does by sorting; readers that copy (NumPy, our own) do not care. The header is deterministic so that identical
/// inputs give identical files: `__metadata__` first (omitted when empty), then tensors sorted
/// by name, each as `{"dtype":…,"shape":[…],"data_offsets":[begin,end]}`, compact JSON, padded
/// with spaces to a multiple of 8 bytes like the reference implementation.
public enum SafetensorsWriter {
    public static func write(_ tensors: [(name: String, array: Tensor)], to url: URL,
                             metadata: [String: String] = [:]) throws {
        try writeAtomically(try encode(tensors, metadata: metadata), to: url)
    }

    /// The file bytes `write` would produce.
    public static func encode(_ tensors: [(name: String, array: Tensor)],
                              metadata: [String: String] = [:]) throws -> [UInt8] {
        var seen = Set<String>()
        var entries: [(name: String, json: String)] = []
        var offset = 0
        for (name, array) in tensors {
            guard name != "__metadata__" else { throw TarFlowError.safetensorsWriter(.reservedName) }
            guard seen.insert(name).inserted else { throw TarFlowError.safetensorsWriter(.duplicateName(name)) }
            guard elementCount(array.shape) == array.count else {
                throw TarFlowError.safetensorsWriter(.shapeMismatch(name: name, shape: array.shape, count: array.count))
            }
            let end = offset + array.byteCount
            let shape = array.shape.map(String.init).joined(separator: ",")
            entries.append((name, "{\"dtype\":\"\(dtypeName(array.dtype))\",\"shape\":[\(shape)],"
                + "\"data_offsets\":[\(offset),\(end)]}"))
            offset = end
        }

        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
                .map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            fields.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        for entry in entries.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            fields.append("\(jsonString(entry.name)):\(entry.json)")
        }
        var header = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)

        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        let length = UInt64(header.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: length >> (8 * UInt64(i)))) }
        out += header
        for (_, array) in tensors { out += array.littleEndianBytes() }
        return out
    }

    static func dtypeName(_ element: DType) -> String {
        switch element {
        case .float32: return "F32"
        case .float64: return "F64"
        case .uint8: return "U8"
        case .int32: return "I32"
        case .int64: return "I64"
        case .float16: return "F16"
        case .bfloat16: return "BF16"
        }
    }

    /// The element types `SafetensorsReader` accepts: the ones this project's commands write.
    static let readableTypes: [DType] = [.float32, .float64, .uint8, .int32, .int64]

    /// A JSON string literal; non-ASCII text stays UTF-8, control characters are escaped.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension TarFlowError {
    /// Failures of safetensors writing.
    public enum SafetensorsWriterFailure: Sendable, Equatable, CustomStringConvertible {
        case duplicateName(String)
        case reservedName
        case shapeMismatch(name: String, shape: [Int], count: Int)

        public var description: String {
            switch self {
            case let .duplicateName(name): "cannot write safetensors: tensor name '\(name)' appears twice"
            case .reservedName: "cannot write safetensors: '__metadata__' is reserved and cannot name a tensor"
            case let .shapeMismatch(name, shape, count):
                "cannot write safetensors: tensor '\(name)' has shape \(shape) but \(count) elements"
            }
        }
    }
}
