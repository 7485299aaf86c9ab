"""Pair metrics of Sections 4.1-4.2, as pure functions of correctness vectors or outcome counts.

Every per-example outcome of a pair is a 4-bit code: bit 0 = A correct, bit 1 = B correct,
bit 2 = the ensemble (mean of calibrated probabilities) correct, bit 3 = A and B predict the
same class. The metrics depend only on the 16 code counts, so the paired bootstrap can resample
counts instead of examples.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

A_OK, B_OK, ENS_OK, AGREE = 1, 2, 4, 8
N_CODES = 16
#: the codes where exactly one of A and B is correct (the inconsistent examples)
INCONSISTENT_CODES: tuple[int, ...] = tuple(c for c in range(N_CODES) if bool(c & A_OK) != bool(c & B_OK))


class Metric(NamedTuple):
    """What a pair metric is: better when higher (None: neither), symmetric in A and B, and
    whether it needs probabilities (the ensemble's metrics; NaN for decision-only models)."""

    higher_is_better: bool | None
    symmetric: bool
    needs_probs: bool


METRICS: dict[str, Metric] = {
    "acc_a": Metric(True, False, False),
    "acc_b": Metric(True, False, False),
    "error_inconsistency": Metric(None, True, False),
    "both_correct": Metric(True, True, False),
    "both_wrong": Metric(False, True, False),
    "agreement": Metric(None, True, False),
    "error_consistency": Metric(None, True, False),
    "ensemble_acc": Metric(True, True, True),
    "gain_vs_best": Metric(True, True, True),
    "gain_vs_mean": Metric(True, True, True),
    "conversion_rate": Metric(True, True, True),
}


def encode(correct_a, correct_b, ensemble_correct=None, agree=None) -> np.ndarray:
    """Per-example 4-bit outcome codes (uint8)."""
    code = np.asarray(correct_a, dtype=np.uint8) * A_OK
    code |= np.asarray(correct_b, dtype=np.uint8) * B_OK
    if ensemble_correct is not None:
        code |= np.asarray(ensemble_correct, dtype=np.uint8) * ENS_OK
    if agree is not None:
        code |= np.asarray(agree, dtype=np.uint8) * AGREE
    return code


def code_counts(codes: np.ndarray) -> np.ndarray:
    """(16,) int64 counts of each outcome code."""
    return np.bincount(np.asarray(codes, dtype=np.uint8), minlength=N_CODES).astype(np.int64)


def _bitsum(counts: np.ndarray, mask: int, value: int) -> np.ndarray:
    sel = [c for c in range(N_CODES) if (c & mask) == value]
    return counts[..., sel].sum(axis=-1)


def metrics_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """All pair metrics from code counts of shape (..., 16). Missing values are NaN."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_a = _bitsum(counts, A_OK, A_OK) / n
        acc_b = _bitsum(counts, B_OK, B_OK) / n
        both_c = _bitsum(counts, A_OK | B_OK, A_OK | B_OK) / n
        both_w = _bitsum(counts, A_OK | B_OK, 0) / n
        inc_n = _bitsum(counts, A_OK | B_OK, A_OK) + _bitsum(counts, A_OK | B_OK, B_OK)
        inc = inc_n / n
        agree = _bitsum(counts, AGREE, AGREE) / n
        ens = _bitsum(counts, ENS_OK, ENS_OK) / n
        conv_n = _bitsum(counts, A_OK | B_OK | ENS_OK, A_OK | ENS_OK) + _bitsum(counts, A_OK | B_OK | ENS_OK, B_OK | ENS_OK)
        conv = np.where(inc_n > 0, conv_n / np.where(inc_n > 0, inc_n, 1), np.nan)
        kappa = error_consistency_from_rates(acc_a, acc_b, both_c + both_w)
    return {
        "acc_a": acc_a, "acc_b": acc_b, "error_inconsistency": inc, "both_correct": both_c,
        "both_wrong": both_w, "agreement": agree, "error_consistency": kappa, "ensemble_acc": ens,
        "gain_vs_best": ens - np.maximum(acc_a, acc_b), "gain_vs_mean": ens - (acc_a + acc_b) / 2,
        "conversion_rate": conv,
    }


def error_consistency_from_rates(acc_a, acc_b, c_obs):
    """Cohen's kappa on correctness (Geirhos et al. 2020); 1 when observed consistency is 1."""
    acc_a, acc_b, c_obs = (np.asarray(x, dtype=np.float64) for x in (acc_a, acc_b, c_obs))
    c_exp = acc_a * acc_b + (1 - acc_a) * (1 - acc_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = (c_obs - c_exp) / (1 - c_exp)
    return np.where(c_obs >= 1.0, 1.0, k)


# ---- the functional core on per-example vectors (torchmetrics style) -----------------------

def error_inconsistency(correct_a, correct_b) -> float:
    """Share of examples where exactly one of the two models is correct (Section 4)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return float(np.mean(a != b))


def error_consistency(correct_a, correct_b) -> float:
    """Cohen's kappa between two correctness vectors (Geirhos et al. 2020)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return float(error_consistency_from_rates(a.mean(), b.mean(), np.mean(a == b)))


def conversion_rate(correct_a, correct_b, ensemble_correct) -> float:
    """Share of the inconsistent examples that the ensemble gets right (NaN if there are none)."""
    a, b, e = (np.asarray(x, bool) for x in (correct_a, correct_b, ensemble_correct))
    inc = a != b
    return float(e[inc].mean()) if inc.any() else float("nan")


def reference_pair_codes(probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Outcome codes by the reference arithmetic on full float64 probability rows (slow, exact)."""
    from .probs import argmax_lowest

    pa, pb = argmax_lowest(probs_a), argmax_lowest(probs_b)
    ens = argmax_lowest(np.asarray(probs_a, np.float64) + np.asarray(probs_b, np.float64))
    return encode(pa == labels, pb == labels, ens == labels, pa == pb)
