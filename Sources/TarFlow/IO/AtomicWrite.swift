import Foundation
import FlowIR

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Failures of the file primitives below; each names the file and the system call.
public enum FileAccessError: Error, Sendable, CustomStringConvertible {
    /// A system call failed with `errno`.
    case system(operation: String, path: String, errno: Int32)
    /// The file is larger than the reader accepts for its format.
    case tooLarge(path: String, size: Int, limit: Int)
    /// The path exists but is not a regular file (directory, device, ...).
    case notRegularFile(path: String)
    /// The file grew between `fstat` and `read`.
    case changedWhileReading(path: String)

    public var description: String {
        switch self {
        case let .system(operation, path, code):
            return "\(operation) failed for \(path): \(String(cString: strerror(code))) (errno \(code))"
        case let .tooLarge(path, size, limit):
            return "\(path) is \(size) bytes, more than the \(limit) bytes accepted for this format"
        case let .notRegularFile(path):
            return "\(path) is not a regular file"
        case let .changedWhileReading(path):
            return "\(path) changed while it was being read; retry once the writer has finished"
        }
    }
}

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
    let path = url.standardizedFileURL.path
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below); regular
    // files read the same with or without it.
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { throw FileAccessError.system(operation: "open", path: path, errno: errno) }
    defer { _ = close(fd) }

    var info = stat()
    guard fstat(fd, &info) == 0 else { throw FileAccessError.system(operation: "fstat", path: path, errno: errno) }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw FileAccessError.notRegularFile(path: path) }
    let size = Int(info.st_size)
    guard size <= maxBytes else { throw FileAccessError.tooLarge(path: path, size: size, limit: maxBytes) }

    // Read one byte past the expected size so a file that grew meanwhile is still bounded.
    var bytes = [UInt8](repeating: 0, count: size + 1)
    var filled = 0
    try bytes.withUnsafeMutableBytes { buffer in
        while filled < buffer.count, let base = buffer.baseAddress {
            let got = read(fd, base + filled, buffer.count - filled)
            if got < 0 {
                if errno == EINTR { continue }
                throw FileAccessError.system(operation: "read", path: path, errno: errno)
            }
            if got == 0 { break }
            filled += got
        }
    }
    guard filled <= size else { throw FileAccessError.changedWhileReading(path: path) }
    bytes.removeLast(bytes.count - filled)
    return bytes
}

/// An open regular file read by position, so a reader that needs a header and then part of the
/// data (the first N images) reads no more than that, whatever the file's size.
final class PositionalFile {
    let path: String
    /// The size `fstat` reported at open.
    let size: Int
    private let fd: Int32

    init(url: URL) throws {
        path = url.standardizedFileURL.path
        // O_NONBLOCK: a FIFO must not wait for a writer (it is refused below).
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FileAccessError.system(operation: "open", path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            _ = close(fd)
            throw FileAccessError.system(operation: "fstat", path: path, errno: code)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            _ = close(fd)
            throw FileAccessError.notRegularFile(path: path)
        }
        size = Int(info.st_size)
    }

    deinit { _ = close(fd) }

    /// Bytes `range`, within the size at open; a file that shrank meanwhile is an error.
    func read(_ range: Range<Int>) throws -> [UInt8] {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "PositionalFile.read: \(range) outside \(size) bytes")
        let lower = range.lowerBound
        var bytes = [UInt8](repeating: 0, count: range.count)
        var filled = 0
        try bytes.withUnsafeMutableBytes { buffer in
            while filled < buffer.count, let base = buffer.baseAddress {
                let got = pread(fd, base + filled, buffer.count - filled, off_t(lower + filled))
                if got < 0 {
                    if errno == EINTR { continue }
                    throw FileAccessError.system(operation: "read", path: path, errno: errno)
                }
                if got == 0 { throw FileAccessError.changedWhileReading(path: path) }
                filled += got
            }
        }
        return bytes
    }
}
