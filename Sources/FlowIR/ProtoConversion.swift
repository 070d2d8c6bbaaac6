/// Conversion between the in-memory IR and its protobuf form (Spec/flowir.proto).
/// Decoding never traps: indices are range-checked by the verifier, unknown op codes and
/// empty dims are rejected here (rule F10).
extension CaseIterable where Self: Equatable {
    /// The case whose protobuf value is `proto`: the inverse of an exhaustive `proto` switch,
    /// so each mapping is written once and a new case cannot be forgotten in one direction.
    /// Nil for a value no case maps to, and for `unmapped` (what cases without one encode as).
    static func mirroring<P: Equatable>(_ proto: P, via map: (Self) -> P, unmapped: P? = nil) -> Self? {
        proto == unmapped ? nil : allCases.first { map($0) == proto }
    }
}

extension DType {
    init?(proto: Flowir_DType) {
        guard let d = DType.mirroring(proto, via: \.proto, unmapped: .unspecified) else { return nil }
        self = d
    }

    /// Host-only dtypes have no proto value: they encode as unspecified, which every reader
    /// refuses (F5, F10); the writer and verifier refuse them before it comes to that.
    var proto: Flowir_DType {
        switch self {
        case .float32: .float32
        case .float16: .float16
        case .bfloat16: .bfloat16
        case .int64: .int64
        case .float64, .uint8, .int32: .unspecified
        }
    }
}

extension Dim {
    init(proto: Flowir_Dim) throws(IRError) {
        switch proto.kind {
        case .size(let n):
            guard n >= 0, n <= Int64(Int32.max) else { throw IRError(rule: "F10", "dimension size \(n) out of range") }
            self = .fixed(Int(n))
        case .symbol(let s):
            guard !s.isEmpty else { throw IRError(rule: "F10", "empty dimension symbol") }
            self = .symbol(s)
        case nil: throw IRError(rule: "F10", "dimension has neither size nor symbol")
        }
    }

    var proto: Flowir_Dim {
        var d = Flowir_Dim()
        switch self {
        case .fixed(let n): d.size = Int64(n)
        case .symbol(let s): d.symbol = s
        }
        return d
    }
}

extension Graph {
    init(proto g: Flowir_Graph) throws(IRError) {
        let loc = "graph '\(g.name)'"
        var values: [Value] = []
        for v in g.values {
            guard let dt = DType(proto: v.dtype) else { throw IRError(rule: "F10", "value '\(v.name)' has unknown dtype", at: loc) }
            guard v.shape.count <= 8 else { throw IRError(rule: "F10", "value '\(v.name)' has rank \(v.shape.count) > 8", at: loc) }
            var dims: [Dim] = []
            for d in v.shape { do { dims.append(try Dim(proto: d)) } catch { throw error.located(loc) } }
            values.append(Value(name: v.name, type: TensorType(dt, dims)))
        }
        var nodes: [Node] = []
        for (i, n) in g.nodes.enumerated() {
            do {
                nodes.append(Node(op: try Op(proto: n), inputs: n.inputs.map { Int($0) }, outputs: n.outputs.map { Int($0) }))
            } catch { throw error.located("\(loc), node \(i)") }
        }
        self.init(name: g.name, values: values, nodes: nodes, inputs: g.inputs.map { Int($0) }, outputs: g.outputs.map { Int($0) },
                  state: g.state.map { StateBinding(input: Int($0.input), output: Int($0.output)) })
    }

    var proto: Flowir_Graph {
        var g = Flowir_Graph()
        g.name = name
        g.values = values.map { v in
            var p = Flowir_Value()
            p.name = v.name
            p.dtype = v.type.dtype.proto
            p.shape = v.type.shape.map(\.proto)
            return p
        }
        g.nodes = nodes.map { n in
            var p = n.op.proto
            p.inputs = n.inputs.map { UInt32($0) }
            p.outputs = n.outputs.map { UInt32($0) }
            return p
        }
        g.inputs = inputs.map { UInt32($0) }
        g.outputs = outputs.map { UInt32($0) }
        g.state = state.map { st in
            var b = Flowir_StateBinding()
            b.input = UInt32(st.input)
            b.output = UInt32(st.output)
            return b
        }
        return g
    }
}

extension Op {
    init(proto n: Flowir_Node) throws(IRError) {
        func small(_ v: Int64, _ what: String) throws(IRError) -> Int {
            guard v >= -(1 << 31), v <= (1 << 31) else { throw IRError(rule: "F10", "\(what) \(v) out of range") }
            return Int(v)
        }
        func dims() throws(IRError) -> [Dim] {
            guard n.shape.count <= 8 else { throw IRError(rule: "F10", "shape attribute has rank > 8") }
            var r: [Dim] = []
            for d in n.shape { r.append(try Dim(proto: d)) }
            return r
        }
        func ints(_ xs: [Int64], _ what: String) throws(IRError) -> [Int] {
            guard xs.count <= 8 else { throw IRError(rule: "F10", "\(what) has more than 8 entries") }
            var r: [Int] = []
            for x in xs { r.append(try small(x, what)) }
            return r
        }
        switch n.op {
        case .opConstant: self = .constant(tensor: n.tensor)
        case .opFull: self = .full(value: n.value, shape: try dims())
        case .opAdd: self = .add
        case .opSub: self = .sub
        case .opMul: self = .mul
        case .opDiv: self = .div
        case .opNeg: self = .neg
        case .opExp: self = .exp
        case .opGelu: self = .gelu
        case .opSqrt: self = .sqrt
        case .opLog: self = .log
        case .opErf: self = .erf
        case .opScale: self = .scale(n.value)
        case .opMatmul: self = .matmul(transposeA: n.transposeA, transposeB: n.transposeB)
        case .opLinear: self = .linear
        case .opLayerNorm: self = .layerNorm(eps: n.eps)
        case .opSoftmax: self = .softmax(axis: try small(n.axis, "axis"))
        case .opCausalMask: self = .causalMask(value: n.value)
        case .opReshape: self = .reshape(shape: try dims())
        case .opTranspose: self = .transpose(perm: try ints(n.perm, "perm"))
        case .opSlice: self = .slice(axis: try small(n.axis, "axis"), start: try small(n.start, "start"), end: try small(n.end, "end"))
        case .opConcat: self = .concat(axis: try small(n.axis, "axis"))
        case .opFlip: self = .flip(axis: try small(n.axis, "axis"))
        case .opPad: self = .pad(axis: try small(n.axis, "axis"), before: try small(n.before, "before"), after: try small(n.after, "after"))
        case .opGather: self = .gather
        case .opWriteSlice: self = .writeSlice(axis: try small(n.axis, "axis"))
        case .opMaskAfter: self = .maskAfter(value: n.value)
        case .opReduceSum: self = .reduceSum(axes: try ints(n.axes, "axes"), keepDims: n.keepDims)
        case .opReduceMean: self = .reduceMean(axes: try ints(n.axes, "axes"), keepDims: n.keepDims)
        case .opAttention:
            guard let mask = AttentionMask(rawValue: n.mask.rawValue) else { throw IRError(rule: "F10", "unknown attention mask \(n.mask.rawValue)") }
            self = .attention(heads: try small(n.heads, "heads"), scale: n.value, mask: mask, offsets: try ints(n.offsets, "offsets"), rowScale: n.rowScale)
        case .opFusedLinear:
            guard let act = Activation(rawValue: n.activation.rawValue) else { throw IRError(rule: "F10", "unknown activation \(n.activation.rawValue)") }
            self = .fusedLinear(activation: act, hasBias: n.withBias, hasResidual: n.withResidual)
        case .opAffineCoupling:
            self = .affineCoupling(shift: try small(n.start, "shift"), hasScale: n.withScale, flip: n.flip)
        case .opUnspecified, .UNRECOGNIZED:
            throw IRError(rule: "F10", "unknown op code \(n.op.rawValue); the file may come from a newer tarflow")
        }
    }

    var proto: Flowir_Node {
        var p = Flowir_Node()
        switch self {
        case .constant(let t): p.op = .opConstant; p.tensor = t
        case .full(let v, let shape): p.op = .opFull; p.value = v; p.shape = shape.map(\.proto)
        case .add: p.op = .opAdd
        case .sub: p.op = .opSub
        case .mul: p.op = .opMul
        case .div: p.op = .opDiv
        case .neg: p.op = .opNeg
        case .exp: p.op = .opExp
        case .gelu: p.op = .opGelu
        case .sqrt: p.op = .opSqrt
        case .log: p.op = .opLog
        case .erf: p.op = .opErf
        case .scale(let v): p.op = .opScale; p.value = v
        case .matmul(let ta, let tb): p.op = .opMatmul; p.transposeA = ta; p.transposeB = tb
        case .linear: p.op = .opLinear
        case .layerNorm(let eps): p.op = .opLayerNorm; p.eps = eps
        case .softmax(let axis): p.op = .opSoftmax; p.axis = Int64(axis)
        case .causalMask(let v): p.op = .opCausalMask; p.value = v
        case .reshape(let shape): p.op = .opReshape; p.shape = shape.map(\.proto)
        case .transpose(let perm): p.op = .opTranspose; p.perm = perm.map { Int64($0) }
        case .slice(let axis, let start, let end): p.op = .opSlice; p.axis = Int64(axis); p.start = Int64(start); p.end = Int64(end)
        case .concat(let axis): p.op = .opConcat; p.axis = Int64(axis)
        case .flip(let axis): p.op = .opFlip; p.axis = Int64(axis)
        case .pad(let axis, let b, let a): p.op = .opPad; p.axis = Int64(axis); p.before = Int64(b); p.after = Int64(a)
        case .gather: p.op = .opGather
        case .writeSlice(let axis): p.op = .opWriteSlice; p.axis = Int64(axis)
        case .maskAfter(let v): p.op = .opMaskAfter; p.value = v
        case .attention(let heads, let scale, let mask, let offsets, let rowScale):
            p.op = .opAttention; p.heads = Int64(heads); p.value = scale
            p.mask = Flowir_AttentionMask(rawValue: mask.rawValue) ?? .none
            p.offsets = offsets.map { Int64($0) }; p.rowScale = rowScale
        case .fusedLinear(let act, let b, let r):
            p.op = .opFusedLinear; p.activation = Flowir_Activation(rawValue: act.rawValue) ?? .none; p.withBias = b; p.withResidual = r
        case .affineCoupling(let shift, let hasScale, let flip):
            p.op = .opAffineCoupling; p.start = Int64(shift); p.withScale = hasScale; p.flip = flip
        case .reduceSum(let axes, let keep): p.op = .opReduceSum; p.axes = axes.map { Int64($0) }; p.keepDims = keep
        case .reduceMean(let axes, let keep): p.op = .opReduceMean; p.axes = axes.map { Int64($0) }; p.keepDims = keep
        }
        return p
    }
}
