"""Linear-evaluation metrics: top-1 accuracy, and the Pascal VOC average precisions.

VOC conventions (Everingham et al. 2010, the VOC devkit ``VOCevalcls.m`` / ``VOCap.m``):
examples are ranked by descending score (ties keep example order, as MATLAB's stable
``sort`` does); "difficult" labels count neither as true nor as false positives (they are
dropped); recall = TP / #positives, precision = TP / (TP + FP).

* VOC 2007 11-point interpolated AP: mean over t in {0, 0.1, ..., 1} of
  max(precision at recall >= t), 0 where no recall reaches t.
* All-point AP (VOC 2010+): the area under the precision envelope (precision made
  monotonically non-increasing from the right), summed where recall changes.

mAP is the unweighted mean over classes. A class without positive examples has no AP:
that is an error, never a made-up number.
"""
from __future__ import annotations

import numpy as np

from ..errors import DivergentError


def top1_correct(scores, labels) -> np.ndarray:
    """Per-example correctness of the row argmax (ties to the lowest class index)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise DivergentError(f"scores {scores.shape} and labels {labels.shape} do not line up",
                             "pass (examples x classes) scores and one label per example")
    return np.argmax(scores, axis=1) == labels


def top1_accuracy(scores, labels) -> float:
    """Fraction of examples whose highest score is the label."""
    return float(top1_correct(scores, labels).mean())


def from_voc_codes(codes) -> tuple[np.ndarray, np.ndarray]:
    """VOC ground-truth codes (1 positive, -1 negative, 0 difficult) -> (0/1 labels, difficult mask)."""
    codes = np.asarray(codes)
    if not np.isin(codes, (-1, 0, 1)).all():
        raise DivergentError("VOC ground-truth codes must be 1 (positive), -1 (negative) or 0 (difficult)")
    return (codes == 1).astype(np.int64), codes == 0


def _pr(scores, positive, difficult):
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive).astype(bool)
    if scores.ndim != 1 or positive.shape != scores.shape:
        raise DivergentError(f"scores {scores.shape} and labels {positive.shape} must be 1-D of one length")
    if not np.isfinite(scores).all():
        raise DivergentError("scores contain NaN or inf", "check the probe's logits")
    keep = np.ones_like(positive) if difficult is None else ~np.asarray(difficult, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    pos = positive[order][keep[order]]
    npos = int(pos.sum())
    if npos == 0:
        raise DivergentError("a class has no (non-difficult) positive examples, so its AP is undefined",
                             "evaluate on a split where every class has a positive example")
    tp = np.cumsum(pos)
    fp = np.cumsum(~pos)
    return tp / npos, tp / (tp + fp)


def voc07_ap(scores, positive, difficult=None) -> float:
    """VOC 2007 11-point interpolated average precision of one class."""
    rec, prec = _pr(scores, positive, difficult)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):  # 0:0.1:1 as in the devkit
        p = prec[rec >= t]
        ap += (p.max() if p.size else 0.0) / 11.0
    return float(ap)


def voc_ap(scores, positive, difficult=None) -> float:
    """All-point (VOC 2010+) average precision of one class."""
    rec, prec = _pr(scores, positive, difficult)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def per_class_ap(scores, labels, difficult=None, method: str = "11point") -> np.ndarray:
    """AP of every class (columns) of (examples x classes) scores and 0/1 labels."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != scores.shape:
        raise DivergentError(f"scores {scores.shape} and multi-hot labels {labels.shape} must have one shape")
    if difficult is not None and np.asarray(difficult).shape != labels.shape:
        raise DivergentError(f"the difficult mask has shape {np.asarray(difficult).shape}, the labels {labels.shape}")
    fn = {"11point": voc07_ap, "all": voc_ap}.get(method)
    if fn is None:
        raise DivergentError(f"unknown AP method {method!r}", "use '11point' (VOC 2007) or 'all' (all-point)")
    return np.array([
        fn(scores[:, k], labels[:, k], None if difficult is None else np.asarray(difficult)[:, k])
        for k in range(scores.shape[1])
    ])


def voc07_map(scores, labels, difficult=None) -> float:
    """VOC 2007 11-point mAP (mean over classes)."""
    return float(per_class_ap(scores, labels, difficult, "11point").mean())


def voc_map(scores, labels, difficult=None) -> float:
    """All-point mAP (mean over classes)."""
    return float(per_class_ap(scores, labels, difficult, "all").mean())
