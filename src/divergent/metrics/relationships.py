"""Figure 2 relationships pooled over pairs: OLS slope, Spearman rho, within-category slope, and a
bootstrap that resamples examples jointly across pairs (shared resamples).

Pure functions on arrays. Statistics are vectorised over leading axes so that bootstrap
resamples are computed in one call: x, y have shape (..., P) for P pairs.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from ..conventions import CI_LEVEL, N_BOOT
from ..errors import DivergentError
from .bootstrap import percentile_interval, shared_resamples
from .pairs import A_OK, B_OK, ENS_OK, N_CODES, encode, metrics_from_counts

#: the Figure 2 responses, plotted against error inconsistency
RESPONSES = ("gain_vs_best", "gain_vs_mean", "ensemble_acc", "conversion_rate")
STATISTICS = ("slope", "spearman", "within_category_slope")
#: bootstrap weights (resamples x examples) held at once
_CHUNK_ELEMENTS = 1 << 23


def ols_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x along the last axis (NaN when x is constant or has NaNs)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 0, (xc * yc).sum(axis=-1) / np.where(sxx > 0, sxx, 1), np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rank correlation along the last axis (average ranks for ties; = scipy.stats.spearmanr)."""
    rx = stats.rankdata(np.asarray(x, np.float64), axis=-1)
    ry = stats.rankdata(np.asarray(y, np.float64), axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=-1) / np.where(den > 0, den, 1), np.nan)


def within_slope(x: np.ndarray, y: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Slope of x in the OLS fit y ~ x + category dummies (the pooled within-category slope).

    ``category`` (P,) holds integer codes. Equals the slope after removing each category's
    mean from x and y; categories with a single pair contribute nothing.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cat = np.asarray(category)
    xc, yc = x.copy(), y.copy()
    for c in np.unique(cat):
        m = cat == c
        xc[..., m] -= x[..., m].mean(axis=-1, keepdims=True)
        yc[..., m] -= y[..., m].mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 1e-300, (xc * yc).sum(axis=-1) / np.where(sxx > 1e-300, sxx, 1), np.nan)


def relationship_stats(x: np.ndarray, y: np.ndarray, category: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{'slope', 'spearman', 'within_category_slope'} of y against x over pairs (last axis).

    Pairs with a non-finite x or y are dropped only when the arrays are 1-D (point estimates);
    the bootstrap passes the full (B, P) arrays and keeps NaN rows as NaN.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim == 1:
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        category = None if category is None else np.asarray(category)[ok]
    out = {"slope": ols_slope(x, y), "spearman": spearman(x, y)}
    out["within_category_slope"] = (within_slope(x, y, category) if category is not None
                                    else np.full(x.shape[:-1], np.nan))
    return out


def pair_codes(correct_a: np.ndarray, correct_b: np.ndarray, ensemble_correct: np.ndarray) -> np.ndarray:
    """Per-pair per-example outcome codes (P, N) uint8 in :mod:`metrics.pairs`' bit layout."""
    a, b, e = (np.atleast_2d(np.asarray(v, dtype=bool)) for v in (correct_a, correct_b, ensemble_correct))
    if not (a.shape == b.shape == e.shape):
        raise DivergentError(f"correct_a, correct_b and ensemble_correct differ in shape: {a.shape}, {b.shape}, {e.shape}",
                             "align every pair on the same examples (one row per pair)")
    return encode(a, b, e)


def code_indicator(codes: np.ndarray) -> np.ndarray:
    """(N, P * 8) float32 one-hot of each pair's 3-bit outcome code (A, B, ensemble correct)."""
    codes = np.asarray(codes, dtype=np.uint8) & (A_OK | B_OK | ENS_OK)
    p, n = codes.shape
    out = np.zeros((n, p, 8), dtype=np.float32)
    out[np.arange(n)[:, None], np.arange(p)[None, :], codes.T] = 1.0
    return out.reshape(n, p * 8)


def resampled_counts(codes: np.ndarray, weights: np.ndarray, indicator: np.ndarray | None = None) -> np.ndarray:
    """Outcome-code counts (B, P, 16) under example weights (B, N) (bootstrap multiplicities).

    One float32 matrix product; integer sums below 2**24 are exact in float32.
    """
    p = np.atleast_2d(codes).shape[0]
    ind = code_indicator(codes) if indicator is None else indicator
    w = np.asarray(weights, dtype=np.float32)
    out = np.zeros((w.shape[0], p, N_CODES), dtype=np.float64)
    out[:, :, :8] = (w @ ind).reshape(w.shape[0], p, 8)
    return out


def relationship_bootstrap(codes: np.ndarray, category: Sequence | None = None, *, x: str = "error_inconsistency",
                           responses: Sequence[str] = RESPONSES, n_boot: int = N_BOOT, level: float = CI_LEVEL,
                           seed: int = 0, pair_keys: Sequence | None = None) -> list[dict]:
    """Slope, Spearman rho and within-category slope of each response against ``x`` over the pairs,
    with percentile intervals from a shared-resample bootstrap.

    ``codes`` (P, N): per-pair per-example outcome codes on the same N examples (see
    :func:`pair_codes`). Each of the ``n_boot`` resamples draws one set of N example indices
    (:func:`metrics.bootstrap.shared_resamples`) used by every pair, recomputes every pair's
    metrics from the resampled code counts (:func:`metrics.pairs.metrics_from_counts`, the
    core's definitions) and then the statistic across pairs. This keeps the dependence between
    pairs that share a base model and the test examples. Examples are first put in a canonical
    order (and pairs too, sorted by ``pair_keys`` such as (model_a, model_b), when given), so
    the interval does not depend on example order (nor, with keys, on pair order). The point
    estimate drops pairs with a NaN metric; a resample whose statistic is NaN is left out of the
    interval (``n_boot`` in the output counts the finite ones). One dict per (response, statistic):
    response, statistic, estimate, ci_low, ci_high, se, n_pairs, n_examples, n_boot.
    """
    codes = np.atleast_2d(np.asarray(codes, dtype=np.uint8)) & (A_OK | B_OK | ENS_OK)
    p, n = codes.shape
    if p < 3:
        raise DivergentError(f"a relationship across pairs needs at least 3 pairs, got {p}",
                             "include more pairs (e.g. the base against every model in the accuracy band)")
    cat_codes = None
    if category is not None:
        cat = np.asarray(category, dtype=object)
        if cat.shape != (p,):
            raise DivergentError(f"category must have one entry per pair ({p}), got shape {cat.shape}")
        _, cat_codes = np.unique(cat.astype(str), return_inverse=True)
    # canonical order: pairs by `pair_keys` (e.g. model names) when given, then examples by
    # their outcome vectors (columns sorted lexicographically), so the seeded resamples depend on
    # the set of pairs and the multiset of per-example outcome vectors, not on either order
    if pair_keys is not None:
        if len(pair_keys) != p:
            raise DivergentError(f"pair_keys must have one entry per pair ({p}), got {len(pair_keys)}")
        order = sorted(range(p), key=lambda i: pair_keys[i])
        codes = codes[order]
        cat_codes = None if cat_codes is None else cat_codes[order]
    codes = codes[:, np.lexsort(codes[::-1])] if n else codes
    counts = np.stack([np.bincount(codes[i], minlength=N_CODES) for i in range(p)]).astype(np.float64)
    point_m = metrics_from_counts(counts)
    point = {r: relationship_stats(point_m[x], point_m[r], cat_codes) for r in responses}
    boot: dict[tuple[str, str], list[np.ndarray]] = {(r, s): [] for r in responses for s in STATISTICS}
    it = shared_resamples(n, n_boot=n_boot, seed=seed)
    ind = code_indicator(codes) if n_boot > 0 else None
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        w = np.stack([np.bincount(next(it), minlength=n) for _ in range(m)])
        mets = metrics_from_counts(resampled_counts(codes, w, ind))
        for r in responses:
            st = relationship_stats(mets[x], mets[r], cat_codes)
            for s in STATISTICS:
                boot[(r, s)].append(st[s])
        done += m
    rows = []
    for r in responses:
        for s in STATISTICS:
            v = np.concatenate(boot[(r, s)]) if boot[(r, s)] else np.array([])
            v = v[np.isfinite(v)]
            lo, hi = percentile_interval(v, level)
            rows.append({"x": x, "response": r, "statistic": s, "estimate": float(point[r][s]),
                         "ci_low": float(lo), "ci_high": float(hi), "se": float(v.std(ddof=1)) if v.size > 1 else np.nan,
                         "n_pairs": p, "n_examples": n, "n_boot": int(v.size)})
    return rows
