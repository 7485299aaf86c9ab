"""Reading probe inputs from a store: embeddings, labels, multi-label targets, seeded subsets."""
from __future__ import annotations

import numpy as np

from ..errors import DivergentError, suggest
from .lbfgs import l2_normalize


def split_data(store, split: str):
    if split not in store.splits:
        raise DivergentError(f"the store has no split {split!r}", suggest(split, store.splits, "split"))
    return store.split(split)


def embeddings(store, model: str, split: str, *, normalize: bool = True) -> np.ndarray:
    """A model's stored features on a split, checked and (by default) L2-normalised per row."""
    if model not in store.models:
        raise DivergentError(f"the store has no model {model!r}", suggest(model, store.models, "model"))
    sd = split_data(store, split)
    if not store.has(model, split, "features"):
        have = [m for m in store.models if store.has(m, split, "features")]
        raise DivergentError(
            f"no embeddings (features) of {model!r} on split {split!r}",
            f"extract them first (divergent extract ... --features) or pick a model that has them: "
            f"{suggest(model, have, 'model with features')}",
        )
    x = np.asarray(store.array(model, split, "features"))
    if x.ndim != 2 or x.shape[0] != sd.n:
        raise DivergentError(
            f"embeddings of {model!r} on {split!r} have shape {x.shape} but the split has {sd.n} examples",
            "re-extract the model's features on this split (rows must follow the split's example order)",
        )
    what = f"embeddings of {model!r} on {split!r}"
    return l2_normalize(x, what) if normalize else np.asarray(x, dtype=np.float32)


def is_multilabel(sd) -> bool:
    return np.asarray(sd.labels).ndim == 2


def targets(sd):
    """(labels, difficult) of a split: (N,) class ids and None, or, for a multi-label split
    (the store's (N, K) multi-hot labels), (N, K) 0/1 and the VOC "difficult" flags as an
    (N, K) bool array or None. Difficult flags come from ``meta["difficult"]``: either an
    (N, K) 0/1 nested list or a list of [row, class] pairs."""
    labels = np.asarray(sd.labels)
    if labels.ndim == 1:
        return labels.astype(np.int64), None
    Y = labels.astype(np.int64)
    K = len(sd.class_names)
    if Y.shape != (sd.n, K) or not np.isin(Y, (0, 1)).all():
        raise DivergentError(f"split {sd.name!r}: multi-hot labels must be {sd.n} x {K} of 0/1, got shape {Y.shape}",
                             "re-create the split with one 0/1 row per example and one column per class")
    diff = (sd.meta or {}).get("difficult")
    if diff is None:
        return Y, None
    arr = np.asarray(diff)
    if arr.shape == Y.shape:
        return Y, arr.astype(bool)
    if arr.ndim == 2 and arr.shape[1] == 2 or arr.size == 0:
        out = np.zeros(Y.shape, dtype=bool)
        if arr.size:
            out[arr[:, 0].astype(int), arr[:, 1].astype(int)] = True
        return Y, out
    raise DivergentError(f"split {sd.name!r}: meta['difficult'] has shape {arr.shape}",
                         f"give an {Y.shape} 0/1 matrix or a list of [row, class] pairs")


def stratified_subset(labels, max_n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded stratified subset of at most max_n examples.

    Each class gets its share by largest remainders (at least one example per class);
    within class c, examples are drawn by ``numpy.random.default_rng([seed, c])``.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if max_n is None or max_n >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    if max_n < classes.size:
        raise DivergentError(f"max_train={max_n} is smaller than the {classes.size} classes",
                             f"use max_train >= {classes.size}")
    quota = max_n * counts / n
    take = np.maximum(np.floor(quota).astype(int), 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < max_n:
        c = order[i % classes.size]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > max_n:
        c = int(np.argmax(take))
        take[c] -= 1
    out = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        out.append(idx[np.random.default_rng([seed, int(c)]).permutation(idx.size)[:k]])
    return np.sort(np.concatenate(out))
