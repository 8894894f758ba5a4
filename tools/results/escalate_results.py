"""ESCALATE's side: (a) compression against accuracy on the trained MNIST LeNet-5 —
`decompose`, `coeff-prune`, retraining of the coefficients with the bases fixed (the
pruned coefficients held at zero), then `quantize` (hybrid: 8-bit bases, 4-bit
coefficients) — with the configuration chosen on the validation part; (b) compression of the
zoo CNNs (CIFAR-10 shape) at a stated bound on the output error; (c) the simulated
latency and energy of those models on ESCALATE, on the dense accelerator and on the
sparse-weight accelerator (same MACs and buffers), beside the paper's figures."""
import json
import os
import subprocess
import sys

import numpy as np

import data
import nn
from common import (ROOT, dnnc, dnnc_json, eval_accuracy, read_weights, save_split, table,
                    with_weights, work)

PAPER_COMPRESSION = {"CIFAR-10": 325.0, "ImageNet": 11.0}
PAPER_VS = {"dense": {"energy": 8.3, "latency": 17.8}, "sparse": {"energy": 3.77, "latency": 2.2}}
#: The bound on the output's relative L2 distance from the undecomposed model's (seeded
#: input, reference interpreter) under which the zoo CNNs' compression is reported.
OUTPUT_ERROR_BOUND = 0.1


def quantize(coeff_bits):
    """ESCALATE's hybrid quantisation: 8-bit bases, `coeff_bits`-bit coefficients."""
    return f"quantize{{basis-bits=8 coeff-bits={coeff_bits} calibration=none}}"


DECOMPOSED = ("conv1", "conv2")


def escalate_json(model, pipeline=None, extra=()):
    args = ["escalate", model, "--json", *extra]
    if pipeline:
        args += ["--pipeline", pipeline]
    return dnnc_json(*args)


def stored_bits(model):
    """Bits of the decomposed layers as ESCALATE stores them (bases, coefficients, indices)."""
    doc = escalate_json(model)
    return sum(l["weight_bits"] for l in doc["layers"] if l["kind"] == "Decomposed"), doc


def retrain(decomposed, out, splits, epochs, lr):
    """The decomposed model retrained: bases fixed, pruned coefficients held at zero, every
    other weight free; the epoch is chosen on the validation part."""
    p = {k: v.astype(np.float32) for k, v in read_weights(decomposed).items()}
    net = nn.Net(nn.lenet5_layers(decomposed=DECOMPOSED), p)
    masks = {f"{c}.weight.coeffs": (p[f"{c}.weight.coeffs"] != 0).astype(np.float32)
             for c in DECOMPOSED}
    frozen = {f"{c}.weight.bases" for c in DECOMPOSED}
    (xtr, ytr), val, _ = splits
    _, best, _ = nn.train(net, xtr, ytr, epochs, lr, seed=3, masks=masks, frozen=frozen,
                          val=val, augment=nn.shifted(28, 2))
    return with_weights(decomposed, net.p, out), best


def mnist(dense, quick, log):
    """The LeNet-5 rows, the chosen configuration and its figures."""
    splits = data.mnist()
    test = save_split("mnist-test", splits[2])
    val = save_split("mnist-val", splits[1])
    dense_val, dense_test = eval_accuracy(dense, val), eval_accuracy(dense, test)
    dense_bits = sum(read_weights(dense)[f"{c}.weight"].size * 32 for c in DECOMPOSED)
    errors = [0.3] if quick else [0.1, 0.2, 0.3, 0.5]
    rates = [1, 4] if quick else [1, 2, 4, 8, 16]
    coeff_bits = [4, 8]  # quantised after retraining: both cost one evaluation each
    epochs = 2 if quick else 10
    rows, results = [], []
    for e in errors:
        for r in rates:
            tag = f"e{e}-r{r}"
            f32 = work("escalate", f"lenet5-{tag}.dnn")
            dnnc("opt", dense, "-p", f"canonicalize,decompose{{error={e} layers='^conv'}},"
                 f"coeff-prune{{rate={r}}}", "-o", f32)
            retrained, best = retrain(f32, work("escalate", f"lenet5-{tag}-rt.dnn"), splits, epochs, 1e-3)
            bases = {c: read_weights(f32)[f"{c}.weight.bases"].shape[0] for c in DECOMPOSED}
            for cb in coeff_bits:
                one_shot = work("escalate", f"lenet5-{tag}-q{cb}.dnn")
                dnnc("opt", f32, "-p", quantize(cb), "-o", one_shot)
                final = work("escalate", f"lenet5-{tag}-rtq{cb}.dnn")
                dnnc("opt", retrained, "-p", quantize(cb), "-o", final)
                bits, _ = stored_bits(final)
                acc = {"one-shot": eval_accuracy(one_shot, test), "val": eval_accuracy(final, val),
                       "test": eval_accuracy(final, test)}
                results.append({"error": e, "rate": r, "coeff_bits": cb, "compression": dense_bits / bits,
                                **acc, "model": final, "bases": bases})
                rows.append([f"{e}", f"{bases['conv1']} / {bases['conv2']}", f"{r}×", f"{cb}",
                             f"{dense_bits / bits:.1f}×", f"{acc['one-shot']:.4f}",
                             f"{acc['val']:.4f} (epoch {best})", f"{acc['test']:.4f}"])
        log(f"escalate: LeNet-5 decompose error {e} done")
    # Chosen on validation: the most compression within one point of the dense model.
    ok = [r for r in results if r["val"] >= dense_val - 0.01]
    best = max(ok, key=lambda r: r["compression"]) if ok else None
    md = table(["decompose error", "bases (conv1 / conv2)", "coeff-prune", "coefficient bits", "conv compression",
                "test, one-shot", "validation, retrained", "test, retrained"], rows)
    return md, {"dense_val": dense_val, "dense_test": dense_test, "best": best,
                "dense_bits": dense_bits, "results": results}


def jax_python():
    """The interpreter of the JAX virtualenv (tools/xla's package and safetensors);
    `DNNC_JAX_PYTHON` names one that has them already (CI's tools/xla venv)."""
    if os.environ.get("DNNC_JAX_PYTHON"):
        return os.path.abspath(os.environ["DNNC_JAX_PYTHON"])
    venv = os.path.join(ROOT, "target", "results", "peers", "jax")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               os.path.join(ROOT, "tools", "xla"), "safetensors"])
    return py


def mnist32(name, split):
    """A split as the CIFAR-shaped models read it: [N, 3, 32, 32] (see train_zoo.images)."""
    x, y = split
    x = x.reshape(-1, 1, 28, 28)
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    x = np.repeat((x - 0.13) / 0.31, 3, axis=1).astype(np.float32)
    return save_split(name, (x, y))


def trained(name, epochs, log, limit=None, eval_limit=None):
    """The zoo CNN at CIFAR-10 shape trained on MNIST-32 (train_zoo.py, JAX), as a .dnn with
    its weights; the validation and test splits in its input shape (their first
    `eval_limit` images, if given)."""
    splits = data.mnist()
    first = lambda split: (split[0][:eval_limit], split[1][:eval_limit]) if eval_limit else split
    init = work("escalate", f"{name}-init.dnn")
    dnnc("zoo", name, "--image-size", 32, "--classes", 10, "-o", init)
    mat = work("escalate", f"{name}-mat.dnn")
    dnnc("opt", init, "--materialize-weights", "-o", mat)
    va, te = mnist32("mnist32-val", first(splits[1])), mnist32("mnist32-test", first(splits[2]))
    raw = [p for k, s in (("train", splits[0]), ("val", splits[1])) for p in save_split(f"mnist-{k}", s)]
    weights = work("escalate", f"{name}-trained-raw.safetensors")
    r = subprocess.run([jax_python(), os.path.join(os.path.dirname(__file__), "train_zoo.py"), mat, *raw,
                        weights, str(epochs), *([str(limit)] if limit else [])], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"train_zoo.py failed:\n{r.stderr}")
    last = json.loads(r.stdout.strip().splitlines()[-1])
    log(f"escalate: {name} trained on MNIST-32, epoch {last['best_epoch']} (validation {last['validation']:.4f})")
    from common import load_weights
    path = with_weights(mat, load_weights(weights), work("escalate", f"{name}-trained.dnn"))
    return path, va, te, last


def search(path, configs, within, measure):
    """The most compression among `configs` (pipelines) that `within(figures)` accepts:
    (ratio, config, figures, escalate report). Configurations are ordered so that, for a
    bits/error pair, more pruning follows less; the first rejected one ends that run."""
    best = None
    for group in configs:
        for label, pipeline in group:
            doc, figures = measure(path, pipeline)
            if not within(figures):
                break  # more pruning only loses more
            ratio = doc["decomposed_weight_bits_before"] / doc["decomposed_weight_bits_after"]
            if best is None or ratio > best[0]:
                best = (ratio, label, figures, doc)
    return best


def grid(quick):
    # Quick (CI): one error bound, both rates and bit widths (every step of the pipeline).
    errors = [0.1] if quick else [0.1, 0.3, 0.5, 0.7]
    rates = [1, 2] if quick else [1, 2, 4, 8, 16]
    return [[(f"decompose{{error={e}}}, coeff-prune{{rate={r}}}, {bits}-bit coefficients",
              f"canonicalize,decompose{{error={e}}},coeff-prune{{rate={r}}},"
              f"quantize{{basis-bits=8 coeff-bits={bits} calibration=none}}") for r in rates]
            for bits in (4, 8) for e in errors]


def zoo(quick, log):
    """Per zoo CNN: the most compression within the bound — for random weights, an output
    error bound; for VGG-11 trained on MNIST-32, one point of validation accuracy — and that
    configuration's simulation against the dense and sparse accelerators."""
    out = {}
    random_models = ["resnet18"] if quick else ["vgg16", "resnet18", "resnet50"]

    def by_output_error(path, pipeline):
        doc = escalate_json(path, pipeline, ["--output-error"])
        return doc, {"error": doc["error_vs_undecomposed"]}
    for name in random_models:
        path = work("escalate", f"{name}-cifar.dnn")
        dnnc("zoo", name, "--image-size", 32, "--classes", 10, "-o", path)
        out[f"{name} (random weights)"] = search(path, grid(quick),
                                                 lambda f: f["error"] <= OUTPUT_ERROR_BOUND, by_output_error)
        log(f"escalate: {name} done")

    path, val, test, last = trained("vgg11", 1 if quick else 3, log, limit=512 if quick else None,
                                    eval_limit=200 if quick else None)
    dense_val = eval_accuracy(path, val)
    decomposed = work("escalate", "vgg11-config.dnn")

    def by_accuracy(path, pipeline):
        dnnc("opt", path, "-p", pipeline, "-o", decomposed)
        doc = escalate_json(path, pipeline, ["--output-error"])
        return doc, {"val": eval_accuracy(decomposed, val), "error": doc["error_vs_undecomposed"]}
    best = search(path, grid(quick), lambda f: f["val"] >= dense_val - 0.01, by_accuracy)
    # The sparse accelerator's model at equal accuracy: the highest unstructured rate of the
    # conv layers (one-shot magnitude pruning) within the same point of validation accuracy.
    sparse_rate, pruned = 1, work("escalate", "vgg11-sparse.dnn")
    for r in ([2, 4] if quick else [2, 4, 8, 16, 32]):
        dnnc("opt", path, "-p", f"canonicalize,bcr-prune{{rate={r} block=1x1 balanced=false "
             f"layers='^features'}}", "-o", pruned)
        if eval_accuracy(pruned, val) < dense_val - 0.01:
            break
        sparse_rate = r
    if best is not None:
        pipeline = next(p for g in grid(quick) for label, p in g if label == best[1])
        dnnc("opt", path, "-p", pipeline, "-o", decomposed)
        best[2]["test"] = eval_accuracy(decomposed, test)
        best[2]["sparse_rate"] = sparse_rate
        doc = escalate_json(path, pipeline, ["--sparse-rate", sparse_rate])
        best = (best[0], best[1], best[2], doc)
    out["vgg11 (trained on MNIST-32)"] = best
    trained_figures = {"dense_val": dense_val, "dense_test": eval_accuracy(path, test),
                       "epoch": last["best_epoch"], "sparse_rate": sparse_rate}
    log("escalate: trained vgg11 done")
    return out, trained_figures


def run(dense_lenet, quick, log):
    mnist_md, m = mnist(dense_lenet, quick, log)
    z, t = zoo(quick, log)
    rows = []
    for name, best in z.items():
        if best is None:
            rows.append([name, "—", "—", "—", "—", "no configuration within the bound"])
            continue
        ratio, config, f, _ = best
        if "val" in f:
            bound = (f"validation {f['val']:.4f} ≥ dense {t['dense_val']:.4f} − 0.01; "
                     f"test {f['test']:.4f} (dense {t['dense_test']:.4f})")
        else:
            bound = f"output error ≤ {OUTPUT_ERROR_BOUND}"
        rows.append([name, config, bound, f"{f['error']:.3f}", f"{ratio:.1f}×",
                     f"{PAPER_COMPRESSION['CIFAR-10']:.0f}× (CIFAR-10, trained)"])
    zoo_md = table(["model (32×32)", "most compression within the bound", "bound",
                    "output error (seeded input)", "conv compression", "paper"], rows)
    sim_rows = []
    for name, best in z.items():
        if best is None:
            continue
        doc = best[3]
        esc, dense, sparse = doc["escalate"], doc["dense"], doc["sparse"]
        sparse_model = (f"{best[2]['sparse_rate']}× (equal accuracy)" if "sparse_rate" in best[2]
                        else "equal stored bits")
        sim_rows.append([
            name, f"{esc['latency_ms']:.3f}", f"{dense['latency_ms'] / esc['latency_ms']:.2f}×",
            f"{sparse['latency_ms'] / esc['latency_ms']:.2f}×", f"{esc['energy_uj']:.0f}",
            f"{dense['energy_uj'] / esc['energy_uj']:.2f}×", f"{sparse['energy_uj'] / esc['energy_uj']:.2f}×",
            " / ".join(f"{x:.0f}" for x in esc["energy_uj_mac_sram_dram"]),
            " / ".join(f"{x:.0f}" for x in sparse["energy_uj_mac_sram_dram"]), sparse_model,
            f"{esc['macs'] / dense['macs']:.2f}"])
    sim_rows.append(["**paper**", "", f"{PAPER_VS['dense']['latency']}×", f"{PAPER_VS['sparse']['latency']}×",
                     "", f"{PAPER_VS['dense']['energy']}×", f"{PAPER_VS['sparse']['energy']}×", "", "", "", ""])
    sim_md = table(["model", "ESCALATE ms", "dense ÷ ESCALATE latency", "sparse ÷ ESCALATE latency",
                    "ESCALATE µJ", "dense ÷ ESCALATE energy", "sparse ÷ ESCALATE energy",
                    "ESCALATE µJ MAC / SRAM / DRAM", "sparse µJ MAC / SRAM / DRAM", "sparse model pruned to",
                    "ESCALATE MACs ÷ dense MACs"], sim_rows)
    return {"mnist": mnist_md, "mnist_figures": m, "zoo": zoo_md, "sim": sim_md, "zoo_figures": z,
            "trained": t}
