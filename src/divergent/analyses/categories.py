"""Statistics across pairs (category means, Fig. 1 / Fig. 8) with shared example resamples."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..cards import CATEGORY_ORDER
from ..conventions import CI_LEVEL, N_BOOT, TEST
from ..metrics.bootstrap import percentile_intervals, shared_resamples
from ..metrics.pairs import N_CODES, metrics_from_counts
from ._select import as_store
from .pairs import pair_outcome_codes, pairs


def shared_counts(codes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Code counts (P, 16) of P pairs on one shared example resample `idx`."""
    p = codes.shape[0]
    keys = (np.arange(p, dtype=np.int64)[:, None] * N_CODES + codes[:, idx]).ravel()
    return np.bincount(keys, minlength=p * N_CODES).reshape(p, N_CODES)


def shared_bootstrap(codes: np.ndarray, stat, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """stat(counts (P, 16)) -> vector, recomputed on `n_boot` example resamples shared by all pairs."""
    return np.stack([stat(shared_counts(codes, idx)) for idx in shared_resamples(codes.shape[1], n_boot=n_boot, seed=seed)])


def category_summary(store, *, base: str, split: str = TEST, metrics=("error_inconsistency", "both_correct",
                     "both_wrong", "ensemble_acc", "gain_vs_best", "conversion_rate"), acc_band=None,
                     calibrated: bool = True, n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0,
                     table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean of each metric over the base's pairs in each category, with shared-resample intervals.

    Columns: category, metric, mean, lo, hi, n_pairs. Pairs are resampled together (the same
    examples for every pair), so the intervals account for pairs sharing their test set.
    """
    store = as_store(store)
    pt = table if table is not None else pairs(store, split=split, base=base, acc_band=acc_band,
                                               calibrated=calibrated, n_boot=0)
    pt = pt[pt["missing_reason"].fillna("").str.startswith("decision-only") == False]  # noqa: E712
    plist = list(zip(pt["model_a"], pt["model_b"]))
    codes_d = pair_outcome_codes(store, plist, split=split, calibrated=calibrated, as_codes=True)
    codes = np.stack([codes_d[ab] for ab in plist])
    cats = pt["category"].to_numpy()
    order = [c for c in CATEGORY_ORDER if c in set(cats)] + sorted(set(cats) - set(CATEGORY_ORDER))

    def stat(counts):
        m = metrics_from_counts(counts)
        return np.array([[np.nanmean(m[k][cats == c]) if (cats == c).any() else np.nan for k in metrics] for c in order])

    point = stat(np.stack([np.bincount(c, minlength=N_CODES) for c in codes]))
    boots = shared_bootstrap(codes, stat, n_boot=n_boot, seed=seed) if n_boot else None
    nan = np.full(point.shape, np.nan)
    lo, hi = percentile_intervals(boots, level) if boots is not None else (nan, nan)
    rows = []
    for i, c in enumerate(order):
        for j, k in enumerate(metrics):
            rows.append({"category": c, "metric": k, "mean": point[i, j], "lo": lo[i, j], "hi": hi[i, j],
                         "n_pairs": int((cats == c).sum())})
    return pd.DataFrame(rows)
