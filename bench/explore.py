#!/usr/bin/env python3
"""What `explore` buys on the JIT: the explored program against the same model all dense,
in every single BCR block shape for the whole model, and as the pipeline leaves it (the
JIT's defaults), in interleaved rounds on one thread, medians.

usage: bench/explore.py [CASE ...] [--rounds K] [--runs R] [--explore PIPELINE]

CASE is one of: resnet18-bcr8, vgg16-bcr8, mobilenet_v2-bcr8, gru-bcr8,
resnet18-decomposed, resnet18-rewrites, inception, attention (default: all). Each case
is a zoo model after a lossy pipeline (BCR pruning at 8x with the first conv, or the
GRU's first input weight, and the classifier dense; or ESCALATE's decomposition) whose
result is the input of `explore`; the explored file's outputs are checked against the
reference interpreter running the unexplored file (relative L2 <= 1e-4). The "-rewrites" and block cases run
`explore{search=rewrites}`: the speedup of exact rewrites alone, as TENSAT's table gives.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WORK = os.path.join(ROOT, "target", "explore-bench")
DNNC = os.path.join(ROOT, "target", "release", "dnnc")

PRUNE = "canonicalize,bcr-prune{{rate=8 block=8x32 layers={layers}}},dce"
CASES = {
    # name: (zoo model, lossy pipeline, explore options)
    "resnet18-bcr8": ("resnet18", PRUNE.format(layers="^layer"), ""),
    "vgg16-bcr8": ("vgg16", PRUNE.format(layers="^(features\\.([2-9]|[1-9][0-9])\\.|classifier\\.[03]\\.)"), ""),
    "mobilenet_v2-bcr8": ("mobilenet_v2", PRUNE.format(layers="^features\\.([2-9]|1[0-8])\\..*conv\\.(0\\.0|1|2)\\.weight$"), ""),
    # Input and recurrent matrices pruned per gate matrix (docs/papers.md), but for the
    # first layer's input weight (39 features), kept dense as a first conv is.
    "gru-bcr8": ("gru", PRUNE.format(layers="^gru\\.(0\\.r|1\\.[wr])$"), ""),
    "resnet18-decomposed": ("resnet18", "canonicalize,decompose,dce", ""),
    "resnet18-rewrites": ("resnet18", "", "search=rewrites"),
    "inception": ("inception_block", "", "search=rewrites"),
    "attention": ("attention_block", "", "search=rewrites"),
}
SHAPES = ["8x32", "4x32", "8x16", "4x16", "1x32", "16x32", "2x32"]


def run(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def bench(path, extra, runs):
    out = run([DNNC, "bench", path, "--runs", str(runs), "--warmup", "2", "--json", *extra]).stdout
    return json.loads(out)


def read_npy(path):
    """The values of a little-endian f32 .npy file (what `dnnc run --output-dir` writes)."""
    import array
    import ast
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    header_len = int.from_bytes(data[8:10], "little") if data[6] == 1 else int.from_bytes(data[8:12], "little")
    start = (10 if data[6] == 1 else 12) + header_len
    header = ast.literal_eval(data[start - header_len:start].decode("latin1"))
    assert header["descr"] == "<f4", header
    values = array.array("f")
    values.frombytes(data[start:])
    return values


def rel_l2(a, b):
    num = sum((x - y) ** 2 for x, y in zip(a, b))
    den = sum(y * y for y in b)
    return (num / max(den, 1e-30)) ** 0.5


def outputs(path, engine, tag):
    d = os.path.join(WORK, f"out-{tag}-{engine}")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    run([DNNC, "run", path, "--engine", engine, "--random-inputs", "7", "--output-dir", d])
    return [read_npy(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".npy")]


def program(path):
    """A .dnn file's text without its comment lines (which name the file)."""
    with open(path) as f:
        return [line for line in f if not line.lstrip().startswith("//")]


def case(name, rounds, runs):
    model, lossy, options = CASES[name]
    src = os.path.join(WORK, f"{model}.dnn")
    if not os.path.exists(src):
        run([DNNC, "zoo", model, "-o", src])
    base = os.path.join(WORK, f"{name}.dnn")
    if lossy:
        run([DNNC, "opt", src, "-p", lossy, "-o", base])
    else:
        run([DNNC, "opt", src, "-o", base])
    explored = os.path.join(WORK, f"{name}.explored.dnn")
    pipeline = f"explore{{{options}}}" if options else "explore"
    t = time.perf_counter()
    res = run([DNNC, "opt", base, "-p", pipeline, "--stats", "-o", explored])
    wall = time.perf_counter() - t
    stats = {}
    for line in res.stderr.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "(S)":
            stats[parts[2]] = parts[1]
    # Outputs of the explored program on the JIT against the reference on the input.
    want = outputs(base, "reference", name + "-base")
    got = outputs(explored, "jit", name + "-explored")
    err = max(rel_l2(g, w) for g, w in zip(got, want))
    variants = [("default", base, []), ("explored", explored, [])]
    if lossy.find("bcr-prune") >= 0:
        # The same weights in one layout for the whole model (where a shape holds a
        # weight's zeros exactly; the weights it does not hold keep 8x32).
        variants.append(("dense", base, ["--layout", "dense"]))
        for layout in [f"bcr:{s}" for s in SHAPES]:
            path = os.path.join(WORK, f"{name}.{layout.replace(':', '')}.dnn")
            run([DNNC, "opt", base, "-p", f"bcr-relayout{{layout={layout}}}", "-o", path])
            # A shape that holds none of the weights exactly leaves the default program:
            # marked, so that noise between identical files is not read as the shape's.
            if program(path) == program(base):
                layout += " (= default file)"
            variants.append((layout, path, ["--layout", "encoding"]))
    times = {v[0]: [] for v in variants}
    for _ in range(rounds):
        for label, path, extra in variants:
            times[label].append(bench(path, extra, runs)["median_ms"])
    med = {k: median(v) for k, v in times.items()}
    return med, err, stats, wall, program(explored) == program(base)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="*", default=list(CASES))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    os.makedirs(WORK, exist_ok=True)
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "dnnc"], cwd=ROOT)
    cpu = run([DNNC, "info", "--target"]).stdout.strip().splitlines()
    print("\n".join(cpu))
    print(f"{args.rounds} interleaved rounds of {args.runs} runs each, 1 thread, medians")
    for name in args.cases:
        med, err, stats, wall, unchanged = case(name, args.rounds, args.runs)
        e = med["explored"]
        others = {k: v for k, v in med.items() if k != "explored"}
        bcr = {k: v for k, v in others.items() if k.startswith("bcr:")}
        same = " (= default file)" if unchanged else ""
        row = [f"{name}: explored{same} {e:.3f} ms", f"default {med['default']:.3f} ms ({med['default'] / e:.2f}x)"]
        if "dense" in med:
            row.append(f"dense {med['dense']:.3f} ms ({med['dense'] / e:.2f}x)")
        if bcr:
            best = min(bcr, key=bcr.get)
            row.append(f"best single shape {best} {bcr[best]:.3f} ms ({bcr[best] / e:.2f}x)")
        row.append(f"rel. L2 vs reference {err:.1e}")
        row.append(f"explore {float(stats.get('search-ms', 'nan')):.0f} ms in-pass, {wall * 1e3:.0f} ms wall")
        row.append(f"predicted {float(stats.get('predicted-input-ms', 'nan')):.3f} -> {float(stats.get('predicted-ms', 'nan')):.3f} ms")
        print("  " + "; ".join(row))
        if bcr:
            print("    all shapes: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(bcr.items(), key=lambda kv: kv[1])))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
