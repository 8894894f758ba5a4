#!/usr/bin/env python3
"""Peer benchmark: ONNX Runtime and dnnc on the same model, input and thread count.

usage: bench/peers/peer.py MODEL [--threads N] [--runs R] [--warmup W] [--rounds K]
                                 [--engines reference,...] [--cpu LEVEL]

MODEL is a .onnx file or one of the models this script builds with the onnx helper API
(random weights, nothing downloaded): resnet18, resnet50, mobilenet_v2, vgg16, conv3x3_64
(a 3×3 convolution 64→64 at 56×56), matmul (64×1024 · 1024×4096), lstm (hidden 1024, 32
steps), attention (a self-attention block: 128 tokens, width 256, 4 heads).

With --prune RATE, dnnc runs the model after `bcr-prune{rate=RATE ...}` (GRIM) while ONNX
Runtime runs it dense, as the papers compare; outputs then differ by design and are not
checked. --prune-block takes one block shape, or a list for bcr-tune to choose each
layer's fastest from by measured kernel time. --layouts runs dnnc once per weight layout (e.g. auto,csr,dense).

With --memory it instead reports each engine's peak resident memory (VmHWM) for loading
the model and running it once, each in a fresh process.

It sets up its own virtualenv (target/peers/venv, with numpy, onnx and onnxruntime from
PyPI), builds dnnc in release mode, imports the model with `dnnc import`, checks dnnc's
output against ONNX Runtime's on the same input, then times both in alternating rounds
(ONNX Runtime in this process, dnnc through `dnnc bench --json`) and prints the median
latencies over all rounds and their ratio.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "target", "peers")
VENV = os.path.join(WORK, "venv")
PACKAGES = ["numpy", "onnx", "onnxruntime==1.32.0"]


def ensure_venv():
    """Re-runs this script inside its own virtualenv, creating it on first use."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(python):
        print(f"setting up {VENV} ({', '.join(PACKAGES)})", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", *PACKAGES])
    os.execv(python, [python, *sys.argv])


def dnnc_binary():
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "dnnc"], cwd=ROOT)
    return os.path.join(ROOT, "target", "release", "dnnc")


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def quantile(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, round((len(s) - 1) * q))]


ORT_ONCE = """
import sys, numpy as np, onnxruntime as ort
path, threads, *inputs = sys.argv[1:]
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(threads)
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
feeds = dict(zip([i.name for i in sess.get_inputs()], [np.load(f) for f in inputs]))
sess.run(None, feeds)
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def report_memory(name, path, dnn, dnnc, flags, feeds, args):
    """Peak RSS of ONNX Runtime and of each dnnc engine, each loading and running once."""
    inputs = [os.path.join(WORK, f"{name}.{k}.npy") for k in feeds]
    rows = []
    out = subprocess.check_output([sys.executable, "-c", ORT_ONCE, path, str(args.threads), *inputs])
    rows.append(("onnxruntime", int(out.decode().strip()), None))
    for engine in args.engines.split(","):
        out = subprocess.check_output([dnnc, "bench", dnn, "--engine", engine, "--threads", str(args.threads),
                                       "--warmup", "0", "--runs", "1", "--json", *flags])
        report = json.loads(out)
        rows.append((f"dnnc-{engine}", report["peak_memory_mb"] * 1024, report.get("planned_arena_bytes")))
    print(f"\n{name}, {args.threads} thread(s), load and one run, fresh process each:")
    print(f"  {'engine':<16} {'peak RSS MiB':>13} {'planned arena MiB':>18}")
    for engine, rss, arena in rows:
        a = f"{arena / 2**20:>18.1f}" if arena is not None else f"{'-':>18}"
        print(f"  {engine:<16} {rss / 1024:>13.1f} {a}")


def main():
    ensure_venv()
    import numpy as np
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, os.path.join(ROOT, "tools", "onnx-models"))
    from builders import PEER_MODELS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10, help="timed runs per round and engine")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternations between the engines")
    p.add_argument("--engines", default="reference", help="dnnc engines, comma-separated")
    p.add_argument("--memory", action="store_true", help="report peak RSS instead of latency")
    p.add_argument("--prune", type=float, help="BCR-prune dnnc's copy at this rate first")
    p.add_argument("--prune-block", default="8x32",
                   help="BCR block shape; a comma-separated list lets bcr-tune pick each "
                        "layer's fastest on this machine (GRIM's decoupling: blocks by speed)")
    p.add_argument("--prune-layers", default=".*", help="weights to prune (regex)")
    p.add_argument("--layouts", default="auto", help="dnnc weight layouts, comma-separated")
    p.add_argument("--cpu", default="native", help="dnnc's vector level (native, avx512, avx2, sse4)")
    args = p.parse_args()

    os.makedirs(WORK, exist_ok=True)
    if args.model in PEER_MODELS:
        name = args.model
        path = os.path.join(WORK, f"{name}.onnx")
        if not os.path.exists(path):
            onnx.save(PEER_MODELS[name](), path)
    else:
        path = os.path.abspath(args.model)
        name = os.path.splitext(os.path.basename(path))[0]
    dnnc = dnnc_binary()
    dnn = os.path.join(WORK, f"{name}.dnn")
    subprocess.check_call([dnnc, "import", path, "-o", dnn])
    if args.prune:
        pruned = os.path.join(WORK, f"{name}.bcr{args.prune:g}.dnn")
        rate, layers = f"{args.prune:g}", args.prune_layers
        if "," in args.prune_block:
            # Every layer at the same rate; bcr-tune only times the candidate blocks.
            pipeline = (f'canonicalize,bcr-tune{{target={rate} rates={rate} '
                        f'blocks="{args.prune_block}" slack=0 refine=0 layers={layers}}},'
                        f"bcr-prune{{rate={rate} layers={layers}}},dce")
        else:
            pipeline = (f"canonicalize,bcr-prune{{rate={rate} block={args.prune_block} "
                        f"layers={layers}}},dce")
        subprocess.check_call([dnnc, "opt", dnn, "-p", pipeline, "-o", pruned])
        print(f"dnnc runs {os.path.basename(pruned)} ({pipeline}); ONNX Runtime runs the dense model")
        dnn = pruned

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds, flags = {}, []
    for inp in sess.get_inputs():
        a = rng.standard_normal(inp.shape).astype(np.float32)
        feeds[inp.name] = a
        f = os.path.join(WORK, f"{name}.{inp.name}.npy")
        np.save(f, a)
        flags += ["--input", f"{inp.name}={f}"]

    if args.memory:
        report_memory(name, path, dnn, dnnc, flags, feeds, args)
        return

    # The same answer first: dnnc's outputs against ONNX Runtime's.
    expected = sess.run(None, feeds)
    outdir = os.path.join(WORK, f"{name}.out")
    for engine in ([] if args.prune else args.engines.split(",")):
        subprocess.check_call([dnnc, "run", dnn, "--engine", engine, "--cpu", args.cpu, *flags,
                               "--output-dir", outdir], stdout=subprocess.DEVNULL)
        got = [np.load(os.path.join(outdir, f)) for f in sorted(os.listdir(outdir))]
        for i, (w, g) in enumerate(zip(expected, got)):
            w = w.reshape(g.shape)
            rel = float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-30))
            print(f"{name} output {i}: dnnc {engine} vs ONNX Runtime: relative L2 error {rel:.2e}, "
                  f"max abs error {float(np.max(np.abs(g - w))):.2e}")

    # dnnc configurations: engine, and for the JIT each weight layout.
    configs = []
    for engine in args.engines.split(","):
        layouts = args.layouts.split(",") if engine == "jit" else [None]
        for layout in layouts:
            label = f"dnnc-{engine}" + (f"-{layout}" if layout and layout != "auto" else "")
            configs.append((label, engine, layout))
    times = {"onnxruntime": []}
    levels = {"onnxruntime": "-"}
    for label, _, _ in configs:
        times[label] = []
    for _ in range(args.rounds):
        for _ in range(args.warmup):
            sess.run(None, feeds)
        import time
        for _ in range(args.runs):
            t = time.perf_counter()
            sess.run(None, feeds)
            times["onnxruntime"].append((time.perf_counter() - t) * 1e3)
        for label, engine, layout in configs:
            extra = ["--layout", layout] if layout else []
            out = subprocess.check_output([dnnc, "bench", dnn, "--engine", engine, "--threads", str(args.threads),
                                           "--warmup", str(args.warmup), "--runs", str(args.runs), "--json",
                                           "--cpu", args.cpu, *extra, *flags])
            report = json.loads(out)
            times[label] += report["latencies_ms"]
            levels[label] = report.get("level") or "-"

    base = median(times["onnxruntime"])
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip() \
        if os.path.exists("/proc/cpuinfo") else "?"
    print(f"\n{name}, {args.threads} thread(s), {args.rounds} rounds × {args.runs} runs "
          f"(onnxruntime {ort.__version__}; {cpu}):")
    print(f"  {'engine':<20} {'level':>7} {'median ms':>10} {'p10 ms':>10} {'p90 ms':>10} {'vs ORT':>8} {'speedup':>8}")
    for engine, xs in times.items():
        m = median(xs)
        print(f"  {engine:<20} {levels[engine]:>7} {m:>10.3f} {quantile(xs, 0.1):>10.3f} {quantile(xs, 0.9):>10.3f} "
              f"{m / base:>7.2f}× {base / m:>7.2f}×")


if __name__ == "__main__":
    main()
