import Foundation

// Config JSON files (`tarflow compile --config`): a model's architecture without its weights.
extension AheadOfTime {
    /// A config file as the fixtures' `case.json`: the keys of `TarFlowConfig` (`in_channels`,
    /// `img_size`, `patch_size`, `channels`, `num_blocks`, `layers_per_block`, and optionally
    /// `nvp` (true), `num_classes` (0), `head_dim` (64), `expansion` (4)), plus an optional
    /// `noise_std`. Other keys are ignored.
    public static func loadConfig(contentsOf url: URL) throws -> (config: TarFlowConfig, noiseStd: Double?) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TarFlowError.invalidInput("\(url.path): cannot read: \(error.localizedDescription)") }
        return try parseConfig(data, path: url.path)
    }

    /// The config JSON in `data` (as `loadConfig`); `path` only labels errors.
    public static func parseConfig(_ data: Data, path: String) throws -> (config: TarFlowConfig, noiseStd: Double?) {
        guard data.count <= 1 << 20 else { throw TarFlowError.invalidInput("\(path): \(data.count) bytes is too large for a config") }
        let config: TarFlowConfig
        do { config = try JSONDecoder().decode(TarFlowConfig.self, from: data) } catch {
            throw TarFlowError.invalidConfig("\(path): \(describe(error))")
        }
        do { try config.validate() } catch {
            guard case .invalidConfig(let m) = error else { throw error }
            throw TarFlowError.invalidConfig("\(path): \(m)")
        }
        var noise: Double?
        if let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let v = obj["noise_std"] {
            guard let d = (v as? NSNumber)?.doubleValue, d >= 0, d.isFinite else {
                throw TarFlowError.invalidConfig("\(path): noise_std must be a finite number >= 0")
            }
            noise = d
        }
        return (config, noise)
    }

    static func describe(_ e: any Error) -> String {
        switch e as? DecodingError {
        case .keyNotFound(let k, _)?: "missing key '\(k.stringValue)'"
        case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?:
            "key '\(c.codingPath.map(\.stringValue).joined(separator: "."))': \(c.debugDescription)"
        case .dataCorrupted(let c)?: "not valid JSON: \(c.debugDescription)"
        default: "\(e)"
        }
    }
}
