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

    /// The bytes this process may still allocate now, under the tightest limit: a limit minus
    /// what already counts against it (the address space already mapped, model file included,
    /// for RLIMIT_AS; the data segment for RLIMIT_DATA; the cgroup's memory.current). Read on
    /// every call, since limits and usage change.
    public static func current(cgroupRoot: String = "/sys/fs/cgroup") -> MemoryLimit {
        var best = MemoryLimit(bytes: physicalRAM(), source: "physical RAM")
        func consider(_ limit: Int?, used: Int, reserve: Int = 0, _ name: String) {
            guard let limit, limit > 0 else { return }
            let left = max(limit - used - reserve, 0)
            if left < best.bytes {
                best = MemoryLimit(bytes: left, source: "\(name) \(limit) bytes, \(used) already in use" + (reserve > 0 ? ", \(reserve) kept for the BLAS buffer" : ""))
            }
        }
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        consider(rlimit(RLIMIT_AS), used: statusBytes(status, "VmSize"), reserve: blasBufferBytes, "RLIMIT_AS (ulimit -v)")
        consider(rlimit(RLIMIT_DATA), used: statusBytes(status, "VmData"), reserve: blasBufferBytes, "RLIMIT_DATA (ulimit -d)")
        if let (limit, used) = cgroupLimit(root: cgroupRoot) { consider(limit, used: used, "cgroup memory.max") }
        return best
    }

    /// The address space OpenBLAS needs for its work buffer at a thread's first sgemm: its
    /// BUFFER_SIZE (128 MiB on x86-64), malloc'ed from a new arena that reserves as much again
    /// while it is made. OpenBLAS retries a failed allocation forever, so a run that leaves
    /// less than this under `ulimit -v` or `-d` hangs in its first matrix product instead of
    /// failing (measured: `denoise` on mnist under `ulimit -v 700000`): it is kept out of what a
    /// plan may use. (cgroup limits count touched pages only, and the buffer is mostly untouched.)
    public static let blasBufferBytes = 256 << 20

    /// A "Key:   N kB" line of /proc/self/status, in bytes (0 when absent).
    static func statusBytes(_ status: String, _ key: String) -> Int {
        for line in status.split(separator: "\n") where line.hasPrefix(key + ":") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
        }
        return 0
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
    /// this process's cgroup up to the root, with that cgroup's current usage; nil when none is set.
    static func cgroupLimit(root: String) -> (limit: Int, used: Int)? {
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
        var best: (limit: Int, used: Int)?
        for d in dirs {
            for (file, usage) in [("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")] {
                guard let v = parseLimit(try? String(contentsOfFile: d + "/" + file, encoding: .utf8)) else { continue }
                let used = parseLimit(try? String(contentsOfFile: d + "/" + usage, encoding: .utf8)) ?? 0
                if best.map({ v - used < $0.limit - $0.used }) ?? true { best = (v, used) }
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
