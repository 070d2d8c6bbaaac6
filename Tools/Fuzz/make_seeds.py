#!/usr/bin/env python3
"""Writes the small seed inputs of the fuzz targets into Tools/Fuzz/Seeds/<target>/.

Needs only Python 3 and NumPy (no torch): the .pth seeds are written the way torch.save
lays out a state_dict (zip of data.pkl + data/<key> storages), with a pickler that names the
same globals torch does. Model-file seeds are made by `tarflow convert` from the micro
safetensors checkpoints written here (pass the tarflow binary as the first argument).
The fixture files (Tests/Fixtures) are used as further seeds by run.sh, not copied here;
Seeds/FuzzModelFile/fused_*.tflow come from SeedTools/make_fused_seeds.swift.
"""
import collections, io, os, pickle, subprocess, sys, types, zipfile
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEEDS = os.path.join(HERE, "Seeds")
rng = np.random.default_rng(0)


def out(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def micro_state_dict(channels=64, D=4, T=4, blocks=1, layers=0, classes=0, nvp=True, expansion=1):
    """Official TarFlow state_dict names and shapes for a tiny config."""
    s = collections.OrderedDict()
    C = channels
    for k in range(blocks):
        b = f"blocks.{k}"
        s[f"{b}.proj_in.weight"] = (C, D)
        s[f"{b}.proj_in.bias"] = (C,)
        s[f"{b}.pos_embed"] = (T, C)
        if classes:
            s[f"{b}.class_embed"] = (classes, 1, C)
        for l in range(layers):
            a = f"{b}.attn_blocks.{l}"
            for n, sh in [("attention.norm.weight", (C,)), ("attention.norm.bias", (C,)),
                          ("attention.qkv.weight", (3 * C, C)), ("attention.qkv.bias", (3 * C,)),
                          ("attention.proj.weight", (C, C)), ("attention.proj.bias", (C,)),
                          ("mlp.norm.weight", (C,)), ("mlp.norm.bias", (C,)),
                          ("mlp.main.0.weight", (C * expansion, C)), ("mlp.main.0.bias", (C * expansion,)),
                          ("mlp.main.2.weight", (C, C * expansion)), ("mlp.main.2.bias", (C,))]:
                s[f"{a}.{n}"] = sh
        s[f"{b}.proj_out.weight"] = ((2 * D if nvp else D), C)
        s[f"{b}.proj_out.bias"] = ((2 * D if nvp else D),)
    s["var"] = (T, D)
    return collections.OrderedDict((n, (0.02 * rng.standard_normal(sh)).astype(np.float32)) for n, sh in s.items())


def safetensors_bytes(tensors, dtype="F32"):
    import json
    header, blobs, off = {}, [], 0
    for n, a in tensors.items():
        b = a.astype({"F32": "<f4", "F16": "<f2", "I64": "<i8"}[dtype]).tobytes()
        header[n] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


# --- A pickler that writes what torch.save writes, without torch -------------------------------
torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
for name in ["FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"]:
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch_mod, name, cls)


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2


class Storage:
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class FakeTensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def pth_bytes(tensors, half=False, views=False):
    """A torch.save zip: contiguous tensors, or (views) a transposed and an offset view sharing one storage."""
    sd, blobs = collections.OrderedDict(), {}
    cls = torch_mod.HalfStorage if half else torch_mod.FloatStorage
    for i, (n, a) in enumerate(tensors.items()):
        a = a.astype(np.float16 if half else np.float32)
        st = Storage(str(i), cls, a.size)
        blobs[str(i)] = a.tobytes()
        strides = [int(np.prod(a.shape[j + 1:])) for j in range(a.ndim)]
        sd[n] = FakeTensor(st, 0, a.shape, strides)
    if views:
        a = np.arange(12, dtype=np.float32)
        st = Storage("v", torch_mod.FloatStorage, 12)
        blobs["v"] = a.tobytes()
        sd["view.t"] = FakeTensor(st, 0, (4, 3), (1, 4))
        sd["view.off"] = FakeTensor(st, 2, (5,), (2,))
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(sd)
    z = io.BytesIO()
    def entry(name):  # fixed time stamps: the same seeds on every run
        return zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
        f.writestr(entry("archive/data.pkl"), buf.getvalue())
        f.writestr(entry("archive/byteorder"), "little")
        for k, b in blobs.items():
            f.writestr(entry(f"archive/data/{k}"), b)
        f.writestr(entry("archive/version"), "3\n")
    return z.getvalue(), buf.getvalue()


def main():
    tarflow = sys.argv[1] if len(sys.argv) > 1 else None
    small = collections.OrderedDict([("a.weight", rng.standard_normal((2, 3))), ("b", rng.standard_normal((4,))),
                                     ("scalar", np.array(1.5))])
    micro0 = micro_state_dict()                                              # 1 block, 0 layers
    micro1 = micro_state_dict(blocks=1, layers=1, classes=3, nvp=False)      # attention + classes, VP
    micro2 = micro_state_dict(blocks=2, layers=0, classes=2)                 # two blocks (flip)

    # safetensors
    out("FuzzSafetensors", "small_f32.safetensors", safetensors_bytes(small))
    out("FuzzSafetensors", "small_f16.safetensors", safetensors_bytes(small, "F16"))
    out("FuzzSafetensors", "micro0.safetensors", safetensors_bytes(micro0))
    out("FuzzSafetensors", "micro2_f16.safetensors", safetensors_bytes(micro2, "F16"))

    # .pth: mode byte 0 = whole file, 1 = data.pkl alone
    for name, sd, half, views in [("small", small, False, True), ("micro0", micro0, False, False), ("micro2_f16", micro2, True, False)]:
        z, pkl = pth_bytes(sd, half, views)
        out("FuzzTorchCheckpoint", f"file_{name}.pth", b"\x00" + z)
        out("FuzzTorchCheckpoint", f"pickle_{name}.pkl", b"\x01" + pkl)
    for case in ["tiny_uncond", "cond_guided"]:
        with zipfile.ZipFile(os.path.join(ROOT, "Tests/Fixtures", case, "model.pth")) as f:
            pkl = next(f.read(n) for n in f.namelist() if n.endswith("/data.pkl"))
        out("FuzzTorchCheckpoint", f"pickle_{case}.pkl", b"\x01" + pkl)

    # IDX: the fixture labels uncompressed, and the float32 and int16 element types.
    import gzip, struct
    with gzip.open(os.path.join(ROOT, "Tests/Fixtures/io/t10k-head8-labels-idx1-ubyte.gz")) as f:
        out("FuzzIDX", "labels-idx1-ubyte", f.read())
    out("FuzzIDX", "f32-idx2", bytes([0, 0, 0x0D, 2]) + struct.pack(">II", 2, 3) + struct.pack(">6f", *range(6)))
    out("FuzzIDX", "i16-idx1", bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 3) + struct.pack(">3h", -1, 2, 3))

    # Model files, converted from the micro checkpoints by the tarflow CLI.
    if tarflow:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            for name, sd, dtype in [("micro0", micro0, "F32"), ("micro1_f16", micro1, "F16"), ("micro2", micro2, "F32")]:
                ck = os.path.join(tmp, name + ".safetensors")
                with open(ck, "wb") as f:
                    f.write(safetensors_bytes(sd, dtype))
                dst = os.path.join(tmp, name + ".tflow")
                subprocess.run([tarflow, "convert", ck, "-o", dst, "--in-channels", "1", "--noise-std", "0.1"], check=True)
                with open(dst, "rb") as f:
                    out("FuzzModelFile", name + ".tflow", f.read())
                # The same model compiled ahead of time: optimized graphs and memory plans in the file.
                comp = os.path.join(tmp, "compiled_" + name + ".tflow")
                subprocess.run([tarflow, "compile", dst, "-o", comp, "--batch", "1,2"], check=True)
                with open(comp, "rb") as f:
                    out("FuzzModelFile", "compiled_" + name + ".tflow", f.read())


if __name__ == "__main__":
    main()
