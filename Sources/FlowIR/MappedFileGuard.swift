#if canImport(Glibc)
import Glibc
#endif

/// Turns SIGBUS on a memory-mapped file into a one-line error and exit 1. A file truncated or
/// rewritten in place while it is mapped raises SIGBUS on the next read of a vanished page;
/// without this, any program using the library (not only the `tarflow` tool) dies of the
/// signal. Each mapping registers its range and the line to print, written before any fault;
/// the handler, installed once on the first registration, only looks the faulting address up,
/// `write`s the line, removes the temporary files of writes under way (`TemporaryFiles`) and
/// calls `_exit(1)`. A SIGBUS outside every registered range goes to the handler that was
/// installed before (or the default action), so the library hides no other fault.
public enum MappedFileGuard {
    static let slots = 64
    static let messageBytes = 4608
    /// Per slot: the NUL-terminated line the handler writes, and as its two words the first and
    /// one-past-last address of the range.
    static let table = SignalSafeSlots(count: slots, textBytes: messageBytes, wordsPerSlot: 2)
    /// The SIGBUS action in place before ours, called for faults outside every range.
    nonisolated(unsafe) static let previous: UnsafeMutablePointer<sigaction> = {
        let p = UnsafeMutablePointer<sigaction>.allocate(capacity: 1)
        p.initialize(to: sigaction())
        return p
    }()
    /// Initializes every table and installs the handler, once (the first registration).
    nonisolated(unsafe) static var installed: Bool = {
        _ = table; _ = previous
        _ = TemporaryFiles.table  // never first touched inside the handler
        var action = sigaction()
        action.__sigaction_handler.sa_sigaction = { sig, info, context in
            MappedFileGuard.handle(sig, info, context)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_SIGINFO
        sigaction(SIGBUS, &action, previous)
        return true
    }()

    /// Guards `buffer`, a mapping of the file `path`, until `release` is given the returned slot.
    /// The line printed on SIGBUS names `what` (e.g. "the model file /x/m.tflow"). Nil when the
    /// table is full or the buffer empty (the mapping still works, it is just not guarded).
    public static func register(_ buffer: UnsafeRawBufferPointer, what: String) -> Int? {
        guard let base = buffer.baseAddress, buffer.count > 0, installed else { return nil }
        let text = "error: \(what) was truncated or changed while this process was reading it (SIGBUS); "
            + "do not rewrite a file in place while it is in use: write a new file and rename it, then run again\n"
        var bytes = Array(text.utf8.prefix(messageBytes - 2))
        if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
        return table.register(text: bytes, words: [UInt(bitPattern: base), UInt(bitPattern: base) + UInt(buffer.count)])
    }

    /// Stops guarding a range (before it is unmapped).
    public static func release(_ slot: Int?) {
        guard let slot else { return }
        table.unregister(slot)
    }

    /// The handler. Async-signal-safe: reads the tables, `write`, `unlink`, `_exit`, `sigaction`.
    static func handle(_ sig: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
        // A fault (si_code > 0), not a SIGBUS sent with kill or raise.
        if let info, info.pointee.si_code > 0 {
            let address = UInt(bitPattern: info.pointee._sifields._sigfault.si_addr)
            for i in 0..<slots where table.isUsed(i) && table.words(i)[0] <= address && address < table.words(i)[1] {
                let m = table.text(i)
                _ = write(2, m, strlen(m))
                TemporaryFiles.unlinkAll()
                _exit(1)
            }
        }
        // Not ours: the previous handler, else the default action (the faulting instruction
        // runs again on return and faults again; a SIGBUS sent with kill is raised again).
        let p = previous.pointee
        if p.sa_flags & SA_SIGINFO != 0, let f = p.__sigaction_handler.sa_sigaction {
            f(sig, info, context)
            return
        }
        let h = p.__sigaction_handler.sa_handler
        if let h, unsafeBitCast(h, to: Int.self) != 1 /* SIG_IGN */ {
            h(sig)
            return
        }
        var dfl = sigaction()
        dfl.__sigaction_handler.sa_handler = nil  // SIG_DFL
        sigemptyset(&dfl.sa_mask)
        sigaction(SIGBUS, &dfl, nil)
        raise(SIGBUS)
    }
}
