/// A graph or model file broke a rule of Spec/IR.md or Spec/ModelFile.md.
///
/// `rule` is the rule's number there (W… for graphs, F… for files), so a message can be looked up.
public struct IRError: Error, Sendable, CustomStringConvertible, Equatable {
    public var rule: String
    public var message: String
    /// Where: the graph and node, or the file.
    public var location: String

    public init(rule: String, _ message: String, at location: String = "") {
        self.rule = rule
        self.message = message
        self.location = location
    }

    public var description: String {
        let loc = location.isEmpty ? "" : "\(location): "
        return "\(loc)\(message) [rule \(rule), see Spec/\(rule.hasPrefix("F") ? "ModelFile" : "IR").md]"
    }

    func located(_ where_: String) -> IRError {
        var e = self
        e.location = location.isEmpty ? where_ : "\(where_), \(location)"
        return e
    }
}
