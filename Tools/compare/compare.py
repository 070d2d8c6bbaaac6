#!/usr/bin/env python3
"""Side-by-side speed comparison: swift-tarflow vs the official PyTorch code vs ONNX Runtime.

Imports `transformer_flow.py` from an apple/ml-tarflow checkout at run time (nothing of it is
copied into this project), loads the same checkpoint into the official `Model`, exports its
forward pass to ONNX (ONNX Runtime with all graph optimizations), and times, alternating the
three runners round by round:
  - forward likelihood at each --forward-batch (official `Model.forward`, ORT, `tarflow bench --what forward`)
  - sampling at each --sample-batch (official `Model.reverse` with its KV cache, `tarflow bench --what sample`)
Prints one table of medians and ratios (ours faster = ratio > 1), then OpenBLAS sgemm on 2048³
with the same threads and the GFLOP/s tarflow's forward passes sustain.

Isolation: PyTorch and ONNX Runtime each run in their own child process, which is stopped
(SIGSTOP) whenever another runner is being timed: their worker threads spin for a while after
every call (OpenMP, ORT's intra-op pool), and on a 2-core machine a spinning thread of an idle
runner takes a core from the one being timed. tarflow runs as `tarflow bench`, a fresh process
per timing (it warms up for 0.3 s before timing).

Needs: torch (CPU), onnx, onnxruntime, numpy (e.g. in a venv); a release build of tarflow.

    python3 Tools/compare/compare.py --ml-tarflow /path/to/ml-tarflow \
        --checkpoint Tests/Fixtures/mnist_trained/model.pth --model Models/mnist.tflow --threads 2

Paper-size mode (`--config CONFIG.json`, e.g. Models/configs/afhq256.json): builds the official
`Model` of that architecture with seeded random weights (every parameter non-trivial), saves its
state_dict and converts it with `tarflow convert` to f32, f16 and bf16 model files in --workdir, so
both sides run the same weights, then times forward batch 1 (PyTorch, ORT, tarflow f32/f16/bf16)
and one whole block of decode steps at each --decode-batch (the official `MetaBlock.reverse`
loop with its KV cache, unguided, against `tarflow bench --what decode` f32/f16), reported per
image (block seconds x blocks / batch); then the memory read bandwidth and peak RSS.

    python3 Tools/compare/compare.py --ml-tarflow /path/to/ml-tarflow \
        --config Models/configs/afhq256.json --threads 2
"""
import argparse
import gc
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml-tarflow", required=True, help="path of an apple/ml-tarflow checkout")
    ap.add_argument("--checkpoint", help="the official state_dict (.pth)")
    ap.add_argument("--model", help="the same checkpoint converted by `tarflow convert`")
    ap.add_argument("--config", help="paper-size mode: an architecture JSON (e.g. Models/configs/afhq256.json), "
                                     "random weights instead of --checkpoint/--model")
    ap.add_argument("--tarflow", default=".build/release/tarflow", help="the tarflow binary (release build)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, help="alternating rounds; each runner is timed once per round (default 5; 1 with --config)")
    ap.add_argument("--reps", type=int, help="calls per timing (median taken; default 5; 2 with --config)")
    ap.add_argument("--forward-batch", type=int, nargs="*", default=[64, 1])
    ap.add_argument("--sample-batch", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--decode-batch", type=int, nargs="*", default=[1, 16], help="--config: batches of the decode block")
    ap.add_argument("--decode-steps", type=int, default=64, help="--config: decode steps `tarflow bench --what decode` times")
    ap.add_argument("--workdir", help="--config: where the weights go (GBs; default a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="--config: keep the weight files; a later run with the same "
                                                         "--workdir, config and --seed reuses them")
    ap.add_argument("--seed", type=int, default=0, help="--config: seed of the random weights")
    ap.add_argument("--skip-onnx", action="store_true", help="--config: no ONNX Runtime runner")
    ap.add_argument("--full-sample", action="store_true", help="--config: also time a real `tarflow sample --count 1` (f16)")
    ap.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    ap.add_argument("--serve", choices=["pytorch", "onnxruntime"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.serve:
        if args.config and (args.checkpoint or args.model):
            ap.error("--config builds its own weights: give either --config or --checkpoint and --model")
        if not args.config and not (args.checkpoint and args.model):
            ap.error("give --checkpoint and --model (a trained checkpoint and its converted model file), or --config")
        for name in ["threads", "rounds", "reps", "decode_steps"]:
            v = getattr(args, name)
            if v is not None and v < 1:
                ap.error(f"--{name.replace('_', '-')} must be at least 1")
        if any(b < 1 for b in args.forward_batch + args.sample_batch + args.decode_batch):
            ap.error("batches must be at least 1")
        if args.config and not args.decode_batch:
            ap.error("--decode-batch needs at least one batch")
    if args.rounds is None:
        args.rounds = 1 if args.config else 5
    if args.reps is None:
        args.reps = 2 if args.config else 5
    return args


CONFIG_FIELDS = ["in_channels", "img_size", "patch_size", "channels", "num_blocks", "layers_per_block", "nvp", "num_classes"]


def load_config(path):
    """The architecture of a config JSON (the `transformer_flow.Model` arguments) and its noise_std."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: --config {path}: cannot read it as JSON ({e})")
    missing = [k for k in CONFIG_FIELDS if k not in raw]
    if missing:
        raise SystemExit(f"error: --config {path}: missing field(s) {', '.join(missing)}; see Models/configs/afhq256.json")
    cfg = {k: raw[k] for k in CONFIG_FIELDS}
    bad = [k for k in CONFIG_FIELDS if k != "nvp" and (type(cfg[k]) is not int or cfg[k] < (0 if k == "num_classes" else 1))]
    if bad or type(cfg["nvp"]) is not bool:
        raise SystemExit(f"error: --config {path}: {', '.join(bad) or 'nvp'} must be "
                         + ("positive integers (num_classes may be 0)" if bad else "true or false"))
    if cfg["img_size"] % cfg["patch_size"] or cfg["channels"] % 64:
        raise SystemExit(f"error: --config {path}: img_size must be a multiple of patch_size and channels of 64 (the head size)")
    return cfg, raw.get("noise_std")


def model_config(args):
    """The architecture, as tarflow recorded it in the model file."""
    text = subprocess.run([args.tarflow, "inspect", args.model, "--graphs"], check=True, capture_output=True, text=True).stdout
    meta = {}
    for line in text.splitlines():
        if line.startswith("  tarflow.") and " = " in line:
            k, v = line.strip()[len("tarflow."):].split(" = ", 1)
            meta[k] = v
    cfg = {k: int(meta[k]) for k in ["in_channels", "img_size", "patch_size", "channels", "num_blocks", "layers_per_block", "num_classes"]}
    cfg["nvp"] = meta["nvp"] == "true"
    return cfg


def timed(fn, reps):
    fn()  # warm-up
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def serve(args):
    """A Python runner in its own process: reads one JSON request per line on stdin
    ({"what": "forward"|"sample"|"decode", "batch": B}) and answers with the median seconds
    (decode: one timed run of a whole block) and its peak RSS so far."""
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.abspath(args.ml_tarflow))
    import transformer_flow  # the official model code, imported at run time

    cfg = load_config(args.config)[0] if args.config else model_config(args)
    model = transformer_flow.Model(**cfg)
    model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    C, S, K = cfg["in_channels"], cfg["img_size"], cfg["num_classes"]
    T = (S // cfg["patch_size"]) ** 2
    D = C * cfg["patch_size"] ** 2
    session = None
    if args.serve == "onnxruntime":
        import onnxruntime as ort

        class Forward(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x, y):
                z, _, logdets = self.m(x, y)
                return z, logdets

        # A directory of its own: past 2 GB the exporter writes the weights as external data files
        # beside forward.onnx, which ORT finds because it loads the model from its path.
        onnx_dir = os.path.join(args.workdir, "onnx") if args.workdir else tempfile.mkdtemp()
        os.makedirs(onnx_dir, exist_ok=True)
        onnx_path = os.path.join(onnx_dir, "forward.onnx")
        with torch.no_grad():
            torch.onnx.export(Forward(model), (torch.randn(2, C, S, S), torch.zeros(2, dtype=torch.long)), onnx_path,
                              input_names=["x", "y"], output_names=["z", "logdets"],
                              dynamic_axes={"x": {0: "B"}, "y": {0: "B"}, "z": {0: "B"}, "logdets": {0: "B"}}, opset_version=17,
                              dynamo=False)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        model = None  # ORT has its own copy of the weights
        gc.collect()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        b = req["batch"]
        torch.manual_seed(b)
        y = torch.arange(b) % max(K, 1)
        if req["what"] == "forward":
            x = torch.randn(b, C, S, S).clamp(-1, 1)
            if session is not None:
                feeds = {"x": x.numpy(), "y": y.numpy()}
                s = timed(lambda: session.run(None, feeds), args.reps)
            else:
                s = timed(lambda: torch.no_grad()(model)(x, y if K else None), args.reps)
        elif req["what"] == "decode":
            # The first block Model.reverse runs (the last one), driven as Model.reverse drives it:
            # MetaBlock.reverse, T-1 reverse_step calls with its KV cache, unguided.
            block = model.blocks[-1]
            z = torch.randn(b, T, D) * model.var.sqrt()
            with torch.no_grad():
                block.reverse(z[:, :9].clone(), y if K else None)  # warm-up: 8 steps
                t0 = time.perf_counter()
                block.reverse(z.clone(), y if K else None)
                s = time.perf_counter() - t0
        else:
            z = torch.randn(b, T, D)
            s = timed(lambda: torch.no_grad()(model.reverse)(z.clone(), y if K else None), max(1, args.reps // 2))
        print(json.dumps({"seconds": s, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)


class Child:
    """A runner process, stopped except while it is being timed."""

    def __init__(self, kind, args, config=None, workdir=None):
        argv = [sys.executable, os.path.abspath(__file__), "--serve", kind, "--ml-tarflow", args.ml_tarflow, "--checkpoint", args.checkpoint,
                "--tarflow", args.tarflow, "--threads", str(args.threads), "--reps", str(args.reps)]
        argv += ["--config", config, "--workdir", workdir] if config else ["--model", args.model]
        # With a work directory the runner's stderr goes to a log there, else nowhere.
        self.log = os.path.join(workdir, f"{kind}.log") if workdir else None
        err = open(self.log, "w") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        if self.log:
            err.close()
        self.last = {}
        self.read()  # ready
        self.proc.send_signal(signal.SIGSTOP)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            where = f"see {self.log}" if self.log else "run it with --serve to see why"
            raise SystemExit(f"a runner process exited (code {self.proc.wait()}); {where}")
        return json.loads(line)

    def time(self, what, batch):
        self.proc.send_signal(signal.SIGCONT)
        try:
            self.proc.stdin.write(json.dumps({"what": what, "batch": batch}) + "\n")
            self.proc.stdin.flush()
            self.last = self.read()
            return self.last["seconds"]
        finally:
            self.proc.send_signal(signal.SIGSTOP)

    def close(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.stdin.close()
        self.proc.wait()


def main():
    args = parse_args()
    if args.serve:
        return serve(args)
    if args.config:
        return paper(args)

    children = {"pytorch": Child("pytorch", args), "onnxruntime": Child("onnxruntime", args)}
    gflops = {}

    def ours(what, batch):
        out = subprocess.run([args.tarflow, "bench", args.model, "--what", what, "--batch", str(batch), "--threads", str(args.threads),
                              "--reps", str(args.reps)], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        gflops.setdefault(f"{what} B={batch}", []).append(r["gflops"])
        return r["seconds_median"]

    results = {}
    try:
        for b in args.forward_batch:
            runners = {
                "pytorch": lambda: children["pytorch"].time("forward", b),
                "onnxruntime": lambda: children["onnxruntime"].time("forward", b),
                "tarflow": lambda: ours("forward", b),
            }
            results[f"forward B={b}"] = alternate(runners, args.rounds)
        for b in args.sample_batch:
            runners = {
                "pytorch": lambda: children["pytorch"].time("sample", b),
                "tarflow": lambda: ours("sample", b),
            }
            results[f"sample B={b}"] = alternate(runners, args.rounds)
    finally:
        for c in children.values():
            c.close()

    print(f"threads {args.threads}, {args.rounds} alternating rounds, median seconds (ratio = other / tarflow)")
    print(f"{'case':<16}{'tarflow':>12}{'pytorch':>12}{'onnxruntime':>14}{'vs pytorch':>12}{'vs ORT':>10}")
    for case, r in results.items():
        ours_s = r["tarflow"]
        pt, ox = r.get("pytorch"), r.get("onnxruntime")
        print(f"{case:<16}{ours_s:>12.4f}{pt:>12.4f}" + (f"{ox:>14.4f}" if ox else f"{'-':>14}") +
              f"{pt / ours_s:>11.2f}x" + (f"{ox / ours_s:>9.2f}x" if ox else f"{'-':>10}"))
    # The GEMM yardstick: OpenBLAS sgemm on 2048³ with the same threads.
    out = subprocess.run([args.tarflow, "bench", "--sgemm", "--threads", str(args.threads)], check=True, capture_output=True, text=True).stdout
    sgemm = json.loads(out.strip().splitlines()[-1])["gflops"]
    print(f"OpenBLAS sgemm 2048^3, {args.threads} threads: {sgemm:.1f} GFLOP/s")
    for case, g in gflops.items():
        if case.startswith("forward"):
            med = statistics.median(g)
            print(f"tarflow {case}: {med:.1f} GFLOP/s = {100 * med / sgemm:.0f}% of sgemm")
    if args.json:
        results["sgemm_gflops"] = sgemm
        results["tarflow_gflops"] = {k: statistics.median(v) for k, v in gflops.items()}
        print(json.dumps(results))


WEIGHTS = ["f32", "f16", "bf16"]


def log(t0, text):
    sys.stdout.flush()
    print(f"[{time.perf_counter() - t0:7.1f} s] {text}", file=sys.stderr, flush=True)


def tool(argv):
    """Runs a tarflow command; a failure ends the comparison with its own error line."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True)
    except OSError as e:
        raise SystemExit(f"error: cannot run {argv[0]} ({e.strerror}); give the release build with --tarflow")
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        raise SystemExit(f"error: `{' '.join(argv)}` failed (exit {p.returncode}): {lines[-1] if lines else 'no output'}")
    return p.stdout


def build_weights(args, cfg, noise_std, wd, t0):
    """Seeded random weights of the official Model, saved as a state_dict and converted by
    `tarflow convert` to f32, f16 and bf16 model files; reused when a kept --workdir already
    holds them for the same config and seed."""
    paths = {"pth": os.path.join(wd, "model.pth")}
    paths.update({w: os.path.join(wd, f"model-{w}.tflow") for w in WEIGHTS})
    stamp_path = os.path.join(wd, "weights.json")
    stamp = {"config": cfg, "noise_std": noise_std, "seed": args.seed}
    try:
        with open(stamp_path) as f:
            if json.load(f) == stamp and all(os.path.exists(p) for p in paths.values()):
                log(t0, f"reusing the weights in {wd}")
                return paths
    except (OSError, ValueError):
        pass
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    import torch

    sys.path.insert(0, os.path.abspath(args.ml_tarflow))
    import transformer_flow  # the official model code, imported at run time

    torch.manual_seed(args.seed)
    model = transformer_flow.Model(**cfg)
    with torch.no_grad():
        # The official init leaves proj_out's weight at zero (each block starts as the identity
        # of its affine step) and LayerNorms at 1 / 0: perturbed so that every parameter is
        # non-trivial and sampling depends on the transformer, small enough to stay finite.
        for block in model.blocks:
            block.proj_out.weight.normal_(0, 0.1 / cfg["channels"] ** 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(torch.randn_like(m.weight), alpha=0.05)
                m.bias.normal_(0, 0.05)
    torch.save(model.state_dict(), paths["pth"])
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    log(t0, f"saved {paths['pth']} ({params / 1e6:.1f} M parameters, {os.path.getsize(paths['pth']) / 1e9:.2f} GB)")
    for w in WEIGHTS:
        argv = [args.tarflow, "convert", paths["pth"], "-o", paths[w], "--image-size", str(cfg["img_size"]), "--weights", w]
        if noise_std is not None:
            argv += ["--noise-std", str(noise_std)]
        tool(argv)
        log(t0, f"converted {paths[w]} ({os.path.getsize(paths[w]) / 1e9:.2f} GB)")
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return paths


def paper(args):
    """Paper-size mode: random weights of a config's architecture, forward batch 1 and decode
    blocks against the official code (and ORT for the forward), bandwidth and memory."""
    t0 = time.perf_counter()
    cfg, noise_std = load_config(args.config)
    tool([args.tarflow, "--help"])  # before gigabytes of weights are built for it
    T = (cfg["img_size"] // cfg["patch_size"]) ** 2
    temporary = args.workdir is None
    wd = tempfile.mkdtemp(prefix="tarflow-compare-") if temporary else os.path.abspath(args.workdir)
    os.makedirs(wd, exist_ok=True)
    children = {}
    raw = {}  # every JSON figure, by case and runner

    def ours(case, key, argv, field):
        r = json.loads(tool(argv).strip().splitlines()[-1])
        raw.setdefault(case, {}).setdefault(key, []).append(r)
        return r[field]

    def bench(case, w, what, *opts):
        field = "seconds_median" if what == "forward" else "seconds_per_image_estimate"
        return ours(case, w, [args.tarflow, "bench", paths[w], "--what", what, *opts, "--threads", str(args.threads)], field)

    def python(case, kind, what, batch, per_image):
        s = children[kind].time(what, batch) * per_image
        raw.setdefault(case, {}).setdefault(kind, []).append(dict(children[kind].last, seconds_per_image=s))
        return s

    results = {}
    paths = {}
    try:
        paths.update(build_weights(args, cfg, noise_std, wd, t0))
        config_copy = os.path.join(wd, "config.json")
        with open(config_copy, "w") as f:
            json.dump(dict(cfg, noise_std=noise_std), f)
        args.checkpoint = paths["pth"]
        for kind in ["pytorch"] + ([] if args.skip_onnx else ["onnxruntime"]):
            log(t0, f"starting the {kind} runner" + (" (exports the forward to ONNX first)" if kind == "onnxruntime" else ""))
            children[kind] = Child(kind, args, config=config_copy, workdir=wd)
        log(t0, "timing forward B=1")
        runners = {kind: lambda kind=kind: python("forward B=1", kind, "forward", 1, 1) for kind in children}
        for w in WEIGHTS:
            runners[w] = lambda w=w: bench("forward B=1", w, "forward", "--batch", "1", "--reps", str(args.reps))
        results["forward B=1"] = alternate(runners, args.rounds)
        for b in args.decode_batch:
            log(t0, f"timing decode B={b}")
            case = f"decode B={b}"
            runners = {"pytorch": lambda b=b, case=case: python(case, "pytorch", "decode", b, cfg["num_blocks"] / b)}
            for w in ["f32", "f16"]:
                runners[w] = lambda w=w, b=b, case=case: bench(case, w, "decode", "--batch", str(b),
                                                               "--steps", str(args.decode_steps))
            results[case] = alternate(runners, args.rounds)
        if args.full_sample:
            log(t0, "timing tarflow sample --count 1 (f16)")
            case = "sample B=1 (wall)"
            out = os.path.join(wd, "sample.npy")

            def sample():
                s = time.perf_counter()
                tool([args.tarflow, "sample", paths["f16"], "--count", "1", "--threads", str(args.threads), "--quiet", "-o", out])
                return time.perf_counter() - s
            results[case] = alternate({"f16": sample}, args.rounds)
        bandwidth = json.loads(tool([args.tarflow, "bench", "--bandwidth", "--threads", str(args.threads)]).strip().splitlines()[-1])
        python_rss = {k: c.last.get("peak_rss_bytes") for k, c in children.items()}
        for c in children.values():
            c.close()
        children.clear()
        log(t0, "done")
        report(args, cfg, T, results, raw, bandwidth, python_rss, {w: os.path.getsize(paths[w]) for w in WEIGHTS})
    finally:
        for c in children.values():
            c.close()
        if args.keep:
            print(f"kept the weights in {wd}", file=sys.stderr)
        elif temporary:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            for f in list(paths.values()) + [os.path.join(wd, f) for f in ["weights.json", "config.json", "sample.npy"]]:
                if os.path.exists(f):
                    os.remove(f)
            shutil.rmtree(os.path.join(wd, "onnx"), ignore_errors=True)


def report(args, cfg, T, results, raw, bandwidth, python_rss, sizes):
    """The table of the paper-size mode, then bandwidth and memory lines (and --json)."""
    gbs = bandwidth["gbytes_per_second"]

    def fmt(v, width):
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.4g}"

    def ratio(pt, v, width):
        return f"{'-':>{width}}" if pt is None or v is None else f"{pt / v:>{width - 1}.2f}x"

    name = os.path.splitext(os.path.basename(args.config))[0]
    print(f"{name}: {cfg['in_channels']}x{cfg['img_size']}x{cfg['img_size']}, patch {cfg['patch_size']} (T={T}), "
          f"{cfg['channels']} channels, {cfg['num_blocks']} blocks x {cfg['layers_per_block']} layers; random weights (seed {args.seed})")
    print(f"threads {args.threads}, {args.rounds} alternating round(s), median seconds per image "
          f"(decode: per step x {T - 1} steps x {cfg['num_blocks']} blocks / batch; ratio = pytorch / tarflow)")
    print(f"{'case':<19}{'f32':>10}{'f16':>10}{'bf16':>10}{'pytorch':>10}{'ORT':>10}{'f32 vs PT':>11}{'f16 vs PT':>11}{'bf16 vs PT':>11}")
    for case, r in results.items():
        pt = r.get("pytorch")
        print(f"{case:<19}" + "".join(fmt(r.get(w), 10) for w in WEIGHTS) + fmt(pt, 10) + fmt(r.get("onnxruntime"), 10)
              + "".join(ratio(pt, r.get(w), 11) for w in WEIGHTS))

    def size(n):
        return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"

    def med(case, w, field):
        runs = raw.get(case, {}).get(w)
        return statistics.median(x[field] for x in runs) if runs else None

    print(f"memory read bandwidth (tarflow bench --bandwidth, {args.threads} threads): {gbs:.1f} GB/s")
    for b in [1 if 1 in args.decode_batch else min(args.decode_batch)]:
        for w in ["f32", "f16"]:
            g = med(f"decode B={b}", w, "gbytes_per_second")
            mb = med(f"decode B={b}", w, "bytes_per_step") / 1e6
            print(f"  decode B={b} {w}: {g:.1f} GB/s = {100 * g / gbs:.0f}% of it ({mb:.1f} MB read per step)")
    if "sample B=1 (wall)" in results and "decode B=1" in results:
        wall, est = results["sample B=1 (wall)"]["f16"], results["decode B=1"]["f16"]
        print(f"tarflow sample --count 1 f16: {wall:.4g} s wall (load included) vs decode estimate {est:.4g} s ({100 * wall / est:.0f}%)")
    big = max(args.decode_batch)
    print(f"peak RSS: tarflow forward B=1 f32 {size(med('forward B=1', 'f32', 'peak_rss_bytes'))} (f32 weights file {size(sizes['f32'])}); "
          f"tarflow decode B={big} f16 {size(med(f'decode B={big}', 'f16', 'peak_rss_bytes'))} "
          f"(f16 weights file {size(sizes['f16'])}; bf16 {size(sizes['bf16'])})")
    print("peak RSS of the Python runners (whole run): " + ", ".join(f"{k} {size(v)}" for k, v in python_rss.items() if v))
    if args.json:
        print(json.dumps({"config": cfg, "threads": args.threads, "rounds": args.rounds, "seed": args.seed,
                          "results": results, "raw": raw, "bandwidth": bandwidth, "weight_bytes": sizes, "python_peak_rss_bytes": python_rss}))


def alternate(runners, rounds):
    """Times every runner once per round, in turn, and returns each one's median over rounds."""
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, fn in runners.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()
