"""GRIM's speed side, in the shape of the paper's comparison: VGG-16, ResNet-18 and
MobileNet-V2 (ImageNet shapes) and a GRU layer's gate matrices, BCR-pruned by dnnc at the
paper's kind of rates, saved as ONE pruned ONNX file per model and rate, and that same file
run by dnnc (its `auto` layout, which finds the BCR structure, the dense and CSR layouts,
and the program `explore` chooses), ONNX Runtime, MNN (dense, and with its converter's sparse detection) and
DeepSparse, at 1 and 2 threads. Each engine stays loaded in its own process (its own
virtualenv) and the rounds alternate between engines, so that drift of the machine hits all
alike; the figure is the median of all timed runs. Every engine's output on the same input
is checked against ONNX Runtime's first."""
import json
import os
import re
import subprocess
import sys

import numpy as np

from common import DNNC, ROOT, dnnc, read_weights, table, work

PAPER = "up to 14.08× (GRIM, against MNN, TVM, TFLite, a CSR implementation, PatDNN and ESE, on mobile CPUs and GPUs)"
PEERS = os.path.join(ROOT, "target", "results", "peers")
#: Per engine, its virtualenv and what it installs there (PyPI; nothing else).
VENVS = {"ort": ("ort", ["numpy", "onnxruntime==1.32.0"]),
         "mnn": ("mnn", ["numpy", "MNN==3.6.1"]),
         "deepsparse": ("deepsparse", ["deepsparse==1.8.0"])}
ENV = {**os.environ, "NM_DISABLE_ANALYTICS": "1", "NM_VERSION_CHECK": "false"}


def python(engine):
    """The interpreter of `engine`'s virtualenv, created on first use."""
    name, packages = VENVS[engine]
    venv = os.path.join(PEERS, name)
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages])
    return py


def models(quick):
    """(name, builder, rates): GRIM prunes CNNs at 8× and beyond and its GRU zoo has 10× and
    20×; the first conv and the classifier stay dense, as in the paper's experiments."""
    if quick:
        return [("gru_gates", 10), ("resnet18", 8)]
    return [("vgg16", 8), ("vgg16", 16), ("resnet18", 8), ("resnet18", 16),
            ("mobilenet_v2", 8), ("gru_gates", 10), ("gru_gates", 20)]


def onnx_model(name):
    import onnx
    sys.path.insert(0, os.path.join(ROOT, "tools", "onnx-models"))
    from builders import PEER_MODELS
    path = work("speed", f"{name}.onnx")
    if not os.path.exists(path):
        onnx.save(PEER_MODELS[name](), path)
    return path


def prunable(model):
    """The weights GRIM prunes: every Conv (groups 1) and Gemm/MatMul weight but the first
    conv and the last classifier."""
    import onnx
    m = onnx.load(model, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    names = []
    for n in m.graph.node:
        groups = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type in ("Conv", "Gemm", "MatMul") and groups == 1 and len(n.input) > 1 and n.input[1] in inits:
            names.append(n.input[1])
    convs = [n for n in names if n.startswith("conv")]
    dense = {convs[0]} if convs else set()
    if convs:  # a CNN: its classifier stays dense too
        dense.add(names[-1])
    return [n for n in names if n not in dense]


def pruned_onnx(name, rate):
    """The model BCR-pruned by dnnc (8×32 blocks), written back into the ONNX file's
    initializers: the one file every engine runs."""
    import onnx
    from onnx import numpy_helper
    src = onnx_model(name)
    out = work("speed", f"{name}.bcr{rate}.onnx")
    if os.path.exists(out):
        return out
    dnn = work("speed", f"{name}.dnn")
    dnnc("import", src, "-o", dnn)
    layers = "^(" + "|".join(re.escape(n) for n in prunable(src)) + ")$"
    pruned = work("speed", f"{name}.bcr{rate}.dnn")
    # No canonicalize: folding batch norm would change the weights that go back.
    dnnc("opt", dnn, "-p", f"bcr-prune{{rate={rate} block=8x32 layers='{layers}'}}", "-o", pruned)
    weights = read_weights(pruned)
    m = onnx.load(src)
    for init in m.graph.initializer:
        if init.name in weights:
            w = weights[init.name]
            assert tuple(w.shape) == tuple(init.dims), init.name
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
    onnx.save(m, out)
    return out


def io_names(model):
    import onnx
    m = onnx.load(model, load_external_data=False)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return m.graph.input[0].name, m.graph.output[0].name, shape


def mnn_convert(model, sparse):
    """The ONNX file as an MNN model, through the converter module itself (the
    `mnnconvert` entry point would pip-install and send usage logs)."""
    out = os.path.splitext(model)[0] + (".sparse.mnn" if sparse else ".mnn")
    if not os.path.exists(out):
        args = ["mnnconvert", "-f", "ONNX", "--modelFile", model, "--MNNModel", out, "--bizCode", "dnnc"]
        if sparse:
            args.append("--detectSparseSpeedUp")
        subprocess.run([python("mnn"), "-c", f"import _tools; _tools.mnnconvert({args!r})"],
                       check=True, capture_output=True)
    return out


class Worker:
    """A peer engine in its own process (tools/results/peer_worker.py)."""

    def __init__(self, engine, model, threads, x_path, names):
        script = os.path.join(os.path.dirname(__file__), "peer_worker.py")
        self.p = subprocess.Popen([python(engine), script, engine, model, str(threads), x_path, *names],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=ENV)
        self.what = f"{engine} on {model}"
        self.reply(lambda line: line == "ready")

    def reply(self, wanted):
        """The engine's next line that is `wanted` (engines print banners of their own)."""
        for line in self.p.stdout:
            if wanted(line.strip()):
                return line
        raise RuntimeError(f"{self.what} stopped (exit status {self.p.wait()})")

    def time(self, n):
        self.p.stdin.write(f"{n}\n")
        self.p.stdin.flush()
        return json.loads(self.reply(lambda line: line.startswith("[")))

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def relative_l2(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def explore(dnn, quick):
    """The imported file after `explore` (its layouts, kernel forms and exact rewrites chosen
    by the cost table calibrated on this machine; in quick mode, whose dnnc is a debug
    build that cannot time kernels, by the built-in analytical table)."""
    explored = os.path.splitext(dnn)[0] + ".explored.dnn"
    dnnc("opt", dnn, "-p", "explore{costs=builtin}" if quick else "explore", "-o", explored)
    return explored


def measure(model, threads, rounds, runs, quick, log):
    """{engine: median ms} and {engine: output error vs ONNX Runtime} for one pruned file."""
    inp, out, shape = io_names(model)
    x_path = os.path.splitext(model)[0] + ".input.npy"
    np.save(x_path, np.random.default_rng(5).standard_normal(shape).astype(np.float32))
    dnn = os.path.splitext(model)[0] + ".imported.dnn"
    dnnc("import", model, "-o", dnn)
    explored = explore(dnn, quick)
    engines = {"ONNX Runtime": ("ort", model), "MNN": ("mnn", mnn_convert(model, False)),
               "MNN sparse": ("mnn", mnn_convert(model, True)), "DeepSparse": ("deepsparse", model)}
    workers, errors = {}, {}
    for label, (engine, path) in engines.items():
        workers[label] = Worker(engine, path, threads, x_path, (inp, out))
        got = np.load(os.path.splitext(x_path)[0] + f".{engine}.out.npy")
        if label == "ONNX Runtime":
            want = got
        errors[label] = relative_l2(got, want)
    out_dir = work("speed", "out")
    for label, path in (("dnnc", dnn), ("dnnc explored", explored)):
        r = subprocess.run([DNNC, "run", path, "--input", f"{inp}={x_path}", "--output-dir", out_dir,
                            "--threads", str(threads)], capture_output=True, text=True, check=True)
        wrote = re.search(r"wrote (\S+)", r.stdout + r.stderr).group(1)
        errors[label] = relative_l2(np.load(wrote), want)
    times = {label: [] for label in workers}
    layouts = {"auto": "dnnc BCR (auto)", "dense": "dnnc dense", "csr": "dnnc CSR"}
    # The explored program beside the layout `auto` measures, which it competes with.
    times.update({label: [] for label in (layouts["auto"], "dnnc explored", layouts["dense"], layouts["csr"])})
    for _ in range(rounds):
        for label, w in workers.items():
            w.time(2)  # warm the caches after the other engines ran
            times[label] += w.time(runs)
        doc = json.loads(dnnc("bench", dnn, "--layouts", ",".join(layouts), "--threads", threads,
                              "--runs", runs, "--warmup", 2, "--json"))
        for entry in doc["layouts"]:
            # bench reports a median per layout and round; each round weighs the same.
            times[layouts[entry["layout"]]] += [entry["median_ms"]] * runs
        doc = json.loads(dnnc("bench", explored, "--threads", threads, "--runs", runs, "--warmup", 2, "--json"))
        times["dnnc explored"] += doc["latencies_ms"]
    for w in workers.values():
        w.close()
    return {k: float(np.median(v)) for k, v in times.items()}, errors


def run(quick, log):
    rounds, runs = (2, 3) if quick else (3, 5)
    thread_counts = [1] if quick else [1, 2]
    rows, results = [], []
    for name, rate in models(quick):
        model = pruned_onnx(name, rate)
        for threads in thread_counts:
            ms, errors = measure(model, threads, rounds, runs if name != "gru_gates" else runs * 20, quick, log)
            results.append({"model": name, "rate": rate, "threads": threads, "ms": ms, "errors": errors})
            best = ms["dnnc BCR (auto)"]
            rows.append([name, f"{rate}×", threads, *(f"{ms[k]:.3f}" for k in ms),
                         f"{ms['ONNX Runtime'] / best:.2f}×", f"{min(v for k, v in ms.items() if not k.startswith('dnnc')) / best:.2f}×",
                         f"{max(errors.values()):.1e}"])
            log(f"speed: {name} {rate}× {threads} thread(s) done")
    header = ["model", "rate", "threads", *results[0]["ms"].keys(), "ORT ÷ dnnc BCR", "best peer ÷ dnnc BCR",
              "worst output error vs ORT"]
    return {"table": table(header, rows), "results": results}
