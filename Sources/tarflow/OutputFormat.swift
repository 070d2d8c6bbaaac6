import Foundation
import TarFlow

/// The format of an output file, chosen by its extension: a file named `.npy` is always a
/// `.npy`, and an extension the flag cannot write is an error before any work is done.
enum OutputFormat: String, CaseIterable {
    case npy, npz, safetensors, png

    /// The format of `path` among `allowed`, or an error naming `flag` and the extensions it takes.
    static func of(_ path: String, _ flag: String, allowed: [OutputFormat]) throws -> OutputFormat {
        let ext = URL(fileURLWithPath: path).pathExtension.lowercased()
        guard let f = OutputFormat(rawValue: ext), allowed.contains(f) else {
            let names = allowed.map { "." + $0.rawValue }
            let list = names.count == 1 ? names[0] : names.dropLast().joined(separator: ", ") + " or " + names.last!
            throw CLIError("\(flag) \(path) must end in \(list)" + (ext.isEmpty ? "" : " (.\(ext) is not written here)"))
        }
        return f
    }

    /// Checks `path` (when given) for `flag`: its extension and its folder.
    static func check(_ path: String?, _ flag: String, allowed: [OutputFormat]) throws {
        guard let path else { return }
        _ = try of(path, flag, allowed: allowed)
        try Checks.output(path, flag)
    }

    /// Writes named arrays in the format of `path`: a `.npy` holds the single array, an `.npz`
    /// and a `.safetensors` every array under its name.
    static func write(_ arrays: [(name: String, array: Tensor)], to path: String, _ flag: String, allowed: [OutputFormat]) throws {
        let url = URL(fileURLWithPath: path)
        switch try of(path, flag, allowed: allowed) {
        case .npy:
            precondition(arrays.count == 1, "a .npy output holds one array")
            try NPY.write(arrays[0].array, to: url)
        case .npz: try NPZ.write(arrays, to: url)
        case .safetensors: try SafetensorsWriter.write(arrays, to: url)
        case .png: throw CLIError("\(flag) \(path): PNG output is written by the image writer")
        }
    }
}
