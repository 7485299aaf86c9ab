"""VOC average precision (2007 11-point and all-point) on hand-built cases, and top-1 accuracy."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.metrics.ranking import (
    from_voc_codes, per_class_ap, top1_accuracy, voc07_ap, voc07_map, voc_ap, voc_map,
)


def devkit_11pt(confidence, gt):
    """Literal transcription of VOCevalcls.m (VOC 2007 devkit); gt: 1 pos, -1 neg, 0 difficult."""
    si = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    gt = np.asarray(gt)
    tp = np.cumsum(gt[si] > 0)
    fp = np.cumsum(gt[si] < 0)
    rec = tp / np.sum(gt > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tp / (fp + tp)
    ap = 0.0
    for t in np.arange(0, 1.1, 0.1):
        sel = prec[rec >= t]
        sel = sel[~np.isnan(sel)]
        ap += (sel.max() if sel.size else 0.0) / 11
    return ap


def test_11point_hand_case():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    gt = [1, 0, 1, 0, 1]
    # rec 1/3,1/3,2/3,2/3,1 ; prec 1,.5,.667,.5,.6 -> 4 x 1 + 3 x 2/3 + 4 x 0.6
    assert voc07_ap(scores, gt) == pytest.approx((4 + 2 + 2.4) / 11)


def test_all_point_hand_case():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    gt = [1, 0, 1, 0, 1]
    assert voc_ap(scores, gt) == pytest.approx((1 + 2 / 3 + 0.6) / 3)


def test_perfect_and_worst_rankings():
    assert voc07_ap([3, 2, 1, 0], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert voc_ap([3, 2, 1, 0], [1, 1, 0, 0]) == pytest.approx(1.0)
    # single positive ranked last of 4: precision 1/4 at recall 1
    assert voc07_ap([3, 2, 1, 0], [0, 0, 0, 1]) == pytest.approx(0.25)
    assert voc_ap([3, 2, 1, 0], [0, 0, 0, 1]) == pytest.approx(0.25)


def test_difficult_are_ignored():
    scores = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5]
    gt = [0, 1, 0, 1, 0, 1]  # 0/1 labels
    diff = [True, False, False, False, False, False]  # the top-ranked negative is difficult
    codes = [0, 1, -1, 1, -1, 1]
    assert voc07_ap(scores, gt, diff) == pytest.approx(devkit_11pt(scores, codes))
    assert voc07_ap(scores, gt, diff) == pytest.approx(voc07_ap(scores[1:], gt[1:]))
    # a difficult positive is ignored too
    assert voc07_ap([0.9, 0.1], [1, 1], [False, True]) == pytest.approx(1.0)


def test_matches_devkit_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 60))
        codes = rng.choice([-1, 0, 1], size=n, p=[0.6, 0.1, 0.3])
        codes[0] = 1
        conf = np.round(rng.normal(size=n), 1)  # ties happen
        labels, diff = from_voc_codes(codes)
        assert voc07_ap(conf, labels, diff) == pytest.approx(devkit_11pt(conf, codes), abs=1e-12)


def test_all_point_vs_sklearn_when_precision_is_monotone():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[0] = 1
        s = rng.normal(size=40) + y
        # interpolation never lowers precision: VOC all-point >= sklearn's step AP
        assert voc_ap(s, y) >= average_precision_score(y, s) - 1e-12
    y = np.array([1, 1, 1, 0, 0, 1, 0, 0])
    s = -np.arange(8.0)
    # precision at the positives: 1,1,1,4/6 is non-increasing -> both agree
    assert voc_ap(s, y) == pytest.approx(average_precision_score(y, s))


def test_ties_keep_example_order():
    assert voc07_ap([1.0, 1.0], [1, 0]) == pytest.approx(1.0)
    assert voc07_ap([1.0, 1.0], [0, 1]) == pytest.approx(0.5)


def test_map_and_errors():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.9]])
    labels = np.array([[1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(per_class_ap(scores, labels), [1.0, 1.0])
    assert voc07_map(scores, labels) == pytest.approx(1.0)
    assert voc_map(scores, labels) == pytest.approx(1.0)
    with pytest.raises(DivergentError, match="no .*positive"):
        voc07_map(scores, np.array([[1, 0], [0, 0], [1, 0]]))
    with pytest.raises(DivergentError):
        per_class_ap(scores, labels[:2])
    with pytest.raises(DivergentError):
        from_voc_codes([2, 0])


def test_top1_accuracy_ties_to_lowest():
    scores = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    assert top1_accuracy(scores, np.array([0, 1, 1])) == pytest.approx(2 / 3)
