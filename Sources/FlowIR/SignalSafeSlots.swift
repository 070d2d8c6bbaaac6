#if canImport(Glibc)
import Glibc
#endif

/// A fixed table of slots, each a NUL-terminated text of at most `textBytes - 1` bytes and
/// `wordsPerSlot` machine words, filled and emptied under a lock from normal code and read from a
/// signal handler (`MappedFileGuard`, `TemporaryFiles`). A handler may neither allocate nor
/// lock, so every buffer is allocated once, when the table is made, and never grows or moves;
/// a reader takes no lock and looks only at `isUsed(i)` and the slot's memory. A slot's text
/// and words are written before its flag is set, and a full table refuses (nil) rather than
/// grows. Make it before any handler can run (a `static let` touched once in normal code).
struct SignalSafeSlots: @unchecked Sendable {
    let count: Int
    let textBytes: Int
    let wordsPerSlot: Int
    /// `used[i] != 0` marks a live slot.
    private let used: UnsafeMutablePointer<UInt8>
    private let texts: UnsafeMutablePointer<CChar>
    private let values: UnsafeMutablePointer<UInt>
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

    init(count: Int, textBytes: Int, wordsPerSlot: Int = 0) {
        precondition(count > 0 && textBytes > 0 && wordsPerSlot >= 0)
        self.count = count
        self.textBytes = textBytes
        self.wordsPerSlot = wordsPerSlot
        used = .allocate(capacity: count)
        used.initialize(repeating: 0, count: count)
        texts = .allocate(capacity: count * textBytes)
        texts.initialize(repeating: 0, count: count * textBytes)
        values = .allocate(capacity: max(1, count * wordsPerSlot))
        values.initialize(repeating: 0, count: max(1, count * wordsPerSlot))
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_mutex_t())
        pthread_mutex_init(lock, nil)
    }

    /// Fills the first free slot with `text` (then a NUL) and `words`, then marks it used.
    /// The slot, nil when every slot is in use.
    func register(text: [UInt8], words: [UInt] = []) -> Int? {
        precondition(text.count < textBytes && words.count == wordsPerSlot)
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for i in 0..<count where used[i] == 0 {
            let t = self.text(i)
            for (j, b) in text.enumerated() { t[j] = CChar(bitPattern: b) }
            t[text.count] = 0
            let w = self.words(i)
            for (j, v) in words.enumerated() { w[j] = v }
            used[i] = 1
            return i
        }
        return nil
    }

    /// Frees `slot` for reuse; a handler that runs after this no longer sees it.
    func unregister(_ slot: Int) {
        pthread_mutex_lock(lock)
        used[slot] = 0
        pthread_mutex_unlock(lock)
    }

    // Async-signal-safe: plain loads from memory allocated in `init`.

    func isUsed(_ slot: Int) -> Bool { used[slot] != 0 }
    /// The slot's NUL-terminated text.
    func text(_ slot: Int) -> UnsafeMutablePointer<CChar> { texts + slot * textBytes }
    /// The slot's `wordsPerSlot` words.
    func words(_ slot: Int) -> UnsafeMutablePointer<UInt> { values + slot * wordsPerSlot }
}
