"""The seeded, stratified holdout/test halves of an official test set (see docs/conventions.md)."""
from __future__ import annotations

import numpy as np

from ..conventions import SPLIT_SEED
from ..errors import DivergentError


def stratified_halves(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (holdout, test) of the two seeded stratified halves, each in source order."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise DivergentError("cannot split an empty or non-1-D label vector")
    holdout, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = idx[np.random.default_rng([seed, int(c)]).permutation(idx.size)]
        h = idx.size // 2
        holdout.append(perm[:h])
        test.append(perm[h:])
    return np.sort(np.concatenate(holdout)), np.sort(np.concatenate(test))
