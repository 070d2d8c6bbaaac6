import CTarFlowZlib
import Foundation
import ZIPFoundation

/// NumPy `.npz` files: a zip archive of `.npy` members, one per named array, as `np.savez`
/// writes them (`numpy.load` returns a mapping from names to arrays).
///
/// Members are stored uncompressed (like `np.savez`, not `np.savez_compressed`), in the order
/// given, with a fixed timestamp (1980-01-01) so the same arrays give the same bytes.
public enum NPZ {
    /// Files larger than this are refused before anything is read.
    public static let maxFileBytes = 1 << 34

    public static func write(_ arrays: [(name: String, array: Tensor)], to url: URL) throws {
        try writeAtomically(try encode(arrays), to: url)
    }

    /// Arrays as `NAME.npy` members, then `extra` members as they are (e.g. a run record).
    public static func write(arrays: [(name: String, array: Tensor)], extra: [(name: String, bytes: [UInt8])] = [], to url: URL) throws {
        try writeAtomically(try encode(members: try members(arrays) + extra), to: url)
    }

    /// The archive bytes of `arrays`.
    public static func encode(_ arrays: [(name: String, array: Tensor)]) throws -> [UInt8] {
        try encode(members: try members(arrays))
    }

    static func members(_ arrays: [(name: String, array: Tensor)]) throws -> [(name: String, bytes: [UInt8])] {
        var seen = Set<String>()
        return try arrays.map { name, array in
            guard !name.isEmpty, !name.contains("/"), seen.insert(name).inserted else { throw TarFlowError.npz(.badName(name)) }
            return (name + ".npy", try NPY.encode(array))
        }
    }

    /// The archive bytes: local headers and data, then the central directory.
    public static func encode(members: [(name: String, bytes: [UInt8])]) throws -> [UInt8] {
        var out: [UInt8] = [], central: [UInt8] = []
        var seen = Set<String>()
        func u16(_ v: Int, _ b: inout [UInt8]) { b += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func u32(_ v: Int, _ b: inout [UInt8]) { for i in 0..<4 { b.append(UInt8((v >> (8 * i)) & 0xFF)) } }
        for (name, data) in members {
            guard !name.isEmpty, seen.insert(name).inserted else { throw TarFlowError.npz(.badName(name)) }
            let member = Array(name.utf8)
            // No ZIP64: a member and the archive stay below 4 GiB.
            guard data.count < Int(UInt32.max), out.count + data.count + member.count + 30 < Int(UInt32.max) else {
                throw TarFlowError.npz(.tooLarge(name: name, bytes: data.count))
            }
            let crc = data.withUnsafeBufferPointer { Int(crc32(0, $0.baseAddress, uInt($0.count))) }
            let offset = out.count
            // version 20, no flags, stored, time 0:00, date 1980-01-01.
            u32(0x0403_4B50, &out); u16(20, &out); u16(0, &out); u16(0, &out); u16(0, &out); u16(0x21, &out)
            u32(crc, &out); u32(data.count, &out); u32(data.count, &out); u16(member.count, &out); u16(0, &out)
            out += member
            out += data
            u32(0x0201_4B50, &central); u16(20, &central); u16(20, &central); u16(0, &central); u16(0, &central)
            u16(0, &central); u16(0x21, &central)
            u32(crc, &central); u32(data.count, &central); u32(data.count, &central); u16(member.count, &central)
            u16(0, &central); u16(0, &central); u16(0, &central); u16(0, &central); u32(0, &central); u32(offset, &central)
            central += member
        }
        guard members.count < 0xFFFF, out.count + central.count + 22 < Int(UInt32.max) else {
            throw TarFlowError.npz(.tooLarge(name: "archive", bytes: out.count + central.count))
        }
        let centralOffset = out.count
        out += central
        u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out); u16(members.count, &out); u16(members.count, &out)
        u32(central.count, &out); u32(centralOffset, &out); u16(0, &out)
        return out
    }

    /// The arrays of an `.npz`, in archive order, named without the `.npy` suffix; any other
    /// member is an error.
    public static func read(contentsOf url: URL) throws -> [(name: String, array: Tensor)] {
        let (arrays, other) = try readArrays(contentsOf: url)
        if let m = other.first { throw TarFlowError.npz(.badMember(path: url.path, member: m.name)) }
        return arrays
    }

    /// Arrays (`NAME.npy` members, the suffix dropped) and other members, in archive order.
    public static func readArrays(contentsOf url: URL) throws -> (arrays: [(name: String, array: Tensor)], other: [(name: String, bytes: [UInt8])]) {
        var arrays: [(name: String, array: Tensor)] = [], other: [(name: String, bytes: [UInt8])] = []
        for (name, bytes) in try readMembers(contentsOf: url) {
            if name.hasSuffix(".npy") {
                arrays.append((String(name.dropLast(4)), try NPY.parse(bytes, path: "\(url.path)[\(name)]")))
            } else {
                other.append((name, bytes))
            }
        }
        return (arrays, other)
    }

    /// Every member's bytes, in archive order (stored or deflated).
    public static func readMembers(contentsOf url: URL) throws -> [(name: String, bytes: [UInt8])] {
        let bytes = try readFileBytes(at: url, maxBytes: maxFileBytes)
        let archive: Archive
        do { archive = try Archive(data: Data(bytes), accessMode: .read) } catch {
            throw TarFlowError.npz(.notNPZ(path: url.path))
        }
        var out: [(name: String, bytes: [UInt8])] = []
        var seen = Set<String>()
        for entry in archive where entry.type == .file {
            guard seen.insert(entry.path).inserted, entry.uncompressedSize <= UInt64(NPY.maxFileBytes) else {
                throw TarFlowError.npz(.badMember(path: url.path, member: entry.path))
            }
            var data = [UInt8]()
            do {
                _ = try archive.extract(entry, bufferSize: 1 << 20) { chunk in
                    guard data.count + chunk.count <= Int(entry.uncompressedSize) else { throw TarFlowError.npz(.badMember(path: url.path, member: entry.path)) }
                    data += chunk
                }
            } catch let e as TarFlowError { throw e } catch {
                throw TarFlowError.npz(.corrupt(path: url.path, member: entry.path, reason: "\(error)"))
            }
            out.append((entry.path, data))
        }
        return out
    }
}

extension TarFlowError {
    /// Failures of `.npz` reading and writing.
    public enum NPZFailure: Sendable, Equatable, CustomStringConvertible {
        case badName(String)
        case tooLarge(name: String, bytes: Int)
        case notNPZ(path: String)
        case badMember(path: String, member: String)
        case corrupt(path: String, member: String, reason: String)

        public var description: String {
            switch self {
            case let .badName(name): "cannot write .npz: array name '\(name)' is empty, repeated or contains '/'"
            case let .tooLarge(name, bytes):
                "cannot write .npz: '\(name)' takes \(bytes) bytes, more than the 4 GiB an .npz without ZIP64 holds; write .safetensors or fewer images"
            case let .notNPZ(path): "\(path) is not an .npz (zip) archive"
            case let .badMember(path, member):
                "\(path): member '\(member)' is not a .npy array of a sane size; write the file with numpy.savez"
            case let .corrupt(path, member, reason):
                "\(path): member '\(member)' cannot be read (\(reason)); the file is damaged, write it again"
            }
        }
    }
}
