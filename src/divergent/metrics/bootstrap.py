"""Bootstrap intervals: per-pair resampling of outcome counts, and shared example resamples."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..conventions import CI_LEVEL, N_BOOT


def count_bootstrap(counts: np.ndarray, stat: Callable[[np.ndarray], dict[str, np.ndarray]], *,
                    n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0,
                    chunk: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile intervals of `stat(counts)` by multinomial resampling of the counts (P, K).

    Resampling the counts of the per-example joint outcomes is the paired (example-level)
    bootstrap of any statistic that depends only on those counts.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out: dict[str, list] = {}
    for s in range(0, len(counts), chunk):
        c = counts[s : s + chunk]
        n = c.sum(axis=1)
        p = c / np.maximum(n, 1)[:, None]
        draws = rng.multinomial(n[None, :], p[None, :, :], size=(n_boot, len(c)))  # (B, P, K)
        vals = stat(draws)
        for k, v in vals.items():
            lo, hi = np.nanpercentile(v, q, axis=0) if np.isfinite(v).any() else (np.full(len(c), np.nan),) * 2
            out.setdefault(k, []).append((lo, hi))
    return {k: (np.concatenate([x[0] for x in v]), np.concatenate([x[1] for x in v])) for k, v in out.items()}


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
