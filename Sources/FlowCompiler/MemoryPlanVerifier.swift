import FlowIR

extension MemoryPlanner {
    /// Checks a stored memory plan (from a model file, so untrusted) against an execution plan
    /// and returns it as a `MemoryPlan`, or throws the first broken rule F13–F16 of
    /// Spec/ModelFile.md. Lifetimes are recomputed from the graph, never read from the file.
    ///
    /// The rules accept any plan the runtime can execute correctly, not only the planner's own:
    /// every run-time value has a buffer large enough, buffers lie in the arena, and two values
    /// may share bytes at the same time only as the planner's sharing rules allow — a reshape
    /// viewing its input at the same offset, an op overwriting the operand it may overwrite
    /// (`inPlaceCandidates`) at that operand's last read, or a write_slice updating a state.
    public static func verify(_ p: ExecutionPlan, _ s: CompiledFunction.Plan) throws(IRError) -> MemoryPlan {
        let g = p.graph
        let nv = g.values.count
        let end = p.steps.count
        func name(_ v: ValueID) -> String { "'\(g.values[v].name)'" }

        // F13: the bindings name exactly the symbols of the graph inputs.
        var symbols = Set<String>()
        for v in g.inputs { for d in g.values[v].type.shape { if case .symbol(let x) = d { symbols.insert(x) } } }
        guard Set(s.bindings.keys) == symbols else {
            throw IRError(rule: "F13", "the plan binds \(s.bindings.keys.sorted()) but the graph's inputs use the symbols \(symbols.sorted())")
        }
        for (k, b) in s.bindings where b < 1 || b > Int(Int32.max) {
            throw IRError(rule: "F13", "symbol '\(k)' bound to \(b), outside 1...\(Int32.max)")
        }

        // Exact byte size of every value under the bindings.
        var bytes = [Int](repeating: 0, count: nv)
        var shapes = [[Int]](repeating: [], count: nv)
        for v in 0..<nv {
            guard let shape = g.values[v].type.concreteShape(s.bindings), let n = elementCount(shape),
                case let (b, o) = n.multipliedReportingOverflow(by: g.values[v].type.dtype.byteSize), !o,
                b <= CompiledFunction.maxPlanBytes
            else { throw IRError(rule: "F15", "value \(name(v)) of type \(g.values[v].type) is too large under \(s.bindings)") }
            bytes[v] = b
            shapes[v] = shape
        }
        func aligned(_ b: Int) -> Int { (b + alignment - 1) / alignment * alignment }

        // F14: exactly the run-time values have buffers.
        var dynamic = [Bool](repeating: false, count: nv)
        for v in g.inputs { dynamic[v] = true }
        for st in p.steps { for o in st.outputs { dynamic[o] = true } }
        guard s.buffer.count == nv else { throw IRError(rule: "F14", "the buffer table has \(s.buffer.count) entries for \(nv) values") }
        guard s.offsets.count == s.sizes.count else { throw IRError(rule: "F14", "\(s.offsets.count) offsets for \(s.sizes.count) buffers") }
        var used = [Bool](repeating: false, count: s.sizes.count)
        for v in 0..<nv {
            switch (dynamic[v], s.buffer[v]) {
            case (true, nil): throw IRError(rule: "F14", "run-time value \(name(v)) has no buffer")
            case (false, .some): throw IRError(rule: "F14", "value \(name(v)) is computed at load time but has a buffer")
            case (true, .some(let b)):
                guard b >= 0, b < s.sizes.count else { throw IRError(rule: "F14", "value \(name(v)) is assigned buffer \(b) of \(s.sizes.count)") }
                used[b] = true
            case (false, nil): break
            }
        }
        if let b = used.firstIndex(of: false) { throw IRError(rule: "F14", "buffer \(b) holds no value") }

        // F15: placement within the arena.
        var naive = 0
        for v in 0..<nv where dynamic[v] {
            let (t, o) = naive.addingReportingOverflow(aligned(bytes[v]))
            guard !o, t <= CompiledFunction.maxPlanBytes else { throw IRError(rule: "F15", "the graph's values under \(s.bindings) take more than 2^62 bytes") }
            naive = t
        }
        guard s.arenaBytes >= 0 else { throw IRError(rule: "F15", "arena size \(s.arenaBytes) is negative") }
        for (b, (off, size)) in zip(s.offsets, s.sizes).enumerated() {
            guard off >= 0, size >= 0, off <= CompiledFunction.maxPlanBytes, size <= CompiledFunction.maxPlanBytes else {
                throw IRError(rule: "F15", "buffer \(b) has offset \(off) and size \(size); both must lie in 0...2^62")
            }
            guard off % alignment == 0 else { throw IRError(rule: "F15", "buffer \(b) starts at \(off), not a multiple of \(alignment)") }
            guard off + size <= s.arenaBytes else {
                throw IRError(rule: "F15", "buffer \(b) (bytes \(off)..<\(off + size)) runs past the \(s.arenaBytes)-byte arena")
            }
        }
        for v in 0..<nv {
            guard let b = s.buffer[v], s.sizes[b] < bytes[v] else { continue }
            throw IRError(rule: "F15", "value \(name(v)) needs \(bytes[v]) bytes but its buffer \(b) has \(s.sizes[b])")
        }
        guard s.naiveBytes == naive else {
            throw IRError(rule: "F15", "the plan says one buffer per value takes \(s.naiveBytes) bytes; the graph needs \(naive)")
        }
        guard s.arenaBytes <= naive else {
            throw IRError(rule: "F15", "the \(s.arenaBytes)-byte arena is larger than one buffer per value (\(naive) bytes)")
        }

        // Lifetimes, recomputed: a value lives from the step defining it (−1 for graph inputs) to
        // its last reader; graph outputs and inputs to the end (a caller may set an input once
        // and run many times), except a state input, which its write_slice chain replaces.
        let stateInputs = Set(g.state.map(\.input)), outputs = Set(g.outputs)
        var first = [Int](repeating: -1, count: nv), last = [Int](repeating: -1, count: nv)
        for (i, st) in p.steps.enumerated() {
            for o in st.outputs { first[o] = i }
            for x in st.inputs { last[x] = i }
        }
        for v in 0..<nv where dynamic[v] {
            last[v] = max(first[v], last[v])
            if outputs.contains(v) || (g.inputs.contains(v) && !stateInputs.contains(v)) { last[v] = end }
        }
        func offset(_ v: ValueID) -> Int { s.buffer[v].map { s.offsets[$0] } ?? -1 }

        // Contents: a reshape at its input's offset is a view (the same data, so the two may be
        // live together); every other step writes new data. One content per write.
        var content = [Int](repeating: -1, count: nv)
        var cFirst: [Int] = [], cLast: [Int] = [], cOffset: [Int] = [], cBytes: [Int] = [], cValue: [ValueID] = []
        var cState: [Bool] = []
        func newContent(_ v: ValueID, state: Bool) {
            content[v] = cFirst.count
            cFirst.append(first[v]); cLast.append(last[v]); cOffset.append(offset(v)); cBytes.append(bytes[v]); cValue.append(v)
            cState.append(state)
        }
        for v in g.inputs { newContent(v, state: stateInputs.contains(v)) }
        for st in p.steps {
            let out = st.outputs[0]
            if case .reshape = st.op, dynamic[st.inputs[0]], offset(st.inputs[0]) == offset(out) {
                let c = content[st.inputs[0]]
                content[out] = c
                cLast[c] = max(cLast[c], last[out])
                cBytes[c] = max(cBytes[c], bytes[out])
            } else {
                var state = false
                if case .writeSlice = st.op { state = cState[content[st.inputs[0]]] && offset(st.inputs[0]) == offset(out) }
                newContent(out, state: state)
            }
        }

        // F16: contents whose bytes overlap are never live at the same step, unless the later
        // one is written in place over the earlier at its last read.
        func inPlace(_ later: Int, over earlier: Int) -> Bool {
            let i = cFirst[later]
            guard i >= 0, cLast[earlier] == i, cOffset[earlier] == cOffset[later] else { return false }
            let st = p.steps[i], out = st.outputs[0]
            var candidates: [Int]
            if case .writeSlice = st.op { candidates = cState[earlier] ? [0] : [] } else { candidates = inPlaceCandidates(st.op, st.inputs.count) ?? [] }
            let reading = st.inputs.indices.filter { content[st.inputs[$0]] == earlier }
            guard reading.count == 1, let j = reading.first, candidates.contains(j) else { return false }
            let x = st.inputs[j]
            return shapes[x] == shapes[out] && g.values[x].type.dtype == g.values[out].type.dtype
        }
        let order = cFirst.indices.sorted { cOffset[$0] != cOffset[$1] ? cOffset[$0] < cOffset[$1] : $0 < $1 }
        for (n, a) in order.enumerated() where cBytes[a] > 0 {
            for b in order[(n + 1)...] {
                if cOffset[b] >= cOffset[a] + cBytes[a] { break }  // sorted by offset: no later one overlaps a
                guard cBytes[b] > 0 else { continue }
                let (e, l) = cFirst[a] < cFirst[b] || (cFirst[a] == cFirst[b] && a < b) ? (a, b) : (b, a)
                guard cFirst[l] <= cLast[e] else { continue }
                if inPlace(l, over: e) { continue }
                throw IRError(rule: "F16", "values \(name(cValue[e])) (live \(span(cFirst[e], cLast[e]))) and \(name(cValue[l])) "
                    + "(live \(span(cFirst[l], cLast[l]))) overlap in bytes \(max(cOffset[a], cOffset[b]))..<\(min(cOffset[a] + cBytes[a], cOffset[b] + cBytes[b])) while both are live")
            }
        }
        // A state's new value must be where the next run reads the state.
        for st in g.state where offset(st.input) != offset(st.output) {
            throw IRError(rule: "F16", "state \(name(st.input)) is at offset \(offset(st.input)) but its new value \(name(st.output)) at \(offset(st.output)); the next run would not see it")
        }

        // Per-buffer lifetimes, as the planner reports them.
        var lo = [Int](repeating: Int.max, count: s.sizes.count), hi = [Int](repeating: -1, count: s.sizes.count)
        for v in 0..<nv {
            guard let b = s.buffer[v] else { continue }
            lo[b] = min(lo[b], first[v])
            hi[b] = max(hi[b], last[v])
        }
        return MemoryPlan(buffer: s.buffer, offsets: s.offsets, sizes: s.sizes,
                          lifetimes: lo.indices.map { lo[$0]...max(lo[$0], hi[$0]) }, arenaBytes: s.arenaBytes, naiveBytes: naive)
    }

    static func span(_ a: Int, _ b: Int) -> String {
        func at(_ i: Int) -> String { i < 0 ? "input" : "step \(i)" }
        return a == b ? at(a) : "\(at(a))…\(at(b))"
    }
}

extension MemoryPlan {
    /// The stored form of this plan (`CompiledFunction.Plan`); lifetimes are left out, since a
    /// reader recomputes them.
    public func stored(bindings: [String: Int]) -> CompiledFunction.Plan {
        CompiledFunction.Plan(bindings: bindings, buffer: buffer, offsets: offsets, sizes: sizes, arenaBytes: arenaBytes, naiveBytes: naiveBytes)
    }
}
