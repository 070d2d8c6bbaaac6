#if canImport(Glibc)
import Glibc
#endif

/// The temporary files of writes under way (`FileIO.writeAtomically`), kept where a signal
/// handler can reach them without allocating or locking: on SIGINT, SIGTERM or SIGHUP each is
/// unlinked before the process dies, so an interrupted write leaves no `.NAME.tmp-XXXXXX` behind.
public enum TemporaryFiles {
    static let slots = 64
    static let slotBytes = 4096
    /// `slots` NUL-terminated paths.
    static let table = SignalSafeSlots(count: slots, textBytes: slotBytes)

    /// Records `path` for removal on a signal; the slot to pass to `unregister`, nil when the
    /// table is full or the path too long (the write still works, it is just not cleaned up).
    public static func register(_ path: String) -> Int? {
        let bytes = Array(path.utf8)
        guard bytes.count < slotBytes else { return nil }
        return table.register(text: bytes)
    }

    public static func unregister(_ slot: Int?) {
        guard let slot else { return }
        table.unregister(slot)
    }

    /// Creates a new file from `template` (its trailing `XXXXXX` replaced by random letters, as
    /// `mkstemp`; `O_CREAT | O_EXCL`, mode 0600), registering the path before the file exists:
    /// a signal that arrives at any moment, on any thread, finds every file it must remove.
    /// Returns the file descriptor (-1 with `errno` set on failure), the path and its slot.
    public static func create(template: String) -> (fd: Int32, path: String, slot: Int?) {
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let stem = template.hasSuffix("XXXXXX") ? String(template.dropLast(6)) : template
        for _ in 0..<100 {
            let path = stem + String((0..<6).map { _ in letters.randomElement()! })
            let slot = register(path)
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 { return (fd, path, slot) }
            let e = errno
            unregister(slot)
            guard e == EEXIST else { errno = e; return (-1, path, nil) }
        }
        errno = EEXIST
        return (-1, template, nil)
    }

    /// Unlinks every registered path. Async-signal-safe: reads the table and calls `unlink`.
    public static func unlinkAll() {
        for i in 0..<slots where table.isUsed(i) { _ = unlink(table.text(i)) }
    }

    /// Installs handlers for SIGINT, SIGTERM and SIGHUP that unlink the temporary files, then
    /// die of the same signal (default action), so callers still see how the process ended.
    public static func installSignalHandlers() {
        _ = table  // initialized here, never first inside a handler
        for s in [SIGINT, SIGTERM, SIGHUP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { sig in
                TemporaryFiles.unlinkAll()
                signal(sig, SIG_DFL)
                raise(sig)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = 0
            sigaction(s, &action, nil)
        }
    }
}
