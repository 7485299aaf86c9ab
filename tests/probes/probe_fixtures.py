"""Real small data for the probe tests: scikit-learn digits, a ReLU projection, 2x2 mosaics."""
from __future__ import annotations

import numpy as np


def digits_parts():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float32)
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    parts = {"train": idx[:900], "holdout": idx[900:1350], "test": idx[1350:]}
    return X, y, parts


def relu_projection(X, dim=48, seed=1):
    W = np.random.default_rng(seed).normal(size=(X.shape[1], dim)).astype(np.float32)
    return np.maximum(X @ W, 0.0).astype(np.float32) + 1e-3


def mosaic(X, y, n, seed):
    """2x2 mosaics of digit images as concatenated tile pixels, multi-hot labels."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(0, len(y), size=(n, 4))
    feats = X[tiles].reshape(n, -1)
    Y = np.zeros((n, 10), dtype=np.uint8)
    for j in range(4):
        Y[np.arange(n), y[tiles[:, j]]] = 1
    return feats.astype(np.float32), Y
