#!/usr/bin/env python3
"""Digits models for GRIM's accuracy experiments: an MLP and a small CNN trained on
scikit-learn's bundled handwritten digits (8x8 images, no download), in plain numpy.

usage:
  tools/digits/train.py train                 # writes models/digits/{mlp,cnn}.safetensors,
                                              # X_test.npy, y_test.npy, X_cal.npy
  tools/digits/train.py finetune MODEL DNN MASKS OUT
                                              # mask-fixed fine-tuning of a pruned model:
                                              # weights from DNN's sidecar, masks from
                                              # `bcr-prune{masks=...}`, result to OUT
  tools/digits/train.py experiment            # the accuracy table: dense, uniform and
                                              # bcr-tune rates at 2x/4x/8x, one-shot and by
                                              # gradual pruning with mask-fixed fine-tuning

Data: a fixed stratified split into train (1,257 images), validation (180) and the held-out
test part (360, models/digits/X_test.npy). Every epoch count — dense training and each stage
of fine-tuning — is chosen on the validation part; the test part is only scored.

It sets up its own virtualenv (target/digits/venv: numpy, scikit-learn, safetensors).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "models", "digits")
VENV = os.path.join(ROOT, "target", "digits", "venv")
PACKAGES = ["numpy", "scikit-learn", "safetensors"]
SEED = 7
# Gradual pruning for the fine-tuned column: the block shape, and at most this many epochs
# per stage, of which the one with the best validation accuracy is kept (the test part is
# never looked at before the final score). DIGITS_EPOCHS overrides the bound.
FT_BLOCK = os.environ.get("DIGITS_BLOCK", "4x16")
FT_MAX_EPOCHS = int(os.environ.get("DIGITS_EPOCHS", "40"))
# Dense training: at most this many epochs, the best on validation kept.
MAX_EPOCHS = {"mlp": 60, "cnn": 40}


def ensure_venv():
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(python):
        print(f"setting up {VENV} ({', '.join(PACKAGES)})", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", *PACKAGES])
    os.execv(python, [python, *sys.argv])


# --- layers (forward caches what backward needs) ------------------------------------------

def im2col(x, k, pad):
    """x [N, C, H, W] -> columns [N, C*k*k, H*W] for a stride-1 'same' convolution."""
    import numpy as np
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, h, w), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.reshape(n, c * k * k, h * w)


def col2im(cols, shape, k, pad):
    import numpy as np
    n, c, h, w = shape
    cols = cols.reshape(n, c, k, k, h, w)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), cols.dtype)
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + h, j:j + w] += cols[:, :, i, j]
    return xp[:, :, pad:pad + h, pad:pad + w]


class Net:
    """Parameters by dnnc weight name, a forward pass with caches, and its gradient."""

    def __init__(self, kind, rng):
        import numpy as np
        self.kind = kind
        he = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)
        z = lambda n: np.zeros(n, np.float32)
        if kind == "mlp":
            self.p = {"fc1.weight": he(128, 64), "fc1.bias": z(128), "fc2.weight": he(64, 128),
                      "fc2.bias": z(64), "fc3.weight": he(10, 64), "fc3.bias": z(10)}
        else:
            self.p = {"conv1.weight": he(16, 1, 3, 3), "conv1.bias": z(16),
                      "conv2.weight": he(32, 16, 3, 3), "conv2.bias": z(32),
                      "fc1.weight": he(64, 512), "fc1.bias": z(64),
                      "fc2.weight": he(10, 64), "fc2.bias": z(10)}

    def forward(self, x):
        import numpy as np
        p, c = self.p, {}
        if self.kind == "mlp":
            h = x
            for i, name in enumerate(["fc1", "fc2", "fc3"]):
                c[name] = h
                h = h @ p[f"{name}.weight"].T + p[f"{name}.bias"]
                if i < 2:
                    c[name + ".pre"] = h
                    h = np.maximum(h, 0)
            return h, c
        n = x.shape[0]
        h = x.reshape(n, 1, 8, 8)
        for name in ["conv1", "conv2"]:
            w = p[f"{name}.weight"]
            cols = im2col(h, 3, 1)
            c[name] = (h.shape, cols)
            h = (w.reshape(w.shape[0], -1) @ cols).reshape(n, w.shape[0], 8, 8) + p[f"{name}.bias"][:, None, None]
            c[name + ".pre"] = h
            h = np.maximum(h, 0)
        # 2x2 max pool
        r = h.reshape(n, 32, 4, 2, 4, 2)
        m = r.max(axis=(3, 5))
        c["pool"] = (r, m)
        h = m.reshape(n, 512)
        c["fc1"] = h
        h = h @ p["fc1.weight"].T + p["fc1.bias"]
        c["fc1.pre"] = h
        h = np.maximum(h, 0)
        c["fc2"] = h
        return h @ p["fc2.weight"].T + p["fc2.bias"], c

    def backward(self, dy, c):
        import numpy as np
        p, g = self.p, {}
        fcs = ["fc1", "fc2", "fc3"] if self.kind == "mlp" else ["fc1", "fc2"]
        d = dy
        for i, name in reversed(list(enumerate(fcs))):
            g[f"{name}.weight"] = d.T @ c[name]
            g[f"{name}.bias"] = d.sum(0)
            d = d @ p[f"{name}.weight"]
            if i > 0:
                d = d * (c[fcs[i - 1] + ".pre"] > 0)
        if self.kind == "mlp":
            return g
        n = dy.shape[0]
        r, m = c["pool"]
        d = d.reshape(n, 32, 4, 1, 4, 1) * (r == m.reshape(n, 32, 4, 1, 4, 1))
        d = d.reshape(n, 32, 8, 8) * (c["conv2.pre"] > 0)
        for name, prev in [("conv2", "conv1.pre"), ("conv1", None)]:
            w = p[f"{name}.weight"]
            shape, cols = c[name]
            dflat = d.reshape(n, w.shape[0], 64)
            g[f"{name}.weight"] = np.einsum("nkp,ncp->kc", dflat, cols).reshape(w.shape)
            g[f"{name}.bias"] = dflat.sum((0, 2))
            if prev:
                dcols = np.einsum("kc,nkp->ncp", w.reshape(w.shape[0], -1), dflat)
                d = col2im(dcols, shape, 3, 1) * (c[prev] > 0)
        return g


def softmax_xent(logits, y):
    import numpy as np
    z = logits - logits.max(1, keepdims=True)
    pr = np.exp(z)
    pr /= pr.sum(1, keepdims=True)
    loss = -np.log(pr[np.arange(len(y)), y] + 1e-12).mean()
    pr[np.arange(len(y)), y] -= 1
    return loss, pr / len(y)


def train(net, x, y, epochs, lr, val, masks=None, seed=SEED):
    """Adam on mini-batches; with masks, pruned weights stay exactly zero. Keeps the
    weights of the epoch with the best accuracy on `val` = (x, y) (early stopping on the
    validation part alone) and returns that epoch (0: the starting weights)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    mom = {k: np.zeros_like(v) for k, v in net.p.items()}
    var = {k: np.zeros_like(v) for k, v in net.p.items()}
    t = 0
    best = (accuracy(net, *val), 0, {k: v.copy() for k, v in net.p.items()})
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        for s in range(0, len(x), 32):
            idx = order[s:s + 32]
            logits, cache = net.forward(x[idx])
            _, dy = softmax_xent(logits, y[idx])
            grads = net.backward(dy, cache)
            t += 1
            for k, gk in grads.items():
                mom[k] = 0.9 * mom[k] + 0.1 * gk
                var[k] = 0.999 * var[k] + 0.001 * gk * gk
                step = lr * (mom[k] / (1 - 0.9 ** t)) / (np.sqrt(var[k] / (1 - 0.999 ** t)) + 1e-8)
                net.p[k] -= step.astype(np.float32)
                if masks and k in masks:
                    net.p[k] *= masks[k]
        acc = accuracy(net, *val)
        if acc > best[0]:
            best = (acc, epoch, {k: v.copy() for k, v in net.p.items()})
    net.p = best[2]
    return best[1]


def accuracy(net, x, y):
    return float((net.forward(x)[0].argmax(1) == y).mean())


def data():
    """(train, validation, test) as (x, y) pairs: the held-out test part (20%, stratified)
    is the one models/digits/X_test.npy holds; 180 images of the rest (stratified) are the
    validation part that every epoch count is chosen on."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xrest, xte, yrest, yte = train_test_split(x, d.target.astype(np.int32), test_size=0.2,
                                              random_state=SEED, stratify=d.target)
    xtr, xva, ytr, yva = train_test_split(xrest, yrest, test_size=180, random_state=SEED,
                                          stratify=yrest)
    return (xtr, ytr), (xva, yva), (xte, yte)


def cmd_train():
    import numpy as np
    from safetensors.numpy import save_file
    (xtr, ytr), val, (xte, yte) = data()
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, "X_test.npy"), xte)
    np.save(os.path.join(OUT, "y_test.npy"), yte)
    np.save(os.path.join(OUT, "X_cal.npy"), xtr[:256])
    for kind, epochs in MAX_EPOCHS.items():
        net = Net(kind, np.random.default_rng(SEED))
        best = train(net, xtr, ytr, epochs, 2e-3, val)
        save_file(net.p, os.path.join(OUT, f"{kind}.safetensors"))
        print(f"{kind}: epoch {best} of {epochs} (validation {accuracy(net, *val):.4f}); "
              f"held-out accuracy {accuracy(net, xte, yte):.4f} ({len(yte)} images)")


def load_weights(dnn_path):
    """The weights a .dnn file references from its sidecar, by name."""
    from safetensors.numpy import load_file
    base = os.path.splitext(dnn_path)[0]
    return load_file(base + ".safetensors")


def cmd_finetune(kind, dnn, masks_path, out, epochs=None):
    import numpy as np
    from safetensors.numpy import load_file, save_file
    (xtr, ytr), val, (xte, yte) = data()
    net = Net(kind, np.random.default_rng(SEED))
    pruned = load_weights(dnn)
    for k in net.p:
        if k in pruned:
            net.p[k] = pruned[k].astype(np.float32).copy()
    masks = {k: v.astype(np.float32) for k, v in load_file(masks_path).items()}
    best = train(net, xtr, ytr, int(epochs or FT_MAX_EPOCHS), 1e-3, val, masks=masks)
    save_file({k: v for k, v in net.p.items()}, out)
    print(f"{kind} fine-tuned with fixed masks: epoch {best} chosen on validation "
          f"({accuracy(net, *val):.4f}); held-out accuracy {accuracy(net, xte, yte):.4f}")


def dnnc(*args):
    exe = os.environ.get("DNNC") or os.path.join(ROOT, "target", "release", "dnnc")
    return subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout


def eval_acc(dnn):
    out = dnnc("eval", dnn, "--data", os.path.join(OUT, "X_test.npy"),
               "--labels", os.path.join(OUT, "y_test.npy"), "--json")
    return json.loads(out)["top1"]


def gradual(kind, model, rate, tag, pipeline, work):
    """Gradual pruning with mask-fixed fine-tuning up to `rate`: prune at 2x
    (`pipeline(stage, masks)`), fine-tune with the masks fixed, write the weights back, let
    dnnc check them against the masks, then prune the result further. Returns the model."""
    current = model
    stage = 2
    while True:
        pruned = os.path.join(work, f"{kind}_{tag}{rate}_{stage}.dnn")
        masks = os.path.join(work, f"{kind}_{tag}{rate}_{stage}.masks.safetensors")
        dnnc("opt", current, "-p", pipeline(stage, masks), "-o", pruned)
        ftw = os.path.join(work, f"{kind}_{tag}f{rate}_{stage}.safetensors")
        subprocess.check_call([sys.executable, __file__, "finetune", kind, pruned, masks, ftw],
                              stdout=subprocess.DEVNULL)
        ft = os.path.join(work, f"{kind}_{tag}f{rate}_{stage}.dnn")
        text = open(pruned).read().replace(
            os.path.basename(os.path.splitext(pruned)[0]) + ".safetensors", os.path.basename(ftw))
        open(ft, "w").write(text)
        dnnc("opt", ft, "-p", f"bcr-check{{masks={masks}}}")
        current = ft
        if stage >= rate:
            return current
        stage *= 2


def cmd_experiment():
    # $DNNC: the caller's binary (tools/results/run.py builds one for its whole run).
    if not os.environ.get("DNNC"):
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "dnnc"], cwd=ROOT)
    work = os.path.join(ROOT, "target", "digits")
    os.makedirs(work, exist_ok=True)
    cal = os.path.join(OUT, "X_cal.npy")
    tune = f"calibration={cal} samples=256 cache={os.path.join(work, 'bcr-tune.txt')}"
    print(f"{'model':<5} {'rate':>5} {'dense':>7} {'uniform':>8} {'bcr-tune':>9} "
          f"{'uniform, fine-tuned':>20} {'bcr-tune, fine-tuned':>21}")
    for kind in ["mlp", "cnn"]:
        model = os.path.join(OUT, f"{kind}.dnn")
        dense = eval_acc(model)
        for rate in [2, 4, 8]:
            uni = os.path.join(work, f"{kind}_u{rate}.dnn")
            dnnc("opt", model, "-p", f"bcr-prune{{rate={rate}}}", "-o", uni)
            tuned = os.path.join(work, f"{kind}_t{rate}.dnn")
            dnnc("opt", model, "-p", f"bcr-tune{{target={rate} {tune}}},bcr-prune", "-o", tuned)
            fine = gradual(kind, model, rate, "g", lambda r, m: f"bcr-prune{{rate={r} block={FT_BLOCK} masks={m}}}",
                           work)
            fine_tuned = gradual(kind, model, rate, "t",
                                 lambda r, m: f"bcr-tune{{target={r} {tune}}},bcr-prune{{masks={m}}}", work)
            print(f"{kind:<5} {rate:>4}x {dense:>7.4f} {eval_acc(uni):>8.4f} {eval_acc(tuned):>9.4f} "
                  f"{eval_acc(fine):>20.4f} {eval_acc(fine_tuned):>21.4f}", flush=True)


def main():
    ensure_venv()
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "finetune", "experiment"):
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "train":
        cmd_train()
    elif sys.argv[1] == "finetune":
        cmd_finetune(*sys.argv[2:6])
    else:
        cmd_experiment()


if __name__ == "__main__":
    main()
