"""Bootstrap intervals: per-pair resampling of outcome counts, shared example resamples, and the
one definition of a percentile interval (:func:`percentile_interval` for one statistic,
:func:`percentile_intervals` for many at once)."""
from __future__ import annotations

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
