import Foundation
import FlowIR

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes `bytes` to `url` so that readers see either the old file or the complete new one:
/// the data goes to a temporary file in the same directory (same file system, so `rename` is
/// atomic), is flushed with `fsync`, then renamed over the destination. On any failure the
/// temporary file is removed and an existing destination is left untouched.
public func writeAtomically(_ bytes: [UInt8], to url: URL) throws {
    try FileIO.writeAtomically(bytes, to: url)
}

/// `Data` flavour of `writeAtomically(_:to:)`.
public func writeAtomically(_ data: Data, to url: URL) throws {
    try FileIO.writeAtomically(to: url) { sink in try data.withUnsafeBytes { try sink($0) } }
}

/// Reads a whole regular file, refusing files larger than `maxBytes` before allocating.
func readFileBytes(at url: URL, maxBytes: Int) throws -> [UInt8] {
    try ReadOnlyFile(path: url.standardizedFileURL.path).readAll(maxBytes: maxBytes)
}
