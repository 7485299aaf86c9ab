"""Figure 2 summaries from a store: ensemble gain and conversion rate against error inconsistency,
pooled over all pairs, with a shared-resample bootstrap interval and category as a covariate.

Input is the pairs table (one row per pair: model_a, model_b, category, error_inconsistency,
ensemble_acc, gain_vs_best, gain_vs_mean, conversion_rate). Intervals need the per-example
outcomes, which :func:`pair_outcome_codes` recomputes from the store with the core's reference
arithmetic (ensemble = mean of calibrated probabilities).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..conventions import CI_LEVEL, N_BOOT, TEST
from ..errors import DivergentError
from ..metrics import relationships as rm
from ..metrics.pairs import N_CODES, metrics_from_counts
from ..metrics.probs import argmax_lowest
from ._select import as_store
from .specialization import check_split, prob_blocks, temperature_of

#: elements (rows x classes x models) of float64 probabilities held at once
_BUDGET = 1 << 24
_REQUIRED = ("model_a", "model_b")


def _check_pairs(pairs: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in pairs.columns]
    if missing:
        raise DivergentError(f"the pairs table lacks column(s) {', '.join(missing)}",
                             "pass the table from divergent.analyses.pairs (one row per pair)")


def relationship_table(pairs: pd.DataFrame, *, x: str = "error_inconsistency",
                       responses: Sequence[str] = rm.RESPONSES) -> pd.DataFrame:
    """Point estimates only (no intervals) from the pairs table's own columns: one row per
    (response, statistic) with slope, Spearman rho and within-category slope."""
    _check_pairs(pairs, [x, *responses])
    cat = pairs["category"].astype(str).to_numpy() if "category" in pairs.columns else None
    cat_codes = None if cat is None else np.unique(cat, return_inverse=True)[1]
    rows = []
    for r in responses:
        st = rm.relationship_stats(pairs[x].to_numpy(float), pairs[r].to_numpy(float), cat_codes)
        for s in rm.STATISTICS:
            rows.append({"x": x, "response": r, "statistic": s, "estimate": float(st[s]), "n_pairs": len(pairs)})
    return pd.DataFrame(rows)


def pair_outcome_codes(store, pairs: pd.DataFrame, split: str = TEST, *, calibrated: bool = True) -> np.ndarray:
    """(P, N) uint8 outcome codes (A correct, B correct, ensemble correct) of every pair on ``split``.

    The ensemble is the mean of the two calibrated probability vectors (reference arithmetic,
    argmax ties to the lowest class). Models are streamed in row blocks; each model's
    probabilities are computed once per block however many pairs it is in.
    """
    store = as_store(store)
    _check_pairs(pairs, _REQUIRED)
    sd = check_split(store, split)
    pair_list = list(pairs[list(_REQUIRED)].itertuples(index=False, name=None))
    models = sorted({m for pr in pair_list for m in pr})
    for m in models:
        temperature_of(store, m, split, calibrated)
    block = max(16, min(8192, _BUDGET // max(1, len(models) * sd.n_classes)))
    gens = {m: prob_blocks(store, m, split, calibrated=calibrated, block=block) for m in models}
    labels = np.asarray(sd.labels)
    codes = np.zeros((len(pair_list), len(labels)), dtype=np.uint8)
    for s in range(0, len(labels), block):
        probs = {}
        for m in models:
            start, p = next(gens[m])
            if start != s or p.shape[0] != min(block, len(labels) - s):
                raise DivergentError(f"model {m!r} does not cover the {len(labels)} examples of split {split!r}",
                                     "re-extract it on this split")
            probs[m] = p
        y = labels[s : s + block]
        pred = {m: argmax_lowest(p) for m, p in probs.items()}
        for i, (a, b) in enumerate(pair_list):
            ens = argmax_lowest(probs[a] + probs[b])  # mean of two = sum / 2: same argmax, exact
            codes[i, s : s + block] = rm.pair_codes(pred[a] == y, pred[b] == y, ens == y)[0]
    return codes


def relationships(store, pairs: pd.DataFrame, split: str = TEST, *, n_boot: int = N_BOOT, seed: int = 0,
                  calibrated: bool = True, x: str = "error_inconsistency",
                  responses: Sequence[str] = rm.RESPONSES, level: float = CI_LEVEL,
                  codes: np.ndarray | None = None) -> pd.DataFrame:
    """Figure 2 pooled over all pairs, with shared-resample bootstrap intervals.

    One row per (response, statistic): ``slope`` (OLS of the response on ``x``), ``spearman``
    (rank correlation) and ``within_category_slope`` (slope of ``x`` in OLS with category
    dummies, when the pairs table has a 'category' column). Estimates are recomputed from the
    per-example outcome codes (pass ``codes`` from :func:`pair_outcome_codes` to reuse them);
    if the pairs table's own metric columns disagree with the recomputation a warning says so.
    """
    _check_pairs(pairs, _REQUIRED)
    if codes is None:
        codes = pair_outcome_codes(store, pairs, split, calibrated=calibrated)
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.shape[0] != len(pairs):
        raise DivergentError(f"codes has {codes.shape[0]} rows but the pairs table {len(pairs)}",
                             "pass the codes computed for this pairs table")
    counts = np.stack([np.bincount(c & 7, minlength=N_CODES) for c in codes])
    recomputed = metrics_from_counts(counts)
    for col in {x, *responses}:
        if col in pairs.columns:
            diff = np.nanmax(np.abs(pairs[col].to_numpy(float) - recomputed[col]), initial=0.0)
            if diff > 1e-9:
                warnings.warn(f"pairs table column {col!r} differs from the per-example recomputation by up to "
                              f"{diff:.3g} (different split, calibration or ensemble rule?)", stacklevel=2)
    category = pairs["category"].to_numpy() if "category" in pairs.columns else None
    keys = list(pairs[list(_REQUIRED)].astype(str).itertuples(index=False, name=None))
    rows = rm.relationship_bootstrap(codes, category, x=x, responses=responses, n_boot=n_boot, level=level,
                                     seed=seed, pair_keys=keys)
    out = pd.DataFrame(rows)
    out.insert(0, "split", split)
    out["calibrated"] = calibrated
    out["seed"] = seed
    return out
