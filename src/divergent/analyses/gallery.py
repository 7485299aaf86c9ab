"""Galleries of a pair: the examples only one model gets right, and where their confusions differ.

Pure functions on arrays (no store, no files). For a pair (A = the base, B = the other model):

- :func:`select_gallery` picks, for each side (``only_a``: A right and B wrong; ``only_b``: the
  reverse) and each class group, the examples where the model that is right is most confident
  (its calibrated top-1 probability, highest first; ties by position in the split), at most
  ``per_group`` of them. Classes in no group form the group ``"all"``.
- :func:`confusion_difference` is the per-class difference of the two confusion matrices
  (counts, A minus B: rows the true class, columns the predicted class), restricted to the
  ``max_classes`` classes whose rows and columns differ most when there are more classes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DivergentError
from ..metrics import specialization as sm
from . import class_groups as cg
from ._select import as_store

#: thumbnails per side and class group (the study's analysis.gallery default)
PER_GROUP = 6
#: classes shown in the confusion-difference heatmap when a split has more
MAX_CLASSES = 20
#: the sides of a gallery: outcome name -> the model that is right
SIDES = {"only_a": "a", "only_b": "b"}
GALLERY_COLUMNS = ["side", "group", "rank", "position", "id", "label", "class_name", "pred_a", "pred_b",
                   "pred_a_name", "pred_b_name", "conf_a", "conf_b", "confidence"]
CONFUSION_COLUMNS = ["true_class", "pred_class", "true_index", "pred_index", "count_a", "count_b", "diff", "n_classes"]


def _check(labels, pred_a, pred_b, *others) -> int:
    n = np.asarray(labels).shape[0]
    for x in (pred_a, pred_b, *others):
        if np.asarray(x).shape != (n,):
            raise DivergentError(f"gallery inputs differ in length: {np.asarray(x).shape} vs ({n},)",
                                 "pass one value per example of the split for labels, predictions and confidences")
    return n


def group_of_classes(class_names: Sequence[str], groups: Mapping[str, Sequence[str]] | None) -> tuple[list[str], np.ndarray]:
    """(group names in display order, per-class group name); classes in no group are in "all"."""
    if not groups:
        return ["all"], np.array(["all"] * len(class_names), dtype=object)
    names, idx = cg.group_index(groups, class_names)
    per_class = np.array([names[i] if i >= 0 else "all" for i in idx], dtype=object)
    order = [g for g in names if (per_class == g).any()] + (["all"] if (idx < 0).any() else [])
    return order, per_class


def select_gallery(labels, pred_a, pred_b, conf_a, conf_b, class_names: Sequence[str], *,
                   ids: Sequence[str] | None = None, groups: Mapping[str, Sequence[str]] | None = None,
                   per_group: int = PER_GROUP) -> pd.DataFrame:
    """The examples only one model of a pair gets right, most confident first, grouped by class group.

    labels, pred_a, pred_b: class ids per example; conf_a, conf_b: each model's calibrated
    probability of its own top-1 class. Returns one row per selected example (columns
    :data:`GALLERY_COLUMNS`), ordered by side (only_a, then only_b), group (in the order of
    ``groups``, then "all") and rank (0 = the most confident of the right model; ties by position).
    ``confidence`` is the right model's confidence (conf_a on the only_a side, conf_b on only_b).
    """
    n = _check(labels, pred_a, pred_b, conf_a, conf_b)
    if per_group < 1:
        raise DivergentError(f"per_group is {per_group}", "show at least one example per side and group")
    labels, pred_a, pred_b = (np.asarray(x, dtype=np.int64) for x in (labels, pred_a, pred_b))
    conf = {"a": np.asarray(conf_a, dtype=np.float64), "b": np.asarray(conf_b, dtype=np.float64)}
    ids = np.asarray([str(i) for i in range(n)] if ids is None else ids, dtype=str)
    names = np.asarray(list(class_names), dtype=object)
    order, per_class = group_of_classes(class_names, groups)
    group = per_class[labels]
    codes = sm.outcome_codes(pred_a == labels, pred_b == labels)
    want = {"only_a": sm.ONLY_A, "only_b": sm.ONLY_B}
    rows = []
    for side, who in SIDES.items():
        for g in order:
            pos = np.flatnonzero((codes == want[side]) & (group == g))
            c = conf[who][pos]
            pos = pos[np.lexsort((pos, -c))][:per_group]   # confidence descending, then position
            for rank, p in enumerate(pos):
                rows.append((side, g, rank, int(p), ids[p], int(labels[p]), names[labels[p]], int(pred_a[p]),
                             int(pred_b[p]), names[pred_a[p]], names[pred_b[p]], float(conf["a"][p]),
                             float(conf["b"][p]), float(conf[who][p])))
    return pd.DataFrame(rows, columns=GALLERY_COLUMNS)


def confusion_counts(labels, pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: rows the true class, columns the predicted class."""
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    return np.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_difference(labels, pred_a, pred_b, class_names: Sequence[str], *,
                         max_classes: int = MAX_CLASSES) -> pd.DataFrame:
    """Confusion matrix of A minus that of B (counts), one row per (true, predicted) cell.

    With more than ``max_classes`` classes only the most different ones are kept: those with the
    largest sum of absolute differences over their row and their column (ties by class index),
    shown in class-index order. Columns :data:`CONFUSION_COLUMNS` (n_classes: the split's classes)."""
    _check(labels, pred_a, pred_b)
    k = len(class_names)
    ca, cb = confusion_counts(labels, pred_a, k), confusion_counts(labels, pred_b, k)
    d = ca - cb
    keep = np.arange(k)
    if k > max_classes:
        score = np.abs(d).sum(axis=1) + np.abs(d).sum(axis=0) - np.abs(np.diag(d))
        keep = np.sort(np.lexsort((np.arange(k), -score))[:max_classes])
    t, p = np.meshgrid(keep, keep, indexing="ij")
    t, p = t.ravel(), p.ravel()
    names = np.asarray(list(class_names), dtype=object)
    return pd.DataFrame({"true_class": names[t], "pred_class": names[p], "true_index": t, "pred_index": p,
                         "count_a": ca[t, p], "count_b": cb[t, p], "diff": d[t, p], "n_classes": k},
                        columns=CONFUSION_COLUMNS)


def representative_galleries(store, base: str, reps: Mapping[str, str], split: str, groups=None, *,
                             per_group: int = PER_GROUP, max_classes: int = MAX_CLASSES
                             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`select_gallery` and :func:`confusion_difference` of the base against one representative
    model per category ({category: model}), on calibrated top-1 predictions; both tables gain
    the columns model_a, model_b, category. groups: as for
    :func:`divergent.analyses.specialization.specialization` (None, 'builtin', a file, a mapping)."""
    from .specialization import check_split, top1

    store = as_store(store)
    sd = check_split(store, split)
    names = list(sd.class_names)
    _, grp = cg.resolve_groups(groups, names)
    pa, ca = top1(store, base, split)
    gal, conf = [], []
    for cat, m in reps.items():
        pb, cb = top1(store, m, split)
        tag = {"model_a": base, "model_b": m, "category": cat}
        g = select_gallery(sd.labels, pa, pb, ca, cb, names, ids=sd.ids, groups=grp, per_group=per_group)
        gal.append(g.assign(**tag)[[*tag, *GALLERY_COLUMNS]])
        c = confusion_difference(sd.labels, pa, pb, names, max_classes=max_classes)
        conf.append(c.assign(**tag)[[*tag, *CONFUSION_COLUMNS]])
    if not reps:
        return (pd.DataFrame(columns=["model_a", "model_b", "category", *GALLERY_COLUMNS]),
                pd.DataFrame(columns=["model_a", "model_b", "category", *CONFUSION_COLUMNS]))
    return pd.concat(gal, ignore_index=True), pd.concat(conf, ignore_index=True)
