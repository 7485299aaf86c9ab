"""Validation of what a producer gives the store: a new split, and a model's arrays for a split."""
from __future__ import annotations

import numpy as np

from ..conventions import check_name
from ..errors import DivergentError
from .align import first_duplicates
from .manifest import KINDS, SplitData

PROB_TOL = 1e-3
#: a decision-only model's class id for "no answer" (a human who did not respond): counted wrong
NO_ANSWER = -1


def clean_split(name: str, labels, class_names, ids) -> tuple[str, np.ndarray, list[str], np.ndarray]:
    """A new split's name, labels, class names and ids, checked and in their stored types:
    (name, int64 labels (N,) or uint8 multi-hot (N, C), class names, unicode ids)."""
    name = check_name(name, "split")
    labels = np.asarray(labels)
    ids = np.asarray([str(i) for i in ids])
    class_names = [str(c) for c in class_names]
    n = len(labels)
    if n == 0:
        raise DivergentError(f"split {name!r} is empty", "give at least one labelled example")
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != len(class_names)):
        raise DivergentError(f"labels of split {name!r} have shape {labels.shape}",
                             "give integer labels (N,) or multi-hot labels (N, n_classes)")
    if len(ids) != n:
        raise DivergentError(f"split {name!r}: {len(ids)} ids for {n} labels", "give one id per example")
    if len(set(class_names)) != len(class_names):
        raise DivergentError(f"split {name!r}: duplicate class names", "class names must be unique")
    if len(np.unique(ids)) != n:
        dup = first_duplicates(ids)
        raise DivergentError(f"split {name!r}: duplicate example ids, e.g. {dup}",
                             "ids must be unique: use paths relative to the dataset root, not bare file names")
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                raise DivergentError(f"split {name!r}: labels must be integers, got {labels.dtype}",
                                     "give class indices 0, 1, 2, ... (N,) or multi-hot 0/1 labels (N, C)")
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DivergentError(
                f"split {name!r}: labels range {labels.min()}..{labels.max()} but there are "
                f"{len(class_names)} class names", "give one class name per class index")
    else:
        if not np.isin(labels, (0, 1)).all():
            raise DivergentError(f"split {name!r}: multi-hot labels must be 0 or 1",
                                 "give one 0/1 column per class (1: the class is present)")
        labels = labels.astype(np.uint8)
    return name, labels, class_names, ids


def validate_array(kind: str, arr: np.ndarray, sd: SplitData, model: str, renormalize: bool, meta: dict) -> np.ndarray:
    where = f"{kind} of {model!r} on split {sd.name!r}"
    if len(arr) != sd.n:
        raise DivergentError(f"{where}: {len(arr)} rows, but the split has {sd.n} examples",
                             "give one row per example of the split (or pass ids to align by id)")
    if kind in ("logits", "probs", "features"):
        if arr.ndim != 2:
            raise DivergentError(f"{where}: expected a 2-D array, got shape {arr.shape}",
                                 "store one row per example and one column per class or feature: shape (N, k)")
        if not np.issubdtype(arr.dtype, np.floating):
            raise DivergentError(f"{where}: expected floats, got {arr.dtype}",
                                 "store scores as float32/float64 (class ids belong in `pred`)")
        out = arr.astype(np.float16 if arr.dtype == np.float16 else np.float32)
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1))[:3]
            raise DivergentError(f"{where}: NaN or Inf values (rows {bad.tolist()} ...)",
                                 "fix the producer; non-finite scores cannot be compared")
        if kind in ("logits", "probs") and out.shape[1] != sd.n_classes:
            raise DivergentError(
                f"{where}: {out.shape[1]} classes, but the split has {sd.n_classes}",
                "map the model's classes to the split's with a class-mapping file, or store "
                "only its features and fit a linear head (divergent head)")
        if kind == "probs":
            if (out < 0).any():
                raise DivergentError(f"{where}: negative probabilities", "store logits, or valid probabilities")
            sums = out.astype(np.float64).sum(axis=1)
            off = np.abs(sums - 1) > PROB_TOL
            if off.any():
                if not renormalize:
                    raise DivergentError(
                        f"{where}: {int(off.sum())} rows do not sum to 1 (e.g. {sums[off][:3].round(4).tolist()})",
                        "pass --renormalize (renormalize=True) to divide each row by its sum; it is recorded on the card")
                if (sums <= 0).any():
                    raise DivergentError(f"{where}: rows summing to 0 cannot be renormalised",
                                         "store logits, or probabilities with at least one positive entry per row")
                out = (out.astype(np.float64) / sums[:, None]).astype(np.float32)
                meta["renormalized"] = True
        return out
    if kind == "pred":
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise DivergentError(f"{where}: expected integer class ids (N,) or (N, k), got {arr.dtype} {arr.shape}",
                                 "store class indices as integers; scores belong in `logits`, `probs` or `scores`")
        if arr.shape[1] == 0:
            raise DivergentError(f"{where}: no class ids (shape {arr.shape})", "give at least one class id per row")
        if arr.min() < NO_ANSWER or arr.max() >= sd.n_classes:
            raise DivergentError(f"{where}: class ids outside 0..{sd.n_classes - 1} (and {NO_ANSWER}: no answer)",
                                 "map the model's classes to the split's classes first")
        return arr.astype(np.int32)
    if kind == "scores":
        if arr.ndim == 1:
            arr = arr[:, None]
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DivergentError(f"{where}: NaN or Inf values", "fix the producer; give a finite score per class id")
        return out
    raise DivergentError(f"unknown array kind {kind!r}", f"use one of {', '.join(KINDS)}")
