#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Failures of opening, reading, mapping or atomically writing a file; each names the file and
/// the system call. The one file error of FlowIR (rule violations are `IRError`s).
public enum FileAccessError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The system calls a reader makes.
    public enum Operation: String, Sendable { case open, fstat, read, mmap }

    /// A system call failed with `errno`.
    case system(operation: Operation, path: String, errno: Int32)
    /// The file is larger than the reader accepts for its format.
    case tooLarge(path: String, size: Int, limit: Int)
    /// The path exists but is not a regular file (directory, device, FIFO, ...).
    case notRegularFile(path: String)
    /// The file grew or shrank while it was being read.
    case changedWhileReading(path: String)
    /// `FileIO.writeAtomically` could not create its temporary file in `directory`.
    case cannotCreateTemporary(path: String, directory: String, errno: Int32)
    /// `FileIO.writeAtomically` could not write or sync the temporary file for `path`.
    case writeFailed(path: String, errno: Int32)
    /// `FileIO.writeAtomically` could not rename the finished temporary file over `path`.
    case cannotRename(path: String, errno: Int32)
    /// The model reader could not open or map its file (worded "PATH: cannot open: REASON").
    indirect case modelFile(FileAccessError)

    public var description: String {
        switch self {
        case let .system(operation, path, code):
            return "\(operation.rawValue) failed for \(path): \(Self.text(errno: code)) (errno \(code))\(Self.hint(operation, code))"
        case let .tooLarge(path, size, limit):
            return "\(path) is \(size) bytes, more than the \(limit) bytes accepted for this format"
        case let .notRegularFile(path):
            return "\(path) is not a regular file"
        case let .changedWhileReading(path):
            return "\(path) changed while it was being read; retry once the writer has finished"
        case .cannotCreateTemporary, .writeFailed, .cannotRename, .modelFile:
            return "\(path): \(reason)"
        }
    }

    /// The system's words for `errno` (strerror).
    public static func text(errno code: Int32) -> String { String(cString: strerror(code)) }

    /// What to do when a mapping finds no address space (the usual cause is `ulimit -v`).
    static func hint(_ operation: Operation, _ code: Int32) -> String {
        operation == .mmap && code == ENOMEM ? " (no room for it in the address space this process may use: raise ulimit -v)" : ""
    }

    /// How the model reader names the call that failed, before the reason.
    private static func modelFileVerb(_ e: FileAccessError) -> String {
        switch e {
        case .system(.open, _, _): "cannot open: "
        case .system(.fstat, _, _): "cannot stat: "
        case .system(.mmap, _, _): "cannot map: "
        case .system(.read, _, _): "cannot read: "
        case .tooLarge, .notRegularFile, .changedWhileReading, .cannotCreateTemporary, .writeFailed, .cannotRename, .modelFile: ""
        }
    }

    /// The file concerned.
    public var path: String {
        switch self {
        case let .system(_, path, _), let .tooLarge(path, _, _), let .notRegularFile(path), let .changedWhileReading(path),
             let .cannotCreateTemporary(path, _, _), let .writeFailed(path, _), let .cannotRename(path, _): path
        case let .modelFile(e): e.path
        }
    }

    /// What went wrong, without the path (for a caller whose message already names the file).
    public var reason: String {
        switch self {
        case let .system(operation, _, code): Self.text(errno: code) + Self.hint(operation, code)
        case .tooLarge(_, let size, let limit): "\(size) bytes, more than the \(limit) bytes accepted for this format"
        case .notRegularFile: "not a regular file"
        case .changedWhileReading: "the file changed while it was being read; retry once the writer has finished"
        case let .cannotCreateTemporary(_, directory, code): "cannot create a temporary file in \(directory): \(Self.text(errno: code))"
        case let .writeFailed(_, code): "write failed: \(Self.text(errno: code))"
        case let .cannotRename(_, code): "cannot rename into place: \(Self.text(errno: code))"
        case let .modelFile(e): Self.modelFileVerb(e) + e.reason
        }
    }
}

/// An open regular file: the one place every reader (model file, checkpoint, images, arrays)
/// opens, checks and reads a file. Opening never waits (a FIFO is refused, not read) and a
/// read never goes past the size `fstat` reported at open.
public final class ReadOnlyFile: @unchecked Sendable {
    public let path: String
    /// The size `fstat` reported at open.
    public let size: Int
    private var fd: Int32

    public init(path: String) throws(FileAccessError) {
        self.path = path
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below);
        // regular files read the same with or without it.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: .open, path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            closeDescriptor(fd)
            throw .system(operation: .fstat, path: path, errno: code)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            closeDescriptor(fd)
            throw .notRegularFile(path: path)
        }
        self.fd = fd
        size = Int(info.st_size)
    }

    /// Closes the descriptor now (a mapping made from it stays valid); later reads fail.
    public func close() {
        if fd >= 0 { closeDescriptor(fd) }
        fd = -1
    }

    deinit { close() }

    /// Up to `count` bytes at `offset`: fewer only where the file ends.
    public func read(at offset: Int, count: Int) throws(FileAccessError) -> [UInt8] {
        precondition(offset >= 0 && count >= 0, "ReadOnlyFile.read: negative offset or count")
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        var failure: Int32 = 0
        bytes.withUnsafeMutableBytes { buffer in
            while filled < buffer.count, let base = buffer.baseAddress {
                let got = pread(fd, base + filled, buffer.count - filled, off_t(offset + filled))
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                if got == 0 { break }
                filled += got
            }
        }
        if failure != 0 { throw .system(operation: .read, path: path, errno: failure) }
        bytes.removeLast(count - filled)
        return bytes
    }

    /// Exactly the bytes `range`, within the size at open; a file that shrank meanwhile is an error.
    public func read(_ range: Range<Int>) throws(FileAccessError) -> [UInt8] {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "ReadOnlyFile.read: \(range) outside \(size) bytes")
        let bytes = try read(at: range.lowerBound, count: range.count)
        guard bytes.count == range.count else { throw .changedWhileReading(path: path) }
        return bytes
    }

    /// The whole file, refused before allocating when larger than `maxBytes`; a file that
    /// grew meanwhile is an error (one byte past the size is read to see it).
    public func readAll(maxBytes: Int) throws(FileAccessError) -> [UInt8] {
        guard size <= maxBytes else { throw .tooLarge(path: path, size: size, limit: maxBytes) }
        let bytes = try read(at: 0, count: size + 1)
        guard bytes.count <= size else { throw .changedWhileReading(path: path) }
        return bytes
    }
}

/// A read-only private mapping of a whole file: model files hand out windows of it, so
/// weights are never copied. Guarded against SIGBUS while mapped (`MappedFileGuard`): a file
/// cut under a running process ends it with one line naming the file, not a signal.
public final class MappedFile: @unchecked Sendable {
    public let base: UnsafeRawPointer?
    public let length: Int
    private let guardSlot: Int?

    /// Maps `file` at its size at open (an empty file maps to an empty buffer). `what` names
    /// the file in the SIGBUS line (default "the file PATH").
    public init(_ file: ReadOnlyFile, what: String? = nil) throws(FileAccessError) {
        length = file.size
        if length == 0 {
            base = nil
            guardSlot = nil
            return
        }
        guard let fd = file.descriptor else { throw .system(operation: .mmap, path: file.path, errno: EBADF) }
        let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw .system(operation: .mmap, path: file.path, errno: errno) }
        base = UnsafeRawPointer(p)
        guardSlot = MappedFileGuard.register(UnsafeRawBufferPointer(start: p, count: length), what: what ?? "the file \(file.path)")
    }

    /// Opens and maps the file at `path`.
    public convenience init(path: String, what: String? = nil) throws(FileAccessError) {
        try self.init(ReadOnlyFile(path: path), what: what)
    }

    /// The mapped bytes; valid only while this object lives (see `withUnsafeBytes`).
    public var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    /// Calls `body` with the mapped bytes, keeping the mapping alive until it returns.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(buffer) }
    }

    deinit {
        MappedFileGuard.release(guardSlot)
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), length) }
    }
}

/// `close(2)`, named apart from `ReadOnlyFile.close()`.
private func closeDescriptor(_ fd: Int32) { _ = close(fd) }

extension ReadOnlyFile {
    /// The open descriptor, nil once closed.
    fileprivate var descriptor: Int32? { fd >= 0 ? fd : nil }
}
