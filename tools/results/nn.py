"""A small numpy network for the accuracy experiments: the layers LeNet-5, the MLPs and
ESCALATE's decomposed convolutions need, with their gradients, Adam, masks that keep
pruned weights at zero, and early stopping on a validation split.

Parameters are keyed by the weight names of dnnc's models (`conv1.weight`, `fc3.bias`,
`conv1.coeffs`, ...), so that they go to and come from `.safetensors` sidecars as they are.
"""
import numpy as np


def im2col(x, k, pad):
    """x [N, C, H, W] -> columns [N, C, k*k, Ho*Wo] of a stride-1 convolution."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    cols = np.empty((n, c, k, k, ho, wo), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + ho, j:j + wo]
    return cols.reshape(n, c, k * k, ho * wo), (ho, wo)


def col2im(cols, shape, k, pad, out_hw):
    """The gradient of im2col: cols [N, C, k*k, Ho*Wo] summed back into [N, C, H, W]."""
    n, c, h, w = shape
    ho, wo = out_hw
    cols = cols.reshape(n, c, k, k, ho, wo)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), cols.dtype)
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + ho, j:j + wo] += cols[:, :, i, j]
    return xp[:, :, pad:pad + h, pad:pad + w] if pad else xp


class Conv:
    """Stride-1 convolution `name.weight` [K, C, k, k] + `name.bias`."""

    def __init__(self, name, k, pad):
        self.name, self.k, self.pad = name, k, pad

    def forward(self, p, x):
        w, b = p[self.name + ".weight"], p[self.name + ".bias"]
        cols, hw = im2col(x, self.k, self.pad)
        n = x.shape[0]
        flat = cols.reshape(n, -1, hw[0] * hw[1])
        y = np.einsum("kc,ncp->nkp", w.reshape(w.shape[0], -1), flat, optimize=True) + b[:, None]
        return y.reshape(n, w.shape[0], *hw), (x.shape, flat, hw)

    def backward(self, p, cache, dy, grads, need_dx):
        shape, flat, hw = cache
        w = p[self.name + ".weight"]
        n, kk = dy.shape[0], w.shape[0]
        d = dy.reshape(n, kk, -1)
        grads[self.name + ".weight"] = np.einsum("nkp,ncp->kc", d, flat, optimize=True).reshape(w.shape)
        grads[self.name + ".bias"] = d.sum(axis=(0, 2))
        if not need_dx:
            return None
        dcols = np.einsum("kc,nkp->ncp", w.reshape(kk, -1), d, optimize=True)
        return col2im(dcols.reshape(n, shape[1], self.k * self.k, -1), shape, self.k, self.pad, hw)


class Decomposed:
    """ESCALATE's decomposed convolution as dnnc's `decompose` writes it: each input channel
    convolved with `M` bases `name.weight.bases` [M, 1, k, k], then combined by the
    coefficients `name.weight.coeffs` [K, C·M] (`coeffs[k, c·M + m]`) + `name.bias`. The
    bases are fixed (pass them in `train`'s `frozen`)."""

    def __init__(self, name, k, pad):
        self.name, self.k, self.pad = name, k, pad
        self.bases, self.coeffs = name + ".weight.bases", name + ".weight.coeffs"

    def forward(self, p, x):
        bases, coeffs, b = p[self.bases], p[self.coeffs], p[self.name + ".bias"]
        m = bases.shape[0]
        cols, hw = im2col(x, self.k, self.pad)
        n, c = x.shape[:2]
        # Stage 1: [N, C, M, P].
        y1 = np.einsum("mr,ncrp->ncmp", bases.reshape(m, -1), cols, optimize=True)
        flat = y1.reshape(n, c * m, -1)
        y = np.einsum("kj,njp->nkp", coeffs, flat, optimize=True) + b[:, None]
        return y.reshape(n, coeffs.shape[0], *hw), (x.shape, flat, hw)

    def backward(self, p, cache, dy, grads, need_dx):
        shape, flat, hw = cache
        bases, coeffs = p[self.bases], p[self.coeffs]
        n, kk = dy.shape[0], coeffs.shape[0]
        d = dy.reshape(n, kk, -1)
        grads[self.coeffs] = np.einsum("nkp,njp->kj", d, flat, optimize=True)
        grads[self.name + ".bias"] = d.sum(axis=(0, 2))
        if not need_dx:
            return None
        m = bases.shape[0]
        dflat = np.einsum("kj,nkp->njp", coeffs, d, optimize=True).reshape(n, shape[1], m, -1)
        dcols = np.einsum("mr,ncmp->ncrp", bases.reshape(m, -1), dflat, optimize=True)
        return col2im(dcols, shape, self.k, self.pad, hw)


class Linear:
    """`x · name.weightᵀ + name.bias`."""

    def __init__(self, name):
        self.name = name

    def forward(self, p, x):
        return x @ p[self.name + ".weight"].T + p[self.name + ".bias"], x

    def backward(self, p, x, dy, grads, need_dx):
        grads[self.name + ".weight"] = dy.T @ x
        grads[self.name + ".bias"] = dy.sum(axis=0)
        return dy @ p[self.name + ".weight"] if need_dx else None


class Relu:
    def forward(self, p, x):
        return np.maximum(x, 0), x > 0

    def backward(self, p, mask, dy, grads, need_dx):
        return dy * mask


class MaxPool2:
    """2×2 max pooling, stride 2 (even sides)."""

    def forward(self, p, x):
        n, c, h, w = x.shape
        r = x.reshape(n, c, h // 2, 2, w // 2, 2)
        m = r.max(axis=(3, 5))
        return m, (r, m)

    def backward(self, p, cache, dy, grads, need_dx):
        r, m = cache
        hit = r == m[:, :, :, None, :, None]
        # Ties share the gradient of their window.
        hit = hit / hit.sum(axis=(3, 5), keepdims=True)
        return (hit * dy[:, :, :, None, :, None]).reshape(r.shape[0], r.shape[1], r.shape[2] * 2, r.shape[4] * 2)


class Reshape:
    def __init__(self, shape):
        self.shape = shape

    def forward(self, p, x):
        return x.reshape((x.shape[0], *self.shape)), x.shape

    def backward(self, p, shape, dy, grads, need_dx):
        return dy.reshape(shape)


class Net:
    """A sequence of layers over parameters `p` (by dnnc weight name)."""

    def __init__(self, layers, params):
        self.layers, self.p = layers, params

    def forward(self, x):
        caches = []
        for layer in self.layers:
            x, c = layer.forward(self.p, x)
            caches.append(c)
        return x, caches

    def backward(self, dy, caches):
        grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(self.p, caches[i], dy, grads, need_dx=i > 0)
        return grads

    def predict(self, x, batch=500):
        return np.concatenate([self.forward(x[i:i + batch])[0] for i in range(0, len(x), batch)])

    def accuracy(self, x, y):
        return float((self.predict(x).argmax(1) == y).mean())


def softmax_xent(logits, y):
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    pr = e / e.sum(1, keepdims=True)
    loss = -np.log(pr[np.arange(len(y)), y] + 1e-12).mean()
    pr[np.arange(len(y)), y] -= 1
    return loss, pr / len(y)


def shifted(side, max_shift):
    """An augmentation: each image of `side`×`side` pixels (one row each) moved by up to
    `max_shift` pixels in each direction, zeros shifted in."""
    def augment(xb, rng):
        n = len(xb)
        img = xb.reshape(n, side, side)
        out = np.zeros_like(img)
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=(2, n))
        for i in range(n):
            sy, sx = slice(max(dy[i], 0), side + min(dy[i], 0)), slice(max(dx[i], 0), side + min(dx[i], 0))
            ty, tx = slice(max(-dy[i], 0), side + min(-dy[i], 0)), slice(max(-dx[i], 0), side + min(-dx[i], 0))
            out[i, ty, tx] = img[i, sy, sx]
        return out.reshape(n, -1)
    return augment


def train(net, x, y, epochs, lr, seed, masks=None, frozen=(), val=None, batch=32, augment=None):
    """Adam on mini-batches, the step size decaying to a tenth along a cosine. `masks` keep
    pruned weights exactly zero, `frozen` names parameters that do not train (ESCALATE's
    bases), `augment(batch, rng)` transforms each training batch. With `val = (x, y)`,
    the weights of the epoch with the best validation accuracy are kept (early stopping on
    the validation split alone); returns (epochs run, best epoch, its validation
    accuracy)."""
    rng = np.random.default_rng(seed)
    mom = {k: np.zeros_like(v) for k, v in net.p.items()}
    var = {k: np.zeros_like(v) for k, v in net.p.items()}
    t = 0
    best = (-1.0, 0, {k: v.copy() for k, v in net.p.items()})
    if val is not None:
        best = (net.accuracy(*val), 0, best[2])
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        rate = lr * (0.55 + 0.45 * np.cos(np.pi * (epoch - 1) / max(epochs, 1)))
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            xb = x[idx] if augment is None else augment(x[idx], rng)
            logits, caches = net.forward(xb)
            _, dy = softmax_xent(logits, y[idx])
            grads = net.backward(dy, caches)
            t += 1
            for k, g in grads.items():
                if k in frozen:
                    continue
                mom[k] = 0.9 * mom[k] + 0.1 * g
                var[k] = 0.999 * var[k] + 0.001 * g * g
                step = rate * (mom[k] / (1 - 0.9 ** t)) / (np.sqrt(var[k] / (1 - 0.999 ** t)) + 1e-8)
                net.p[k] -= step.astype(np.float32)
                if masks is not None and k in masks:
                    net.p[k] *= masks[k]
        if val is not None:
            acc = net.accuracy(*val)
            if acc > best[0]:
                best = (acc, epoch, {k: v.copy() for k, v in net.p.items()})
    if val is None:
        return epochs, epochs, None
    net.p = best[2]
    return epochs, best[1], best[0]


def he(rng, *shape):
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def lenet5(rng):
    """LeNet-5 as `models/lenet5.dnn`: conv 5×5 (pad 2) 6 → pool → conv 5×5 16 → pool →
    120 → 84 → 10, ReLU."""
    p = {"conv1.weight": he(rng, 6, 1, 5, 5), "conv1.bias": np.zeros(6, np.float32),
         "conv2.weight": he(rng, 16, 6, 5, 5), "conv2.bias": np.zeros(16, np.float32),
         "fc1.weight": he(rng, 120, 400), "fc1.bias": np.zeros(120, np.float32),
         "fc2.weight": he(rng, 84, 120), "fc2.bias": np.zeros(84, np.float32),
         "fc3.weight": he(rng, 10, 84), "fc3.bias": np.zeros(10, np.float32)}
    return Net(lenet5_layers(), p)


def lenet5_layers(decomposed=()):
    """LeNet-5's layers; the convolutions named in `decomposed` as ESCALATE's two stages."""
    conv = lambda name, k, pad: Decomposed(name, k, pad) if name in decomposed else Conv(name, k, pad)
    return [Reshape((1, 28, 28)), conv("conv1", 5, 2), Relu(), MaxPool2(), conv("conv2", 5, 0), Relu(),
            MaxPool2(), Reshape((400,)), Linear("fc1"), Relu(), Linear("fc2"), Relu(), Linear("fc3")]


def mlp(rng, sizes):
    """An MLP `fc1 ... fcN` over `sizes` (inputs first), ReLU between."""
    p, layers = {}, []
    for i in range(len(sizes) - 1):
        name = f"fc{i + 1}"
        p[name + ".weight"] = he(rng, sizes[i + 1], sizes[i])
        p[name + ".bias"] = np.zeros(sizes[i + 1], np.float32)
        layers.append(Linear(name))
        if i < len(sizes) - 2:
            layers.append(Relu())
    return Net(layers, p)
