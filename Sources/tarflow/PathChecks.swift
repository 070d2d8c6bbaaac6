import Foundation
import TarFlow
#if canImport(Glibc)
import Glibc
#endif

/// Checks on the files a command reads and writes, run before any work, so that an output can
/// never replace one of the command's own inputs and a bad output path costs nothing.
extension Checks {
    /// The file a path names after following links: device and inode, nil if it does not exist.
    static func identity(_ path: String) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// A path as the file system resolves it (links followed), to compare outputs not yet written.
    static func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }

    /// Refuses an output (flag, path) that is one of the inputs (the same file, however named)
    /// or the same file as another output.
    static func distinct(outputs: [(String, String?)], inputs: [(String, String?)]) throws {
        let outs = outputs.compactMap { f, p in p.map { (f, $0) } }
        for (flag, out) in outs {
            let id = identity(out), r = resolved(out)
            for (inFlag, input) in inputs.compactMap({ f, p in p.map { (f, $0) } }) {
                let same = (id != nil && identity(input).map { $0 == id! } == true) || resolved(input) == r
                if same { throw CLIError("\(flag) \(out) is the same file as the input \(inFlag) \(input); writing it would destroy the input: give another output path") }
            }
        }
        for i in outs.indices {
            for j in outs.indices where j > i && resolved(outs[i].1) == resolved(outs[j].1) {
                throw CLIError("\(outs[i].0) and \(outs[j].0) name the same file \(outs[i].1); give two different paths")
            }
        }
    }

    /// A folder to write into: it must be a folder if it exists, else be creatable (its nearest
    /// existing ancestor a writable folder).
    static func outputFolder(_ path: String?, _ flag: String) throws {
        guard let path else { return }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw CLIError("\(flag) \(path) exists and is not a folder; give a folder (it is created if missing)") }
            guard access(path, W_OK) == 0 else { throw CLIError("\(flag) \(path): the folder is not writable") }
            return
        }
        var parent = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: parent.path, isDirectory: &isDir), parent.path != "/" { parent = parent.deletingLastPathComponent() }
        guard isDir.boolValue else { throw CLIError("\(flag) \(path): \(parent.path) is a file, not a folder; give another folder") }
        guard access(parent.path, W_OK) == 0 else { throw CLIError("\(flag) \(path): cannot create it in \(parent.path) (not writable)") }
    }

    /// True labels for accuracy: each must be a class of the model.
    static func trueLabels(_ labels: [Int], from source: String, classes: Int) throws {
        if let i = labels.firstIndex(where: { $0 < 0 || $0 >= classes }) {
            throw CLIError("\(source): label \(labels[i]) at index \(i) is out of range: true labels must be classes 0...\(classes - 1)")
        }
    }

    /// A JSON number: never `nan` or `inf` (not JSON).
    static func json(_ x: Double, _ key: String) throws -> String {
        guard x.isFinite else { throw CLIError("\(key) is \(x); refusing to print a non-finite number") }
        return "\(x)"
    }

    /// Float images far outside model space are refused with the conversion to apply; a batch
    /// entirely in [0, 1] (torchvision's ToTensor range) gets a one-line warning.
    static func imageRange(_ set: ImageSet, flag: String, path: String) throws {
        guard case .float(let f) = set.pixels, !f.isEmpty else { return }
        let d = max(set.channels * set.size * set.size, 1)
        if let i = f.firstIndex(where: { abs($0) > 4 }) {
            throw CLIError("\(flag) \(path): image \(i / d) has the value \(f[i]), far outside model space [-1, 1]; "
                + "give uint8 images as they are (they are dequantized), and scale floats in [0, 255] as x/127.5 - 1")
        }
        if f.allSatisfy({ $0 >= 0 && $0 <= 1 }) {
            FileHandle.standardError.write(Data("warning: \(flag) \(path): every value is in [0, 1] (torchvision ToTensor's range?); the model expects [-1, 1]: use 2x - 1\n".utf8))
        }
    }
}
