"""Bootstrap intervals: per-pair resampling of outcome counts, shared example resamples, the
one definition of a percentile interval (:func:`percentile_interval` for one statistic,
:func:`percentile_intervals` for many at once) and of a BCa interval (:func:`bca_interval`, with
the leave-one-out jackknife it needs: :func:`jackknife_weights`, :func:`jackknife_values`).

Which interval is used where, and why: docs/report.md ("Intervals")."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..conventions import CI_LEVEL, N_BOOT, threads


def count_bootstrap(counts: np.ndarray, stat: Callable[[np.ndarray], dict[str, np.ndarray]], *,
                    n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0,
                    chunk: int = 256, workers: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile intervals of `stat(counts)` by multinomial resampling of the counts (P, K).

    Resampling the counts of the per-example joint outcomes is the paired (example-level)
    bootstrap of any statistic that depends only on those counts. The draws come from one
    generator, chunk after chunk in order; `stat` and the percentiles of each chunk run on
    `workers` threads (default: divergent.conventions.threads()) while the next chunk is drawn,
    so the intervals do not depend on `workers`.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    rng = np.random.default_rng(seed)

    def draw(c):
        n = c.sum(axis=1)
        p = c / np.maximum(n, 1)[:, None]
        return rng.multinomial(n[None, :], p[None, :, :], size=(n_boot, len(c)))  # (B, P, K)

    def summarise(draws):
        return {k: percentile_intervals(v, level) for k, v in stat(draws).items()}

    starts = range(0, len(counts), chunk)
    workers = threads() if workers is None else max(1, int(workers))
    if workers == 1 or len(starts) == 1:
        parts = [summarise(draw(counts[s : s + chunk])) for s in starts]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futures: list = []
            for i, s in enumerate(starts):
                futures.append(ex.submit(summarise, draw(counts[s : s + chunk])))  # drawn here, in order
                if i >= workers:  # at most workers + 1 chunks of draws held at once
                    futures[i - workers].result()
            parts = [f.result() for f in futures]
    out: dict[str, list] = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).append(v)
    return {k: (np.concatenate([x[0] for x in v]), np.concatenate([x[1] for x in v])) for k, v in out.items()}


def shared_resamples(n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> Iterator[np.ndarray]:
    """Example-index resamples shared by every pair (for statistics across pairs)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, size=n)


def resample_weights(n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) float64 multinomial counts: one shared set of example resamples, as weights."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def percent_points(level: float = CI_LEVEL) -> list[float]:
    """The two percent points of a central `level` interval: [(1 - level) / 2, (1 + level) / 2] x 100."""
    return [(1 - level) / 2 * 100, (1 + level) / 2 * 100]


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL, *, min_n: int = 1) -> tuple[float, float]:
    """The percentile interval of one statistic's bootstrap values: the non-finite values are left
    out; (NaN, NaN) when fewer than `min_n` finite values remain."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.size < min_n:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, percent_points(level))
    return float(lo), float(hi)


def percentile_intervals(values: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each of shape values.shape[1:]: the percentile interval of every column of the
    bootstrap values (resamples along axis 0), NaN resamples left out per column, NaN where a
    column has none. Equal to np.nanpercentile(values, percent_points(level), axis=0); the
    columns without NaN go through np.percentile (the same numbers, several times faster)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        lo, hi = percentile_intervals(v[:, None], level)
        return lo[0], hi[0]
    q = percent_points(level)
    nan = np.isnan(v)
    if nan.all():
        return np.full(v.shape[1:], np.nan), np.full(v.shape[1:], np.nan)
    nan_cols = nan.any(axis=0)
    if not nan_cols.any():
        lo, hi = np.percentile(v, q, axis=0)
        return lo, hi
    some = nan_cols & ~nan.all(axis=0)  # columns with NaN and with values; all-NaN columns stay NaN
    res = np.full((2,) + v.shape[1:], np.nan)
    res[:, ~nan_cols] = np.percentile(v[:, ~nan_cols], q, axis=0)
    res[:, some] = np.nanpercentile(v[:, some], q, axis=0)
    return res[0], res[1]


class LeaveOneOut:
    """Rows s..s+k-1 of the leave-one-out weights (1 - identity) over n examples, without
    building them: ``w @ X`` is X's column sums minus row i (O(k x n) work, not O(k x n x n)),
    ``w.sum(1)`` is n - 1; ``np.asarray(w)`` gives the (k, n) matrix. Any statistic written for
    :func:`resample_weights` that uses its weights only through ``@`` and ``.sum`` accepts it."""

    def __init__(self, n: int, start: int, stop: int):
        self.n, self.rows = n, np.arange(start, stop)
        self.shape = (len(self.rows), n)

    def __matmul__(self, x):
        x = np.asarray(x, dtype=np.float64)
        return x.sum(axis=0)[None, ...] - x[self.rows]

    def sum(self, axis=None, keepdims: bool = False):
        if axis in (1, -1):
            out = np.full(len(self.rows), float(self.n - 1))
            return out[:, None] if keepdims else out
        return np.asarray(self).sum(axis=axis, keepdims=keepdims)

    def __array__(self, dtype=None, copy=None):
        w = np.ones(self.shape, dtype=dtype or np.float64)
        w[np.arange(len(self.rows)), self.rows] = 0
        return w


def jackknife_weights(n: int, *, chunk: int = 4096) -> Iterator[LeaveOneOut]:
    """The n leave-one-out resamples as example weights, in chunks of rows of (1 - identity):
    row i leaves out example i. The jackknife of any statistic written for :func:`resample_weights`."""
    for s in range(0, n, chunk):
        yield LeaveOneOut(n, s, min(n, s + chunk))


def jackknife_values(stat: Callable, n: int, *, chunk: int = 4096) -> np.ndarray:
    """(n,) leave-one-out values of `stat(weights)` (a statistic of (B, n) example weights -> (B,))."""
    return np.concatenate([np.asarray(stat(w), dtype=np.float64).reshape(-1)
                           for w in jackknife_weights(n, chunk=chunk)])


def _norm_ppf(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def bca_interval(estimate: float, values: np.ndarray, jackknife: np.ndarray, level: float = CI_LEVEL, *,
                 min_n: int = 1) -> tuple[float, float]:
    """The bias-corrected and accelerated (BCa) interval (Efron 1987; Efron & Tibshirani 1993, ch. 14)
    of a statistic with point estimate `estimate`, bootstrap values `values` and leave-one-out
    jackknife values `jackknife`.

    Bias correction z0 = Phi^-1(share of bootstrap values below the estimate, ties counted half);
    acceleration a = sum(d^3) / (6 sum(d^2)^1.5), d = mean(jackknife) - jackknife; the interval is
    the percentile interval at the adjusted points Phi(z0 + (z0 + z) / (1 - a (z0 + z))) for
    z = Phi^-1((1 -+ level) / 2). Without ties this is scipy.stats.bootstrap(method='BCa') on the
    same bootstrap values. For a bounded, discrete statistic (a rank correlation over a few pairs)
    whose estimate sits at the edge of the percentile interval, BCa moves the interval to where
    the estimate's sampling distribution is. Non-finite values are left out; (NaN, NaN) when fewer
    than `min_n` finite bootstrap values remain, when the estimate is not finite, or when every
    bootstrap value lies on one side of the estimate (no bias correction is defined).
    """
    nan = (float("nan"), float("nan"))
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.size < min_n or estimate is None or not math.isfinite(float(estimate)):
        return nan
    est = float(estimate)
    p0 = (np.count_nonzero(v < est) + 0.5 * np.count_nonzero(v == est)) / v.size
    if not 0.0 < p0 < 1.0:
        return nan
    z0 = _norm_ppf(p0)
    j = np.asarray(jackknife, dtype=np.float64).ravel()
    j = j[np.isfinite(j)]
    d = j.mean() - j if j.size else np.zeros(1)
    den = 6.0 * float((d * d).sum()) ** 1.5
    a = float((d ** 3).sum()) / den if den > 0 else 0.0
    pts = []
    for q in percent_points(level):
        z = _norm_ppf(q / 100)
        pts.append(100 * _norm_cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    lo, hi = np.percentile(v, pts)
    return float(lo), float(hi)
