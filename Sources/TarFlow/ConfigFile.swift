import Foundation

// Config JSON files (`tarflow compile --config`): a model's architecture without its weights.
extension AheadOfTime {
    /// A config file as the fixtures' `case.json`: the keys of `TarFlowConfig` (`in_channels`,
    /// `img_size`, `patch_size`, `channels`, `num_blocks`, `layers_per_block`, and optionally
    /// `nvp` (true), `num_classes` (0), `head_dim` (64), `expansion` (4)), plus an optional
    /// `noise_std`. Other keys are ignored.
    public static func loadConfig(contentsOf url: URL) throws -> (config: TarFlowConfig, noiseStd: Double?) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TarFlowError.invalidInput(.cannotRead(reason: error.localizedDescription), file: url.path) }
        return try parseConfig(data, path: url.path)
    }

    /// The config JSON in `data` (as `loadConfig`); `path` only labels errors.
    public static func parseConfig(_ data: Data, path: String) throws -> (config: TarFlowConfig, noiseStd: Double?) {
        guard data.count <= 1 << 20 else { throw TarFlowError.invalidInput(.configTooLarge(bytes: data.count), file: path) }
        let config: TarFlowConfig
        do { config = try JSONDecoder().decode(TarFlowConfig.self, from: data) } catch {
            throw TarFlowError.invalidConfig(decodingFailure(error), file: path)
        }
        do { try config.validate() } catch {
            guard case .invalidConfig(let m) = error else { throw error }
            throw TarFlowError.invalidConfig(m.located(in: path))
        }
        var noise: Double?
        if let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let v = obj["noise_std"] {
            guard let d = (v as? NSNumber)?.doubleValue, d >= 0, d.isFinite else {
                throw TarFlowError.invalidConfig(.badNoiseStd, file: path)
            }
            noise = d
        }
        return (config, noise)
    }

    /// What the JSON decoder found wrong, with the key when it names one.
    static func decodingFailure(_ e: any Error) -> ConfigFailure.Kind {
        switch e as? DecodingError {
        case .keyNotFound(let k, _)?: .missingKey(k.stringValue)
        case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?:
            .wrongType(key: c.codingPath.map(\.stringValue).joined(separator: "."), detail: c.debugDescription)
        case .dataCorrupted(let c)?: .notJSON(detail: c.debugDescription)
        default: .undecodable(detail: "\(e)")
        }
    }
}
