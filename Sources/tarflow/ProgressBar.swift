import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The progress bar of every long command (likelihood, classify, denoise, sample, convert,
/// compile): one line on stderr with count, rate and ETA, redrawn at most ten times a second.
/// Drawn only when stderr is a terminal, so logs and pipes get nothing; `--quiet` turns it off.
final class ProgressBar {
    let label: String
    let unit: String
    let total: Int
    let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var drawn = false
    private let sink: (String) -> Void

    /// `isTerminal` and `sink` are for tests; commands take the defaults.
    init(_ label: String, total: Int, unit: String, quiet: Bool, isTerminal: Bool = isatty(2) == 1,
         sink: @escaping (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) }) {
        self.label = label
        self.unit = unit
        self.total = max(total, 0)
        self.enabled = !quiet && isTerminal
        self.sink = sink
    }

    var elapsed: Double { Date().timeIntervalSince(start) }

    /// `done` of `total` finished.
    func update(_ done: Int) {
        guard enabled else { return }
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= 0.1 || done >= total else { return }
        lastDraw = now
        drawn = true
        sink("\r" + ProgressBar.line(label: label, done: done, total: total, unit: unit, elapsed: elapsed) + "\u{1B}[K")
    }

    /// Ends the bar's line (the final count stays on screen).
    func finish() {
        guard enabled, drawn else { return }
        sink("\r" + ProgressBar.line(label: label, done: total, total: total, unit: unit, elapsed: elapsed) + "\u{1B}[K\n")
        drawn = false
    }

    /// `label [#####     ] 512/10000 images  123.4 images/s  ETA 1:17`.
    static func line(label: String, done: Int, total: Int, unit: String, elapsed: Double, width: Int = 24) -> String {
        let d = min(max(done, 0), total)
        let fraction = total > 0 ? Double(d) / Double(total) : 1
        let filled = min(width, Int(fraction * Double(width)))
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        var s = "\(label) [\(bar)] \(d)/\(total) \(unit)"
        if elapsed > 0, d > 0 {
            let rate = Double(d) / elapsed
            s += "  " + (rate >= 100 ? String(format: "%.0f", rate) : String(format: "%.1f", rate)) + " \(unit)/s"
            s += d < total ? "  ETA \(clock(Double(total - d) / rate))" : "  \(clock(elapsed))"
        }
        return s
    }

    /// Seconds as m:ss (or h:mm:ss).
    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let t = Int(seconds.rounded(.up))
        let h = t / 3600, m = (t / 60) % 60, s = t % 60
        return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
    }
}
