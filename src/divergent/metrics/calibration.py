"""Temperature scaling (Section 3.2): NLL, ECE and a robust bounded fit of T on the holdout."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from ..errors import DivergentError
from .probs import as_logits32

#: the search interval for log T: T in [1e-3, 1e2] (the paper reports T = 0.01 for some models)
LOG_T_BOUNDS = (math.log(1e-3), math.log(1e2))
N_BINS = 15


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, *, block: int = 8192) -> float:
    """Mean negative log-likelihood of float64 softmax(float32(logits)/T); lower is better."""
    labels = np.asarray(labels)
    total = 0.0
    n = len(labels)
    for s in range(0, n, block):
        z = as_logits32(logits[s : s + block]).astype(np.float64) / np.float64(temperature)
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        total += float((lse - z[np.arange(len(z)), labels[s : s + block]]).sum())
    return total / n


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error (top-1, equal-width bins [lo, hi), L1); lower is better.

    Binning matches torchmetrics' multiclass calibration error (bucketize, right=True).
    """
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    return ece_from_confidence(conf, pred == np.asarray(labels), n_bins)


def ece_from_confidence(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    n = len(conf)
    cnt = np.bincount(idx, minlength=n_bins)
    sconf = np.bincount(idx, weights=conf, minlength=n_bins)
    sacc = np.bincount(idx, weights=np.asarray(correct, dtype=np.float64), minlength=n_bins)
    return float(np.abs(sacc - sconf).sum() / n)


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float
    nll_after: float
    at_bound: bool
    n: int


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds=LOG_T_BOUNDS, grid: int = 25) -> TemperatureFit:
    """Minimise holdout NLL over log T in `bounds` by a grid bracket + bounded Brent search.

    NLL is convex in 1/T, hence unimodal in log T, so the bracket always holds the minimum.
    A fit that ends at a bound warns (the model may be degenerate or the bounds too narrow).
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise DivergentError("cannot fit a temperature on an empty split", "fit on a non-empty holdout")
    lo, hi = bounds
    xs = np.linspace(lo, hi, grid)
    vals = np.array([nll(logits, labels, math.exp(x)) for x in xs])
    i = int(np.nanargmin(vals))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, grid - 1)]
    res = minimize_scalar(lambda x: nll(logits, labels, math.exp(x)), bounds=(a, b), method="bounded",
                          options={"xatol": 1e-7})
    x_best, f_best = (res.x, res.fun) if res.fun <= vals[i] else (xs[i], vals[i])
    at_bound = bool(x_best - lo < 1e-3 or hi - x_best < 1e-3)
    if at_bound:
        warnings.warn(
            f"temperature fit ended at a bound (T = {math.exp(x_best):.4g}); the model may be "
            "degenerate on the fit split", stacklevel=2)
    return TemperatureFit(float(math.exp(x_best)), nll(logits, labels, 1.0), float(f_best), at_bound, len(labels))
