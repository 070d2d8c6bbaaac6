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
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml-tarflow", required=True, help="path of an apple/ml-tarflow checkout")
    ap.add_argument("--checkpoint", required=True, help="the official state_dict (.pth)")
    ap.add_argument("--model", required=True, help="the same checkpoint converted by `tarflow convert`")
    ap.add_argument("--tarflow", default=".build/release/tarflow", help="the tarflow binary (release build)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; each runner is timed once per round")
    ap.add_argument("--reps", type=int, default=5, help="calls per timing (median taken)")
    ap.add_argument("--forward-batch", type=int, nargs="*", default=[64, 1])
    ap.add_argument("--sample-batch", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    ap.add_argument("--serve", choices=["pytorch", "onnxruntime"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def model_config(args):
    """The architecture, as tarflow recorded it in the model file."""
    text = subprocess.run([args.tarflow, "inspect", args.model], check=True, capture_output=True, text=True).stdout
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
    ({"what": "forward"|"sample", "batch": B}) and answers with the median seconds."""
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.abspath(args.ml_tarflow))
    import transformer_flow  # the official model code, imported at run time

    cfg = model_config(args)
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

        onnx_path = os.path.join(tempfile.mkdtemp(), "forward.onnx")
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
        else:
            z = torch.randn(b, T, D)
            s = timed(lambda: torch.no_grad()(model.reverse)(z.clone(), y if K else None), max(1, args.reps // 2))
        print(json.dumps({"seconds": s}), flush=True)


class Child:
    """A runner process, stopped except while it is being timed."""

    def __init__(self, kind, args):
        argv = [sys.executable, os.path.abspath(__file__), "--serve", kind, "--ml-tarflow", args.ml_tarflow, "--checkpoint", args.checkpoint,
                "--model", args.model, "--tarflow", args.tarflow, "--threads", str(args.threads), "--reps", str(args.reps)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.read()  # ready
        self.proc.send_signal(signal.SIGSTOP)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a runner process exited (code {self.proc.wait()}); run it with --serve to see why")
        return json.loads(line)

    def time(self, what, batch):
        self.proc.send_signal(signal.SIGCONT)
        try:
            self.proc.stdin.write(json.dumps({"what": what, "batch": batch}) + "\n")
            self.proc.stdin.flush()
            return self.read()["seconds"]
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


def alternate(runners, rounds):
    """Times every runner once per round, in turn, and returns each one's median over rounds."""
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, fn in runners.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()
