import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What this process may really allocate: the smallest of its address-space and data-segment
/// limits (`ulimit -v`, `ulimit -d`), its cgroup's `memory.max` and physical RAM. An estimate
/// compared with RAM alone lets a run through that then dies in `malloc` under a limit.
public struct MemoryLimit: Sendable, Equatable, CustomStringConvertible {
    /// Bytes, `Int.max` when nothing is known.
    public var bytes: Int
    /// Where the limit comes from, for messages ("RLIMIT_AS (ulimit -v)", "physical RAM", ...).
    public var source: String

    public var description: String { "\(bytes) bytes (\(source))" }

    /// The limit that applies now; read once per call (limits can change at run time).
    public static func current(cgroupRoot: String = "/sys/fs/cgroup") -> MemoryLimit {
        var best = MemoryLimit(bytes: physicalRAM(), source: "physical RAM")
        func consider(_ b: Int?, _ s: String) { if let b, b > 0, b < best.bytes { best = MemoryLimit(bytes: b, source: s) } }
        consider(rlimit(RLIMIT_AS), "RLIMIT_AS (ulimit -v)")
        consider(rlimit(RLIMIT_DATA), "RLIMIT_DATA (ulimit -d)")
        consider(cgroupLimit(root: cgroupRoot), "cgroup memory.max")
        return best
    }

    static func physicalRAM() -> Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return Int.max }
        let (m, o) = pages.multipliedReportingOverflow(by: size)
        return o ? Int.max : m
    }

    /// The soft limit of `resource`, nil when unlimited.
    static func rlimit(_ resource: __rlimit_resource) -> Int? {
        var r = Glibc.rlimit()
        guard getrlimit(__rlimit_resource_t(resource.rawValue), &r) == 0, r.rlim_cur != rlim_t.max else { return nil }
        return r.rlim_cur > UInt64(Int.max) ? nil : Int(r.rlim_cur)
    }

    /// The tightest `memory.max` (cgroup v2) or `memory.limit_in_bytes` (v1) on the path from
    /// this process's cgroup up to the root; nil when none is set.
    static func cgroupLimit(root: String) -> Int? {
        var dirs = [root]
        if let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("0::") {
                var path = String(line.dropFirst(3))
                while !path.isEmpty && path != "/" {
                    dirs.append(root + path)
                    path = (path as NSString).deletingLastPathComponent
                }
            }
        }
        var best: Int?
        for d in dirs {
            for file in ["memory.max", "memory/memory.limit_in_bytes"] {
                if let v = parseLimit(try? String(contentsOfFile: d + "/" + file, encoding: .utf8)) { best = min(best ?? v, v) }
            }
        }
        return best
    }

    /// A cgroup limit file's value: a byte count, or "max" (none). v1 writes a huge number for none.
    static func parseLimit(_ text: String?) -> Int? {
        guard let t = text?.trimmingCharacters(in: .whitespacesAndNewlines), t != "max", let v = Int(t), v > 0, v < 1 << 62 else { return nil }
        return v
    }
}
