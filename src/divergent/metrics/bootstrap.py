"""Bootstrap intervals: per-pair resampling of outcome counts, and shared example resamples."""
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
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def draw(c):
        n = c.sum(axis=1)
        p = c / np.maximum(n, 1)[:, None]
        return rng.multinomial(n[None, :], p[None, :, :], size=(n_boot, len(c)))  # (B, P, K)

    def summarise(draws):
        return {k: _percentiles(v, q, draws.shape[1]) for k, v in stat(draws).items()}

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


def _percentiles(v: np.ndarray, q: list[float], n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """np.nanpercentile(v, q, axis=0) (NaN where nothing is finite), with the NaN-free columns by
    np.percentile: the same numbers (nanpercentile drops the NaNs of a column and then takes the
    same quantile), several times faster."""
    if not np.isfinite(v).any():
        return (np.full(n_cols, np.nan),) * 2
    nan_cols = np.isnan(v).any(axis=0)
    if not nan_cols.any():
        lo, hi = np.percentile(v, q, axis=0)
        return lo, hi
    res = np.empty((2,) + v.shape[1:])
    res[:, ~nan_cols] = np.percentile(v[:, ~nan_cols], q, axis=0)
    res[:, nan_cols] = np.nanpercentile(v[:, nan_cols], q, axis=0)
    return res[0], res[1]


def shared_resamples(n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> Iterator[np.ndarray]:
    """Example-index resamples shared by every pair (for statistics across pairs)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, size=n)


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
