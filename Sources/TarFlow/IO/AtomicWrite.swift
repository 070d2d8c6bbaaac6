import Foundation

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
    try bytes.withUnsafeBytes { try writeAtomically(rawBuffer: $0, to: url) }
}

/// `Data` flavour of `writeAtomically(_:to:)`.
public func writeAtomically(_ data: Data, to url: URL) throws {
    try data.withUnsafeBytes { try writeAtomically(rawBuffer: $0, to: url) }
}

func writeAtomically(rawBuffer: UnsafeRawBufferPointer, to url: URL) throws {
    let destination = url.standardizedFileURL
    let path = destination.path
    let directory = destination.deletingLastPathComponent().path
    let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 16)
    let temporary = directory + "/." + destination.lastPathComponent + ".tmp-\(getpid())-" + suffix

    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FileAccessError.system(operation: "open (temporary file)", path: temporary, errno: errno) }
    var committed = false
    var closed = false
    defer {
        if !closed { _ = close(fd) }
        if !committed { _ = unlink(temporary) }
    }

    var offset = 0
    while offset < rawBuffer.count, let base = rawBuffer.baseAddress {
        // Chunks stay below the 2 GiB limit some kernels put on one write.
        let chunk = min(rawBuffer.count - offset, 1 << 30)
        let written = write(fd, base + offset, chunk)
        if written < 0 {
            if errno == EINTR { continue }
            throw FileAccessError.system(operation: "write", path: temporary, errno: errno)
        }
        offset += written
    }
    guard fsync(fd) == 0 else { throw FileAccessError.system(operation: "fsync", path: temporary, errno: errno) }
    closed = true
    guard close(fd) == 0 else { throw FileAccessError.system(operation: "close", path: temporary, errno: errno) }
    guard rename(temporary, path) == 0 else {
        throw FileAccessError.system(operation: "rename", path: path, errno: errno)
    }
    committed = true

    // Make the rename itself durable; a failure here cannot undo the (already visible) write.
    let dirFD = open(directory, O_RDONLY | O_CLOEXEC)
    if dirFD >= 0 {
        _ = fsync(dirFD)
        _ = close(dirFD)
    }
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
