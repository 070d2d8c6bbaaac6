import TarFlow

/// Signals the tool turns into its usual clean ending. SIGINT/SIGTERM/SIGHUP remove the
/// temporary files of writes under way; SIGBUS on a model file cut while it is mapped is the
/// library's (`MappedFileGuard`: one line naming the file, exit 1).
enum Signals {
    static func install() {
        TemporaryFiles.installSignalHandlers()
    }
}
