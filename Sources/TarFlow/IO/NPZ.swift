import CTarFlowZlib
import Foundation
import ZIPFoundation

/// NumPy `.npz` archives: a zip of members, arrays being `NAME.npy` members (np.savez).
///
/// Writing stores members uncompressed with a fixed 1980-01-01 timestamp, so identical
/// members give identical files; reading accepts stored and deflated members
/// (np.savez_compressed). No zip64: members and archives stay below 4 GiB.
public enum NPZ {
    /// Upper bound of one member, as for `.npy` files.
    public static let maxMemberBytes = NPY.maxFileBytes

    public static func write(_ members: [(name: String, bytes: [UInt8])], to url: URL) throws {
        try writeAtomically(try encode(members), to: url)
    }

    /// Arrays as `NAME.npy` members, in the order given.
    public static func write(arrays: [(name: String, array: HostArray)], extra: [(name: String, bytes: [UInt8])] = [], to url: URL) throws {
        try write(try arrays.map { ($0.name + ".npy", try NPY.encode($0.array)) } + extra, to: url)
    }

    public static func encode(_ members: [(name: String, bytes: [UInt8])]) throws -> [UInt8] {
        var out: [UInt8] = [], central: [UInt8] = []
        func u16(_ v: Int, _ a: inout [UInt8]) { for i in 0..<2 { a.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        func u32(_ v: Int, _ a: inout [UInt8]) { for i in 0..<4 { a.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        var names = Set<String>()
        for (name, bytes) in members {
            let nameBytes = Array(name.utf8)
            guard !nameBytes.isEmpty, nameBytes.count < 0xFFFF, names.insert(name).inserted else {
                throw TarFlowError.invalidInput("npz: member name '\(name)' is empty, too long or given twice")
            }
            guard bytes.count < 0xFFFF_FFFF, out.count < 0xFFFF_FFFF - bytes.count, members.count < 0xFFFF else {
                throw TarFlowError.invalidInput("npz: member '\(name)' does not fit a zip without zip64 (4 GiB); write .npy or .safetensors")
            }
            let crc = bytes.withUnsafeBufferPointer { Int(crc32(0, $0.baseAddress, uInt($0.count))) }
            let offset = out.count
            // Shared fields of the local and central headers: version 2.0, no flags, stored,
            // time 00:00, date 1980-01-01, CRC, sizes, name length.
            var common: [UInt8] = []
            u16(20, &common); u16(0, &common); u16(0, &common); u16(0, &common); u16(0x21, &common)
            u32(crc, &common); u32(bytes.count, &common); u32(bytes.count, &common); u16(nameBytes.count, &common)
            u32(0x0403_4B50, &out); out += common; u16(0, &out); out += nameBytes; out += bytes
            u32(0x0201_4B50, &central); u16(20, &central); central += common
            u16(0, &central); u16(0, &central); u16(0, &central); u16(0, &central); u32(0, &central); u32(offset, &central)
            central += nameBytes
        }
        let cdOffset = out.count
        out += central
        u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out); u16(members.count, &out); u16(members.count, &out)
        u32(central.count, &out); u32(cdOffset, &out); u16(0, &out)
        return out
    }

    /// Every member, in archive order.
    public static func read(contentsOf url: URL) throws -> [(name: String, bytes: [UInt8])] {
        func bad(_ m: String) -> TarFlowError { .invalidInput("\(url.path): \(m)") }
        let archive: Archive
        do { archive = try Archive(url: url, accessMode: .read) } catch { throw bad("not a readable .npz (zip) archive; write it again") }
        var out: [(name: String, bytes: [UInt8])] = []
        var seen = Set<String>()
        for entry in archive where entry.type == .file {
            guard seen.insert(entry.path).inserted else { throw bad("the member '\(entry.path)' appears twice") }
            guard entry.uncompressedSize <= UInt64(maxMemberBytes) else { throw bad("member '\(entry.path)' is larger than \(maxMemberBytes) bytes") }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(Int(entry.uncompressedSize))
            do {
                _ = try archive.extract(entry, skipCRC32: false) { chunk in
                    guard bytes.count + chunk.count <= Int(entry.uncompressedSize) else { throw bad("member '\(entry.path)' is longer than its header says") }
                    bytes += chunk
                }
            } catch let e as TarFlowError { throw e } catch { throw bad("member '\(entry.path)' cannot be read (\(error)); the file is damaged") }
            out.append((entry.path, bytes))
        }
        return out
    }

    /// Arrays (`NAME.npy` members, the suffix dropped) and other members, in archive order.
    public static func readArrays(contentsOf url: URL) throws -> (arrays: [(name: String, array: HostArray)], other: [(name: String, bytes: [UInt8])]) {
        var arrays: [(name: String, array: HostArray)] = [], other: [(name: String, bytes: [UInt8])] = []
        for (name, bytes) in try read(contentsOf: url) {
            if name.hasSuffix(".npy") {
                arrays.append((String(name.dropLast(4)), try NPY.parse(bytes, path: "\(url.path):\(name)")))
            } else {
                other.append((name, bytes))
            }
        }
        return (arrays, other)
    }
}
