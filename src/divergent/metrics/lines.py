"""Accuracy- and agreement-on-the-line (Miller et al. 2021; Baek et al. 2022) and ATC (Garg et al. 2022).

Pure functions on arrays. Every function that fits or applies a line works along the last
axis, so a leading axis of bootstrap resamples is carried through unchanged.

Probit scale: ``probit(p) = Phi^-1(clip(p, 1e-4, 1 - 1e-4))``.
ALine-S and ALine-D (Baek et al. 2022, Algorithm 1) are written out in docs/shift.md.
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from ..errors import DivergentError
from .relationships import ols_slope

#: accuracies and agreements are clipped to [CLIP, 1 - CLIP] before the probit transform
CLIP = 1e-4
#: the agreement line must explain at least this share of the variance for the lines to "hold"
R2_MIN = 0.8
ATC_SCORES = ("negent", "maxconf")


def probit(p) -> np.ndarray:
    """Phi^-1 of accuracies / agreements clipped to [1e-4, 1 - 1e-4]."""
    return ndtri(np.clip(np.asarray(p, dtype=np.float64), CLIP, 1.0 - CLIP))


def inv_probit(z) -> np.ndarray:
    """Phi: back from the probit scale to a fraction."""
    return ndtr(np.asarray(z, dtype=np.float64))


def fit_line(x, y) -> dict[str, np.ndarray]:
    """OLS of y on x along the last axis: {'slope', 'bias', 'r2'} (NaN where x does not vary).

    R^2 is the squared Pearson correlation (NaN where x or y does not vary).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    slope = ols_slope(x, y)
    bias = y.mean(axis=-1) - slope * x.mean(axis=-1)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx, syy, sxy = (xc * xc).sum(-1), (yc * yc).sum(-1), (xc * yc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (sxx > 0) & (syy > 0)
        r2 = np.where(ok, sxy * sxy / np.where(ok, sxx * syy, 1.0), np.nan)
    return {"slope": slope, "bias": bias, "r2": r2}


def pair_index(n_models: int) -> np.ndarray:
    """(P, 2) model indices of every unordered pair i < j, in row-major order."""
    i, j = np.triu_indices(n_models, k=1)
    return np.stack([i, j], axis=1)


def aline_s(acc_id, agr_id, agr_ood) -> dict[str, np.ndarray]:
    """ALine-S: fit probit(agr_ood) = a probit(agr_id) + b over pairs, then apply the line to
    each model's ID accuracy: acc_ood = Phi(a probit(acc_id) + b). Returns {'estimate', 'slope', 'bias'}."""
    fit = fit_line(probit(agr_id), probit(agr_ood))
    a, b = fit["slope"], fit["bias"]
    est = inv_probit(a[..., None] * probit(acc_id) + b[..., None])
    return {"estimate": est, "slope": a, "bias": b}


def aline_d(acc_id, agr_id, agr_ood, pairs=None) -> dict[str, np.ndarray]:
    """ALine-D: the shifted accuracies w_i = probit(acc_ood_i) that solve, in least squares over pairs,

        (w_i + w_j) / 2 = probit(agr_ood_ij) + a ((probit(acc_id_i) + probit(acc_id_j)) / 2 - probit(agr_id_ij))

    where a is the slope of the agreement line (the bias cancels). Needs >= 3 models (with only
    pairs of a bipartite graph the system is singular). Returns {'estimate', 'slope'}.
    """
    acc_id = np.asarray(acc_id, np.float64)
    agr_id, agr_ood = np.asarray(agr_id, np.float64), np.asarray(agr_ood, np.float64)
    m = acc_id.shape[-1]
    pairs = pair_index(m) if pairs is None else np.asarray(pairs, dtype=np.int64)
    if m < 3:
        raise DivergentError(f"ALine-D needs at least 3 models, got {m}", "add models (or use ALine-S)")
    A = np.zeros((len(pairs), m))
    A[np.arange(len(pairs)), pairs[:, 0]] = 0.5
    A[np.arange(len(pairs)), pairs[:, 1]] += 0.5
    if np.linalg.matrix_rank(A) < m:
        raise DivergentError("the ALine-D system is singular for these pairs",
                             "give every pair of at least 3 models (the pair graph needs an odd cycle)")
    a = fit_line(probit(agr_id), probit(agr_ood))["slope"]
    pid = probit(acc_id)
    rhs = probit(agr_ood) + a[..., None] * ((pid[..., pairs[:, 0]] + pid[..., pairs[:, 1]]) / 2 - probit(agr_id))
    pinv = np.linalg.pinv(A)  # (m, P): the least-squares solution of A w = rhs for every resample at once
    w = rhs @ pinv.T
    return {"estimate": inv_probit(w), "slope": a}


def atc_score(probs: np.ndarray, kind: str = "negent") -> np.ndarray:
    """Per-example confidence score of ATC: negative entropy sum p log p (0 log 0 = 0), or max p."""
    p = np.asarray(probs, dtype=np.float64)
    if kind == "negent":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    if kind == "maxconf":
        return p.max(axis=1)
    raise DivergentError(f"unknown ATC score {kind!r}", f"use one of {', '.join(ATC_SCORES)}")


def atc_threshold(scores, correct) -> float:
    """The threshold t fitted on labelled in-distribution data: with k = number of errors, t is
    the (k+1)-th smallest score, so the share of scores >= t equals the accuracy (exactly, when
    no other score ties with t); +inf when every prediction is wrong."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    correct = np.asarray(correct, dtype=bool)
    if len(s) != len(correct) or len(s) == 0:
        raise DivergentError("ATC needs one score per labelled example", "pass scores and correctness of the same examples")
    k = int(len(correct) - correct.sum())
    return float(s[k]) if k < len(s) else float("inf")


def atc_estimate(scores, threshold: float) -> float:
    """ATC's accuracy estimate on unlabelled data: the share of scores at or above the threshold."""
    return float(np.mean(np.asarray(scores, dtype=np.float64) >= threshold))


def line_checks(fits: dict[str, dict[str, np.ndarray]], intervals: dict[str, tuple[float, float]],
                r2_min: float = R2_MIN) -> list[str]:
    """Why the lines do not hold (empty: they hold). ``fits`` = {'accuracy': fit, 'agreement': fit}
    (point estimates); ``intervals`` = {'<line>_<param>': (lo, hi)} from the bootstrap."""
    why = []
    r2 = float(fits["agreement"]["r2"])
    if not r2 >= r2_min:
        why.append(f"agreement-line R^2 {r2:.3f} < {r2_min:g}")
    for p, plural in (("slope", "slopes"), ("bias", "biases")):
        lo_a, hi_a = intervals.get(f"accuracy_{p}", (np.nan, np.nan))
        lo_g, hi_g = intervals.get(f"agreement_{p}", (np.nan, np.nan))
        if all(np.isfinite([lo_a, hi_a, lo_g, hi_g])) and (hi_a < lo_g or hi_g < lo_a):
            why.append(f"the {plural} differ beyond their intervals (accuracy [{lo_a:.3f}, {hi_a:.3f}], "
                       f"agreement [{lo_g:.3f}, {hi_g:.3f}])")
    return why
