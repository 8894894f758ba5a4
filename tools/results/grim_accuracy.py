"""GRIM's accuracy side: test accuracy of trained models pruned into BCR at 2×–16×, one-shot
(uniform rates, and `bcr-tune`'s per-layer rates and block shapes) and with mask-fixed
fine-tuning (gradual: 2×, 4×, … each stage fine-tuned with its masks fixed), beside an
unstructured magnitude baseline at the same rates (1×1 blocks ranked over the whole layer,
what a CSR kernel runs), one-shot and fine-tuned the same way."""
import os

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
    """The trained dense model as a .dnn file (cached by name under target/results)."""
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


def finetune(spec, pruned_dnn, masks_path, out, splits, epochs):
    """Mask-fixed fine-tuning of a pruned model; the epoch is chosen on the validation
    part. Returns the new .dnn and the chosen epoch."""
    zoo, _, build, layers, settings = spec
    net = build(np.random.default_rng(1))
    net.p = {k: v.astype(np.float32) for k, v in read_weights(pruned_dnn).items()}
    masks = {k: v.astype(np.float32) for k, v in load_weights(masks_path).items()}
    (xtr, ytr), (xva, yva), _ = splits
    _, best, _ = nn.train(net, xtr, ytr, epochs, settings["lr"] / 2, seed=2, masks=masks,
                          val=(xva, yva), augment=settings["augment"])
    return with_weights(pruned_dnn, net.p, out), best


def gradual(name, spec, dense, splits, rates, block, balanced, epochs, test):
    """Gradual pruning with mask-fixed fine-tuning up to every rate: {rate: (accuracy,
    chosen epoch)}."""
    out, current, stage = {}, dense, 2
    tag = f"{block}{'' if balanced else 'u'}"
    layers = spec[4]["pruned"]
    while stage <= max(rates):
        pruned = work("grim", f"{name}-{tag}-g{stage}.dnn")
        masks = work("grim", f"{name}-{tag}-g{stage}.masks.safetensors")
        dnnc("opt", current, "-p",
             f"bcr-prune{{rate={stage} block={block} balanced={str(balanced).lower()} "
             f"layers='{layers}' masks={masks}}}",
             "-o", pruned)
        tuned, best = finetune(spec, pruned, masks, work("grim", f"{name}-{tag}-f{stage}.dnn"),
                               splits, epochs)
        # dnnc checks that fine-tuning kept every pruned weight at zero.
        dnnc("opt", tuned, "-p", f"bcr-check{{masks={masks}}}")
        if stage in rates:
            out[stage] = (eval_accuracy(tuned, test), best)
        current, stage = tuned, stage * 2
    return out


def run(quick, log):
    rates = [2, 4, 8] if quick else [2, 4, 8, 16]
    ft_epochs = 2 if quick else 10
    rows, checks = [], {}
    for name, spec in models(quick).items():
        splits = data.mnist()
        test = save_split(f"{spec[1]}-test", splits[2])
        cal = work("data", f"{spec[1]}-cal.npy")
        np.save(cal, splits[1][0][:256])
        dense = train_dense(name, spec, splits, log)
        dense_acc = eval_accuracy(dense, test)
        fine = gradual(name, spec, dense, splits, rates, "8x32", True, ft_epochs, test)
        unstructured = gradual(name, spec, dense, splits, rates, "1x1", False, ft_epochs, test)
        checks[name] = {"dense": dense_acc}
        layers = spec[4]["pruned"]
        for r in rates:
            uni = work("grim", f"{name}-u{r}.dnn")
            dnnc("opt", dense, "-p", f"bcr-prune{{rate={r} layers='{layers}'}}", "-o", uni)
            tuned = work("grim", f"{name}-t{r}.dnn")
            dnnc("opt", dense, "-p",
                 f"bcr-tune{{target={r} layers='{layers}' calibration={cal} samples=256 "
                 f"cache={work('grim', 'bcr-tune.txt')}}},bcr-prune",
                 "-o", tuned)
            csr = work("grim", f"{name}-c{r}.dnn")
            dnnc("opt", dense, "-p", f"bcr-prune{{rate={r} block=1x1 balanced=false layers='{layers}'}}",
                 "-o", csr)
            acc = {k: eval_accuracy(p, test) for k, p in (("uniform", uni), ("tune", tuned), ("csr", csr))}
            checks[name][r] = {**acc, "finetuned": fine[r][0]}
            rows.append([name, f"{r}×", f"{dense_acc:.4f}", f"{acc['uniform']:.4f}", f"{acc['tune']:.4f}",
                         f"{fine[r][0]:.4f} (epoch {fine[r][1]})", f"{acc['csr']:.4f}",
                         f"{unstructured[r][0]:.4f} (epoch {unstructured[r][1]})"])
        log(f"{name}: GRIM accuracy rows done")
    md = table(["model", "rate", "dense", "BCR uniform", "BCR bcr-tune", "BCR fine-tuned",
                "unstructured one-shot", "unstructured fine-tuned"], rows)
    return md, checks
