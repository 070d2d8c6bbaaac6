import SwiftProtobuf

/// The protobuf encoding of a `Graph` and a `TensorInfo` exactly as SwiftProtobuf's
/// `serializedBytes()` writes them (fields in number order, defaults omitted, repeated scalars
/// packed, a oneof member always written), done by hand because it is several times faster:
/// the source digest of every compiled function (rule F12) is computed from it on each load.
/// `CompiledFunctionTests` checks it byte for byte against SwiftProtobuf.
enum CanonicalEncoding {
    static func graph(_ g: Flowir_Graph) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 * (g.values.count + g.nodes.count))
        string(1, g.name, &out)
        for v in g.values { message(2, &out) { o in value(v, &o) } }
        for n in g.nodes { message(3, &out) { o in node(n, &o) } }
        packed(4, g.inputs, &out)
        packed(5, g.outputs, &out)
        for s in g.state {
            message(6, &out) { o in
                if s.input != 0 { varintField(1, UInt64(s.input), &o) }
                if s.output != 0 { varintField(2, UInt64(s.output), &o) }
            }
        }
        return out
    }

    /// SwiftProtobuf's own encoding, the reference the tests compare against.
    static func reference(_ m: some SwiftProtobuf.Message) throws -> [UInt8] { try m.serializedBytes() }

    static func tensorInfo(_ t: Flowir_TensorInfo) -> [UInt8] {
        var out: [UInt8] = []
        string(1, t.name, &out)
        if t.dtype.rawValue != 0 { varintField(2, UInt64(bitPattern: Int64(t.dtype.rawValue)), &out) }
        packed(3, t.shape, &out)
        if t.offset != 0 { varintField(4, t.offset, &out) }
        if t.byteSize != 0 { varintField(5, t.byteSize, &out) }
        return out
    }

    static func value(_ v: Flowir_Value, _ out: inout [UInt8]) {
        string(1, v.name, &out)
        if v.dtype.rawValue != 0 { varintField(2, UInt64(bitPattern: Int64(v.dtype.rawValue)), &out) }
        for d in v.shape { message(3, &out) { o in dim(d, &o) } }
    }

    static func dim(_ d: Flowir_Dim, _ out: inout [UInt8]) {
        switch d.kind {
        case .size(let n)?: varintField(1, UInt64(bitPattern: n), &out)
        case .symbol(let s)?: stringField(2, s, &out)
        case nil: break
        }
    }

    static func node(_ n: Flowir_Node, _ out: inout [UInt8]) {
        func int(_ f: Int, _ x: Int64) { if x != 0 { varintField(f, UInt64(bitPattern: x), &out) } }
        func flag(_ f: Int, _ b: Bool) { if b { varintField(f, 1, &out) } }
        func float(_ f: Int, _ x: Float) {
            guard x.bitPattern != 0 else { return }
            tag(f, 5, &out)
            withUnsafeBytes(of: x.bitPattern.littleEndian) { out += $0 }
        }
        int(1, Int64(n.op.rawValue))
        packed(2, n.inputs, &out)
        packed(3, n.outputs, &out)
        string(4, n.tensor, &out)
        float(5, n.value)
        for d in n.shape { message(6, &out) { o in dim(d, &o) } }
        int(7, n.axis)
        packed(8, n.axes, &out)
        packed(9, n.perm, &out)
        int(10, n.start)
        int(11, n.end)
        int(12, n.before)
        int(13, n.after)
        float(14, n.eps)
        flag(15, n.transposeA)
        flag(16, n.transposeB)
        flag(17, n.keepDims)
        int(18, n.heads)
        int(19, Int64(n.mask.rawValue))
        packed(20, n.offsets, &out)
        flag(21, n.rowScale)
        int(22, Int64(n.activation.rawValue))
        flag(23, n.withBias)
        flag(24, n.withResidual)
        flag(25, n.withScale)
        flag(26, n.flip)
    }

    // MARK: Wire format

    @inline(__always) static func varint(_ x: UInt64, _ out: inout [UInt8]) {
        var x = x
        while x >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: x) | 0x80)
            x >>= 7
        }
        out.append(UInt8(x))
    }

    @inline(__always) static func tag(_ field: Int, _ wire: UInt64, _ out: inout [UInt8]) { varint(UInt64(field) << 3 | wire, &out) }

    static func varintField(_ field: Int, _ x: UInt64, _ out: inout [UInt8]) {
        tag(field, 0, &out)
        varint(x, &out)
    }

    static func stringField(_ field: Int, _ s: String, _ out: inout [UInt8]) {
        tag(field, 2, &out)
        varint(UInt64(s.utf8.count), &out)
        out += s.utf8
    }

    static func string(_ field: Int, _ s: String, _ out: inout [UInt8]) {
        if !s.isEmpty { stringField(field, s, &out) }
    }

    static func packed<T: BinaryInteger>(_ field: Int, _ xs: [T], _ out: inout [UInt8]) {
        guard !xs.isEmpty else { return }
        message(field, &out) { o in for x in xs { varint(UInt64(truncatingIfNeeded: Int64(x)), &o) } }
    }

    /// A length-delimited field written in place: one length byte is reserved and widened
    /// afterwards in the rare case the body is 128 bytes or more.
    static func message(_ field: Int, _ out: inout [UInt8], _ body: (inout [UInt8]) -> Void) {
        tag(field, 2, &out)
        let at = out.count
        out.append(0)
        body(&out)
        let n = out.count - at - 1
        if n < 0x80 {
            out[at] = UInt8(n)
        } else {
            var len: [UInt8] = []
            varint(UInt64(n), &len)
            out.replaceSubrange(at...at, with: len)
        }
    }
}
