import ArgumentParser
import Foundation

// Every failure, including a usage error found by the argument parser, is one line on stderr
// and a non-zero exit; `--help` prints the help text on stdout and exits 0.
Signals.install()
do {
    var command = try TarflowCommand.parseAsRoot()
    try command.run()
    leave(0)
} catch {
    let code = TarflowCommand.exitCode(for: error)
    if code.isSuccess {
        let text = TarflowCommand.fullMessage(for: error)
        if !text.isEmpty { print(text) }
        leave(0)
    }
    fail(TarflowCommand.message(for: error), code: code.rawValue == 0 ? 1 : code.rawValue)
}
