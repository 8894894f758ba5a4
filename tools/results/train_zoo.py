"""Trains a zoo CNN at CIFAR-10 shape on MNIST (28×28 images padded to 32×32, the grey
channel repeated three times) with JAX, through dnnc_xla's reading of dnnc's printed IR, so
that ESCALATE's decomposition meets trained kernels rather than random ones:

    train_zoo.py MODEL.dnn X_TRAIN.npy Y_TRAIN.npy X_VAL.npy Y_VAL.npy OUT.safetensors EPOCHS [LIMIT]

MODEL.dnn must have materialised weights (`dnnc opt --materialize-weights`). Adam, batch 64,
the epoch with the best validation accuracy kept; prints one JSON line per epoch. LIMIT
trains on the first LIMIT images only (the quick mode). Runs in
its own virtualenv (tools/xla with safetensors), made by results.py."""
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from dnnc_xla.dnn import read_module
from dnnc_xla.model import build


def images(x):
    """Rows of 784 pixels in [0, 1] → [N, 3, 32, 32], normalised."""
    x = x.reshape(-1, 1, 28, 28)
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    x = (x - 0.13) / 0.31
    return np.repeat(x, 3, axis=1).astype(np.float32)


def main():
    model, xtr, ytr, xva, yva, out, epochs = sys.argv[1:8]
    epochs = int(epochs)
    limit = int(sys.argv[8]) if len(sys.argv) > 8 else None
    xtr, xva = images(np.load(xtr)[:limit]), images(np.load(xva))
    ytr, yva = np.load(ytr)[:limit].astype(np.int32), np.load(yva).astype(np.int32)
    forward, params = build(read_module(model))
    # Batch-norm statistics are not trained (the zoo's VGGs have none).
    trained = {k for k in params if not k.endswith(("running_mean", "running_var"))}

    def loss(p, x, y):
        logits = forward(p, x)[0]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    @jax.jit
    def step(p, m, v, t, x, y, lr):
        g = jax.grad(loss)(p, x, y)
        new_p, new_m, new_v = {}, {}, {}
        for k in p:
            if k not in trained:
                new_p[k], new_m[k], new_v[k] = p[k], m[k], v[k]
                continue
            new_m[k] = 0.9 * m[k] + 0.1 * g[k]
            new_v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k]
            mh = new_m[k] / (1 - 0.9 ** t)
            vh = new_v[k] / (1 - 0.999 ** t)
            new_p[k] = p[k] - lr * mh / (jnp.sqrt(vh) + 1e-8)
        return new_p, new_m, new_v

    predict = jax.jit(lambda p, x: jnp.argmax(forward(p, x)[0], axis=-1))

    def accuracy(p, x, y):
        hits = sum(int(jnp.sum(predict(p, x[i:i + 250]) == y[i:i + 250])) for i in range(0, len(x), 250))
        return hits / len(y)

    m = {k: jnp.zeros_like(v) for k, v in params.items()}
    v = {k: jnp.zeros_like(val) for k, val in params.items()}
    rng = np.random.default_rng(11)
    best = (accuracy(params, xva, yva), 0, params)
    t = 0
    for epoch in range(1, epochs + 1):
        start = time.time()
        lr = 1e-3 * (0.55 + 0.45 * np.cos(np.pi * (epoch - 1) / epochs))
        order = rng.permutation(len(xtr))
        for s in range(0, len(order) - 63, 64):
            idx = order[s:s + 64]
            t += 1
            params, m, v = step(params, m, v, t, xtr[idx], ytr[idx], lr)
        acc = accuracy(params, xva, yva)
        if acc > best[0]:
            best = (acc, epoch, params)
        print(json.dumps({"epoch": epoch, "validation": acc, "seconds": round(time.time() - start, 1)}), flush=True)
    save_file({k: np.asarray(val, np.float32) for k, val in best[2].items()}, out)
    print(json.dumps({"best_epoch": best[1], "validation": best[0]}), flush=True)


if __name__ == "__main__":
    main()
