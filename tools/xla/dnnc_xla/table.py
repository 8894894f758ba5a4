"""`python -m dnnc_xla.table`: ACCPAR's predicted communication per layer beside the
collectives XLA inserted, and every plan's step time on simulated devices, as Markdown
(docs/xla-communication.md is its output)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

STRATEGIES = ("dp", "owt", "hypar", "accpar")
#: Device arrays (N: the device count): the papers' heterogeneous pair, and one kind alone,
#: where every share is even and the mesh expresses the plan exactly.
ARRAYS = ("tpu-v2:N/2,tpu-v3:N/2", "tpu-v3:N")


def dnnc(binary: str, *args: str) -> None:
    out = subprocess.run([binary, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"dnnc {' '.join(args)} failed:\n{out.stderr}")


def main() -> int:
    repo = pathlib.Path(__file__).resolve().parents[3]
    p = argparse.ArgumentParser(prog="python -m dnnc_xla.table", description=__doc__)
    p.add_argument("--dnnc", default=os.environ.get("DNNC", str(repo / "target/release/dnnc")))
    p.add_argument("--model", default="vgg11")
    p.add_argument("--image-size", default="32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--devices", type=int, nargs="+", default=[4, 8])
    p.add_argument("--repeats", type=int, default=7, help="timed steps per plan (median)")
    p.add_argument("-o", "--output", default=None, help="Markdown file (default: standard output)")
    p.add_argument("--arrays", nargs="+", default=list(ARRAYS), help="N stands for the device count")
    a = p.parse_args()
    # Simulated devices must be set before JAX starts.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(a.devices)}"
    ).strip()
    import jax

    # 64-bit types, so that every f32 step is also held against the step in f64.
    jax.config.update("jax_enable_x64", True)
    from . import dnn, explain
    from .model import max_pool_flips
    from .run import inputs, run

    work = pathlib.Path(tempfile.mkdtemp(prefix="dnnc-xla-table-"))
    raw, model = work / f"{a.model}-init.dnn", work / f"{a.model}.dnn"
    dnnc(a.dnnc, "zoo", a.model, "--batch", str(a.batch), "--image-size", a.image_size, "-o", str(raw))
    dnnc(a.dnnc, "opt", str(raw), "--materialize-weights", "-o", str(model))
    results = {}
    for array in a.arrays:
        for n in a.devices:
            for strategy in STRATEGIES:
                plan = work / f"{strategy}-{n}-{len(results)}.json"
                dnnc(a.dnnc, "partition", str(model), "--devices", explain.array_name(array, n),
                     "--batch", str(a.batch), "--strategy", strategy, "--emit-plan", str(plan))
                print(f"{strategy} on {explain.array_name(array, n)} ...", file=sys.stderr)
                doc = json.loads(plan.read_text())
                results[(array, n, strategy)] = (doc, run(str(model), str(plan), repeats=a.repeats))
    m = dnn.read_module(str(model))
    flips = max_pool_flips(m, "main", inputs(m.functions["main"], a.batch, 0)[0], jax.numpy.float64)
    shutil.rmtree(work)
    text = explain.document(a, results, flips, _cpu())
    if a.output:
        tmp = pathlib.Path(a.output + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(a.output)
    else:
        sys.stdout.write(text)
    return 0


def _cpu() -> str:
    """The CPU's name, family and model, and its widest vector extension."""
    info: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    flags = info.get("flags", "").split()
    level = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    return f"{info.get('model name', '?')}, family {info.get('cpu family', '?')} model {info.get('model', '?')}; {level}"


if __name__ == "__main__":
    sys.exit(main())
