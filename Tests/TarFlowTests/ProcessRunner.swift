import Foundation

/// Runs a program to completion; its exit status and everything it printed. `environment`
/// entries are added to this process's environment.
func runProcess(_ exe: URL, _ args: [String], in directory: URL? = nil, environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    if let directory { p.currentDirectoryURL = directory }
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let o = Pipe(), e = Pipe()
    p.standardOutput = o
    p.standardError = e
    try p.run()
    let out = o.fileHandleForReading.readDataToEndOfFile(), err = e.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// Runs the `tarflow` built beside the tests (else the repository's debug build).
func runTarflow(_ args: [String], repo: URL, in directory: URL? = nil) throws -> (status: Int32, out: String, err: String) {
    try runProcess(tarflowExecutable(repo: repo), args, in: directory)
}

/// The `tarflow` built beside the tests (else the repository's debug build).
func tarflowExecutable(repo: URL) -> URL {
    let exe = Bundle.main.bundleURL.appendingPathComponent("tarflow")
    return FileManager.default.fileExists(atPath: exe.path) ? exe : repo.appendingPathComponent(".build/debug/tarflow")
}
