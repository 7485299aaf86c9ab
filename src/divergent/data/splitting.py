"""Split rules: map 'train'/'holdout'/'test'/'official-test'/'all' onto a source's examples.

- Official train/test sources (Fashion-MNIST, CIFAR-10, ImageFolder train/ + test/):
  train = official train; holdout/test = stratified_halves(official test labels, seed).
- Sources with train/val/test: train = train, holdout = val, test = test.
- Sources with no official split (digits, a flat ImageFolder, an npz without splits):
  stratified_thirds(labels, seed) (see its docstring).
"""
from __future__ import annotations

import numpy as np

from ..conventions import HOLDOUT, SPLIT_SEED, SPLITS, TEST, TRAIN
from ..errors import DivergentError, suggest
from .splits import stratified_halves

OFFICIAL_TEST = "official-test"
ALL = "all"
#: split names open_dataset accepts for every source
SPLIT_NAMES = (*SPLITS, OFFICIAL_TEST, ALL)


def check_split(split: str, extra: tuple[str, ...] = ()) -> str:
    """Validate a split name (the conventions' three, 'official-test', 'all', plus source extras)."""
    names = (*SPLIT_NAMES, *extra)
    if split not in names and split in ("val", "valid", "validation", "trainval"):
        raise DivergentError(
            f"split {split!r} is a Pascal VOC image set; this source does not have it",
            "use 'holdout' (the validation split everything is fitted or selected on), 'train' or 'test'",
        )
    if split not in names:
        raise DivergentError(f"unknown split {split!r}", f"use one of {', '.join(names)} ({suggest(split, names, 'split')})")
    return split


def stratified_thirds(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, holdout, test) for a source with no official split, each in source order.

    For each class c in ascending order, the indices of class c in source order are permuted
    with numpy.random.default_rng([seed, c]); the first floor(n_c / 3) go to holdout, the next
    floor(n_c / 3) to test and the rest (n_c - 2 floor(n_c / 3)) to train.
    Multi-label (N, C) labels are split the same way over one pseudo-class 0 (a seeded
    permutation of all examples).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.zeros(labels.shape[0], dtype=np.int64)
    if labels.ndim != 1 or labels.size == 0:
        raise DivergentError("cannot split an empty or non-1-D label vector")
    train, holdout, test = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = idx[np.random.default_rng([seed, int(c)]).permutation(idx.size)]
        k = idx.size // 3
        holdout.append(perm[:k])
        test.append(perm[k : 2 * k])
        train.append(perm[2 * k :])
    return tuple(np.sort(np.concatenate(p)) for p in (train, holdout, test))  # type: ignore[return-value]


def halves_of(test_labels: np.ndarray, split: str, seed: int = SPLIT_SEED) -> np.ndarray:
    """Positions within the official test set of the holdout or test half."""
    labels = np.asarray(test_labels)
    if labels.ndim == 2:  # multi-label official test: seeded halves over one pseudo-class
        labels = np.zeros(labels.shape[0], dtype=np.int64)
    h, t = stratified_halves(labels, seed=seed)
    return h if split == HOLDOUT else t


def thirds_of(labels: np.ndarray, split: str, seed: int = SPLIT_SEED) -> np.ndarray:
    """Positions of split (train/holdout/test/all) under the no-official-split rule."""
    check_split(split)
    if split == ALL:
        return np.arange(len(labels))
    if split == OFFICIAL_TEST:
        raise DivergentError(
            "this source has no official test set, so 'official-test' is undefined",
            "use split 'test' (the seeded stratified third) or 'all'",
        )
    tr, ho, te = stratified_thirds(labels, seed=seed)
    return {TRAIN: tr, HOLDOUT: ho, TEST: te}[split]


def empty_split_error(name: str, split: str, fix: str | None = None) -> DivergentError:
    return DivergentError(
        f"split {split!r} of {name} has no images",
        fix or "check the source path and its train/ test/ layout, or choose another split (e.g. 'all')",
    )


def official_plan(split: str, parts: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """Which official parts (train/val/test) make up a split, and the halving rule applied to each.

    Returns [(part, rule)], rule None (take the whole part) or 'holdout'/'test' (that stratified
    half of the part). With val and test both present, holdout = val and test = test; with only
    one of them it is the official test set that is halved.
    """
    check_split(split)
    have = set(parts)
    test_part = "test" if "test" in have else ("val" if "val" in have else None)
    three_way = {"val", "test"} <= have
    if split == TRAIN:
        return [("train", None)] if "train" in have else []
    if split == ALL:
        return [(p, None) for p in ("train", "val", "test") if p in have]
    if test_part is None:
        return []
    if split == OFFICIAL_TEST:
        return [(test_part, None)]
    if three_way:
        return [("val", None)] if split == HOLDOUT else [("test", None)]
    return [(test_part, split)]
