"""GRIM's accuracy side: test accuracy of trained models pruned into BCR at 2×–16×, with
uniform rates and with `bcr-tune`'s per-layer rates and block shapes, each one-shot and with
mask-fixed fine-tuning (gradual: 2×, 4×, … each stage fine-tuned with its masks fixed),
beside an unstructured magnitude baseline at the same rates (1×1 blocks ranked over the
whole layer, what a CSR kernel runs), one-shot and fine-tuned the same way."""
import os
import re

import numpy as np

import data
import nn
from common import (dnnc, eval_accuracy, load_weights, read_weights, save_split, sidecar,
                    table, trained_model, with_weights, work)

PAPER = ("GRIM reports no MNIST accuracy; its claim is that BCR keeps accuracy close to "
         "unstructured pruning at the same rate (GRU on TIMIT: phone error 18.8% at 10×, "
         "19.5% at 20×)")


def models(quick):
    """name -> (zoo model, dataset, builder, layers, training settings). The first and the
    last layer stay dense (`pruned`), as in GRIM's and the speed experiments; rates are
    those of the pruned layers."""
    out = {
        "mnist-lenet5": ("lenet5", "mnist", nn.lenet5, nn.lenet5_layers(),
                         dict(epochs=8 if quick else 40, lr=2e-3,
                              augment=None if quick else nn.shifted(28, 2),
                              pruned=r"^(conv2|fc1|fc2)\.weight$")),
    }
    if not quick:
        out["mnist-mlp"] = ("mlp", "mnist", lambda r: nn.mlp(r, [784, 512, 512, 10]), None,
                            dict(epochs=30, lr=1e-3, augment=nn.shifted(28, 2),
                                 pruned=r"^(fc1|fc2)\.weight$"))
    return out


def train_dense(name, spec, splits, log):
    """The trained dense model as a .dnn file (kept under target/results for the rest of
    the run; run.py clears it first)."""
    zoo, _, build, _, settings = spec
    path = work("models", f"{name}.dnn")
    if os.path.exists(path) and os.path.exists(sidecar(path)):
        return path
    (xtr, ytr), (xva, yva), _ = splits
    net = build(np.random.default_rng(1))
    _, best, vacc = nn.train(net, xtr, ytr, settings["epochs"], settings["lr"], seed=1,
                             val=(xva, yva), augment=settings["augment"])
    log(f"{name}: trained {settings['epochs']} epochs, kept epoch {best} (validation {vacc:.4f})")
    return trained_model(zoo, net.p, path)


def finetune(spec, pruned_dnn, masks_path, out, splits, epochs, seed):
    """Mask-fixed fine-tuning of a pruned model (`seed`: the batches' order and shifts); the
    epoch is chosen on the validation part. Returns the new .dnn and the chosen epoch."""
    zoo, _, build, layers, settings = spec
    net = build(np.random.default_rng(1))
    net.p = {k: v.astype(np.float32) for k, v in read_weights(pruned_dnn).items()}
    masks = {k: v.astype(np.float32) for k, v in load_weights(masks_path).items()}
    (xtr, ytr), (xva, yva), _ = splits
    _, best, _ = nn.train(net, xtr, ytr, epochs, settings["lr"] / 2, seed=seed, masks=masks,
                          val=(xva, yva), augment=settings["augment"])
    return with_weights(pruned_dnn, net.p, out), best


def gradual(name, spec, dense, splits, rates, tag, pipeline, epochs, test, seed=2):
    """Gradual pruning with mask-fixed fine-tuning up to every rate: `pipeline(stage, masks)`
    prunes to `stage` and writes the masks; each stage is fine-tuned from the last.
    Returns {rate: (accuracy, chosen epoch)}."""
    out, current, stage = {}, dense, 2
    while stage <= max(rates):
        pruned = work("grim", f"{name}-{tag}-s{seed}-g{stage}.dnn")
        masks = work("grim", f"{name}-{tag}-s{seed}-g{stage}.masks.safetensors")
        dnnc("opt", current, "-p", pipeline(stage, masks), "-o", pruned)
        tuned, best = finetune(spec, pruned, masks, work("grim", f"{name}-{tag}-s{seed}-f{stage}.dnn"),
                               splits, epochs, seed)
        # dnnc checks that fine-tuning kept every pruned weight at zero.
        dnnc("opt", tuned, "-p", f"bcr-check{{masks={masks}}}")
        if stage in rates:
            out[stage] = (eval_accuracy(tuned, test), best)
        current, stage = tuned, stage * 2
    return out


def gradual_seeds(seeds, *args):
    """`gradual` once per fine-tuning seed: {rate: (mean accuracy, [chosen epochs])}. A
    thousand test images move in steps of 0.1 point, as far apart as two shuffles of
    the fine-tuning batches can land, so methods are compared on the mean."""
    runs = [gradual(*args, seed=s) for s in seeds]
    return {r: (float(np.mean([run[r][0] for run in runs])), [run[r][1] for run in runs]) for r in runs[0]}


def run(quick, log):
    rates = [2, 4, 8] if quick else [2, 4, 8, 16]
    ft_epochs = 2 if quick else 10
    seeds = [2] if quick else [2, 3, 4]  # fine-tuning seeds of the two BCR columns
    rows, checks = [], {}
    for name, spec in models(quick).items():
        splits = data.mnist()
        test = save_split(f"{spec[1]}-test", splits[2])
        cal = work("data", f"{spec[1]}-cal.npy")
        np.save(cal, splits[1][0])  # the whole validation part
        dense = train_dense(name, spec, splits, log)
        dense_acc = eval_accuracy(dense, test)
        layers = spec[4]["pruned"]
        # Quick mode calibrates bcr-tune on the first 200 validation images (CI time).
        samples = 200 if quick else len(splits[1][0])
        tune_opts = f"calibration={cal} samples={samples} cache={work('grim', 'bcr-tune.txt')}"
        fine = gradual_seeds(seeds, name, spec, dense, splits, rates, "8x32",
                       lambda r, m: f"bcr-prune{{rate={r} layers='{layers}' masks={m}}}", ft_epochs, test)
        # bcr-tune against uniform at the same block shape (its rate allocation alone); its
        # block choice, by kernel speed, is reported one-shot beside.
        fine_tuned = gradual_seeds(seeds, name, spec, dense, splits, rates, "tune",
                             lambda r, m: f"bcr-tune{{target={r} blocks=8x32 layers='{layers}' {tune_opts}}},"
                                          f"bcr-prune{{masks={m}}}", ft_epochs, test)
        unstructured = gradual(name, spec, dense, splits, rates, "1x1",
                               lambda r, m: f"bcr-prune{{rate={r} block=1x1 balanced=false layers='{layers}' "
                                            f"masks={m}}}", ft_epochs, test)
        checks[name] = {"dense": dense_acc}
        for r in rates:
            uni = work("grim", f"{name}-u{r}.dnn")
            dnnc("opt", dense, "-p", f"bcr-prune{{rate={r} layers='{layers}'}}", "-o", uni)
            tuned = work("grim", f"{name}-t{r}.dnn")
            dnnc("opt", dense, "-p", f"bcr-tune{{target={r} blocks=8x32 layers='{layers}' {tune_opts}}},bcr-prune",
                 "-o", tuned)
            free = work("grim", f"{name}-tb{r}.dnn")
            dnnc("opt", dense, "-p", f"bcr-tune{{target={r} layers='{layers}' {tune_opts}}},bcr-prune", "-o", free)
            chosen = sorted(set(re.findall(r"bcr\.block = \[(\d+), (\d+)\]", open(free).read())))
            csr = work("grim", f"{name}-c{r}.dnn")
            dnnc("opt", dense, "-p", f"bcr-prune{{rate={r} block=1x1 balanced=false layers='{layers}'}}",
                 "-o", csr)
            acc = {k: eval_accuracy(p, test) for k, p in (("uniform", uni), ("tune", tuned), ("tune_blocks", free),
                                                          ("csr", csr))}
            checks[name][r] = {**acc, "finetuned": fine[r][0], "tune_finetuned": fine_tuned[r][0]}
            log(f"{name} {r}×: uniform {acc['uniform']:.4f} / fine-tuned {fine[r][0]:.4f}; "
                f"bcr-tune {acc['tune']:.4f} / fine-tuned {fine_tuned[r][0]:.4f}")
            def ft(x):
                epochs = x[r][1] if isinstance(x[r][1], list) else [x[r][1]]
                return f"{x[r][0]:.4f} (epoch{'s' if len(epochs) > 1 else ''} {', '.join(map(str, epochs))})"
            rows.append([name, f"{r}×", f"{dense_acc:.4f}", f"{acc['uniform']:.4f}", f"{acc['tune']:.4f}",
                         f"{acc['tune_blocks']:.4f} ({', '.join(f'{a}×{b}' for a, b in chosen)})",
                         ft(fine), ft(fine_tuned), f"{acc['csr']:.4f}", ft(unstructured)])
        log(f"{name}: GRIM accuracy rows done")
    md = table(["model", "rate", "dense", "BCR uniform, one-shot", "BCR bcr-tune, one-shot",
                "bcr-tune with blocks by speed, one-shot", "BCR uniform, fine-tuned", "BCR bcr-tune, fine-tuned",
                "unstructured, one-shot", "unstructured, fine-tuned"], rows)
    return md, checks
