"""All three papers on one model, which none of them does: the trained MNIST LeNet-5 with its
hidden fully-connected layers BCR-pruned (GRIM) and its convolutions decomposed and
coefficient-pruned (ESCALATE), retrained with the masks fixed and the bases frozen, then
quantised; its accuracy, its JIT latency, its accelerator simulation and its training
partition (ACCPAR), each beside the dense model's."""
import json
import os

import numpy as np

import data
import nn
from common import (ROOT, dnnc, dnnc_json, eval_accuracy, load_weights, read_weights, save_split,
                    table, with_weights, work)

#: LeNet-5 is small: one device of each kind.
DEVICES, BATCH = "tpu-v2:1,tpu-v3:1", 512
FC_RATE = 8


def bench_ms(model):
    return dnnc_json("bench", model, "--runs", 200, "--warmup", 20, "--json")["median_ms"]


def run(dense, escalate_best, quick, log):
    splits = data.mnist()
    test = save_split("mnist-test", splits[2])
    e, r, cb = ((escalate_best["error"], escalate_best["rate"], escalate_best["coeff_bits"]) if escalate_best
                else (0.3, 4, 4))
    masks = work("all3", "fc.masks.safetensors")
    f32 = work("all3", "lenet5-f32.dnn")
    pipeline = (f"canonicalize,bcr-prune{{rate={FC_RATE} layers='^fc[12]\\.weight$' masks={masks}}},"
                f"decompose{{error={e} layers='^conv'}},coeff-prune{{rate={r}}}")
    dnnc("opt", dense, "-p", pipeline, "-o", f32)
    # Retraining: BCR masks and coefficient masks fixed, bases frozen.
    p = {k: v.astype(np.float32) for k, v in read_weights(f32).items()}
    fixed = {k: v.astype(np.float32) for k, v in load_weights(masks).items()}
    fixed.update({f"{c}.weight.coeffs": (p[f"{c}.weight.coeffs"] != 0).astype(np.float32)
                  for c in ("conv1", "conv2")})
    net = nn.Net(nn.lenet5_layers(decomposed=("conv1", "conv2")), p)
    (xtr, ytr), val, _ = splits
    _, best, _ = nn.train(net, xtr, ytr, 2 if quick else 12, 1e-3, seed=4, masks=fixed,
                          frozen={"conv1.weight.bases", "conv2.weight.bases"}, val=val,
                          augment=nn.shifted(28, 2))
    retrained = with_weights(f32, net.p, work("all3", "lenet5-rt.dnn"))
    dnnc("opt", retrained, "-p", f"bcr-check{{masks={masks}}}")
    final = work("all3", "lenet5-all3.dnn")
    dnnc("opt", retrained, "-p", f"quantize{{basis-bits=8 coeff-bits={cb} calibration=none}}", "-o", final)
    log("all three: model built")

    acc = {"dense": eval_accuracy(dense, test), "all three": eval_accuracy(final, test)}
    ms = {"dense": bench_ms(dense), "all three": bench_ms(final)}
    esc = dnnc_json("escalate", final, "--json")
    # The dense accelerator's figures for the dense model (its baseline run).
    esc_dense = dnnc_json("escalate", dense, "--json")
    part = {k: dnnc_json("partition", m, "--devices", DEVICES, "--batch", BATCH, "--json")
            for k, m in (("dense", dense), ("all three", final))}
    dense_bits = sum(v.size * 32 for v in read_weights(dense).values())
    stored = {"all three": stored_bits(final, esc)}
    speed = {k: {s["strategy"]: s for s in d["strategies"]} for k, d in part.items()}
    rows = [
        ["test accuracy (1,000 held-out MNIST images)", f"{acc['dense']:.4f}", f"{acc['all three']:.4f}"],
        ["weights stored", f"{dense_bits / 8192:.1f} KB (f32)",
         f"{stored['all three'] / 8192:.1f} KB ({dense_bits / stored['all three']:.1f}× smaller)"],
        ["JIT latency, batch 1 (dnnc bench, median)", f"{ms['dense'] * 1e3:.1f} µs", f"{ms['all three'] * 1e3:.1f} µs"],
        ["ESCALATE accelerator: conv layers' latency", f"{esc_dense['dense']['latency_ms'] * 1e3:.2f} µs (dense accelerator)",
         f"{esc['escalate']['latency_ms'] * 1e3:.2f} µs"],
        ["ESCALATE accelerator: conv layers' energy", f"{esc_dense['dense']['energy_uj']:.1f} µJ (dense accelerator)",
         f"{esc['escalate']['energy_uj']:.1f} µJ"],
        [f"training step on {DEVICES}, batch {BATCH}: ACCPAR",
         *(f"{speed[k]['accpar']['step_time_s'] * 1e6:.1f} µs ({speed[k]['accpar']['speedup_over_dp']:.2f}× over "
           f"data parallelism)" for k in ("dense", "all three"))],
    ]
    md = table(["", "dense LeNet-5", "BCR + decomposed + quantised + partitioned"], rows)
    shown = pipeline.replace(os.path.join(ROOT, ""), "")  # paths relative to the repository
    note = (f"Pipeline: `{shown}`, retrained {best} epochs (chosen on validation) with the BCR "
            f"masks and the zero coefficients held and the bases frozen, then `quantize{{basis-bits=8 "
            f"coeff-bits={cb}}}`; `bcr-check` confirms the masks held.")
    return {"table": md, "note": note, "accuracy": acc}


def bcr_bits(w, block=(8, 32)):
    """Bits of `w`'s compact BCR form, as dnnc's `BcrMatrix::bytes` counts it: per non-empty
    block its kept values (f32), u16 row and column indices and two u32 offsets."""
    m = w.reshape(w.shape[0], -1)
    total = 0
    for r0 in range(0, m.shape[0], block[0]):
        for c0 in range(0, m.shape[1], block[1]):
            b = m[r0:r0 + block[0], c0:c0 + block[1]] != 0
            rows, cols = int(b.any(1).sum()), int(b.any(0).sum())
            if rows and cols:
                total += 4 * rows * cols + 2 * (rows + cols) + 8
    return total * 8


def stored_bits(model, esc):
    """Bits of every weight of `model` as stored: the decomposed layers as ESCALATE's streams
    hold them (bases, coefficients, indices: its report), the BCR-pruned layers in compact BCR
    form, the rest as f32."""
    weights = read_weights(model)
    total = sum(l["weight_bits"] for l in esc["layers"] if l["kind"] == "Decomposed")
    for name, w in weights.items():
        if ".weight." in name:  # bases and coefficients, counted above
            continue
        total += bcr_bits(w) if name in ("fc1.weight", "fc2.weight") else w.size * 32
    return total
