import TarFlow
#if canImport(Glibc)
import Glibc
#endif

/// Signals the tool turns into its usual one-line error. Model weights are memory-mapped: a
/// model file truncated or rewritten in place while a run reads it raises SIGBUS on the next
/// read of a vanished page; the handler reports the file and exits 1 instead of dumping core.
enum Signals {
    static let messageBytes = 8192
    /// The NUL-terminated line the SIGBUS handler writes, prepared outside the handler.
    nonisolated(unsafe) static let message: UnsafeMutablePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: messageBytes)
        p.initialize(repeating: 0, count: messageBytes)
        return p
    }()

    /// SIGINT/SIGTERM/SIGHUP remove temporary files; SIGBUS reports the mapped file and exits 1.
    static func install() {
        TemporaryFiles.installSignalHandlers()
        setMappedFile(nil)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            let m = Signals.message
            _ = write(2, m, strlen(m))
            TemporaryFiles.unlinkAll()
            _exit(1)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGBUS, &action, nil)
    }

    /// Names the memory-mapped model file in the SIGBUS message.
    static func setMappedFile(_ path: String?) {
        let file = path.map { "the model file \($0)" } ?? "a memory-mapped file"
        let text = "error: \(file) was truncated or changed while this run was reading it (SIGBUS); "
            + "do not rewrite a model file in place while it is in use: write a new file and rename it, then run again\n"
        let bytes = Array(text.utf8.prefix(messageBytes - 1))
        for (i, b) in bytes.enumerated() { message[i] = CChar(bitPattern: b) }
        message[bytes.count] = 0
    }
}
