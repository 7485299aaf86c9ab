"""Training images for the zoo: only the `train` split, as uint8 arrays in memory, plus subset rules.

Images come from `divergent.data.open_dataset` ('fashion-mnist': the IDX files of Debian
`dataset-fashion-mnist`; 'cifar10-jpeg': the JPEG copy in `../shared/data/cifar10-jpeg`), always
with split 'train': the holdout and test halves are cut from the official *test* set, which
the trainer never asks for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import atomic_open
from ..conventions import TRAIN
from ..errors import DivergentError

#: seed of the permutation of the train split that subsets and size limits are cut from
#: (fixed, independent of the model seed, so Reinit models see the same images)
DATA_SEED = 0

#: per-dataset input geometry and normalisation
DATASETS = {
    "fashion-mnist": dict(channels=1, size=28, n_classes=10, mean=(0.2860,), std=(0.3530,)),
    "cifar10": dict(channels=3, size=32, n_classes=10, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2470, 0.2435, 0.2616)),
}


@dataclass
class TrainImages:
    """uint8 images (N, H, W) or (N, H, W, C), int64 labels, example ids; always the `train` split."""

    dataset: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


#: hook for tests: every split name requested through `load_split` is appended here
REQUESTED_SPLITS: list[tuple[str, str]] = []
_CACHE: dict[tuple[str, str], TrainImages] = {}


#: the divergent.data source each recipe dataset is read from
SOURCES = {"fashion-mnist": "fashion-mnist", "cifar10": "cifar10-jpeg"}


def load_split(dataset: str, split: str = TRAIN) -> TrainImages:
    """The training images of `dataset` (via divergent.data.open_dataset); any other split is refused."""
    REQUESTED_SPLITS.append((dataset, split))
    if split != TRAIN:
        raise DivergentError(
            f"the zoo trainer only trains on the {TRAIN!r} split, not {split!r}",
            "holdout and test are for temperatures, selection and evaluation (docs/conventions.md)",
        )
    if dataset not in SOURCES:
        raise DivergentError(f"no training data reader for dataset {dataset!r}",
                             f"use one of {', '.join(SOURCES)}")
    key = (dataset, split)
    if key not in _CACHE:
        _CACHE[key] = images_of(SOURCES[dataset], split, dataset)
    return _CACHE[key]


def images_of(source: str, split: str, dataset: str) -> TrainImages:
    """All pixels of one split of a divergent.data source as uint8 (decoded JPEGs cached in ~/.cache)."""
    from ..data import open_dataset

    ds = open_dataset(source, split)
    labels = np.asarray(ds.labels, dtype=np.int64)
    ids = np.asarray(ds.ids).astype(str)
    arr = ds.array()
    if arr is None:
        cache = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "divergent" /
                 f"pixels-{dataset}-{split}-{len(ids)}.npz")
        if cache.exists():
            z = np.load(cache, allow_pickle=False)
            if np.array_equal(z["ids"], ids):
                return TrainImages(dataset, split, z["images"], labels, ids)
        arr = np.stack([np.asarray(ds.raw(i), dtype=np.uint8) for i in range(len(ids))])
        with atomic_open(cache) as f:
            np.savez(f, images=arr, ids=ids)
    return TrainImages(dataset, split, np.ascontiguousarray(arr), labels, ids)


def subset_indices(n: int, subset: tuple[int, int] | None, limit: int | None) -> np.ndarray:
    """Indices into the train split: part `subset[0]` of `subset[1]` disjoint parts of a seeded
    permutation (DATA_SEED), then the first `limit` of them; returned sorted (source order)."""
    perm = np.random.default_rng(DATA_SEED).permutation(n)
    if subset is not None:
        part, parts = subset
        if not (0 <= part < parts):
            raise DivergentError(f"subset part {part} is outside 0..{parts - 1}", "use 0 <= part < parts")
        perm = perm[part::parts]
    if limit is not None:
        if limit > perm.size:
            raise DivergentError(f"limit {limit} exceeds the {perm.size} images available",
                                 f"use a limit of at most {perm.size}")
        perm = perm[:limit]
    return np.sort(perm)
