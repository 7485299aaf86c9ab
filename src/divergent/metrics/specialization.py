"""Specialization (Sections 4.3-4.4): confidence angles, their separation, per-class margins, group tests.

Pure functions on arrays. Model A is the base ("Model 1"), B the other model. A model's
confidence is its calibrated probability of its own top-1 class; the angle of an example in the
confidence-confidence plot is phi = atan2(conf_A, conf_B) in degrees, so phi > 45 means A is
the more confident and phi < 45 means B is. Outcome codes use the bit layout of
:mod:`divergent.metrics.pairs`: bit 0 = A correct, bit 1 = B correct.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats

from ..conventions import CI_LEVEL, N_BOOT
from ..errors import DivergentError
from .bootstrap import percentile_interval
from .pairs import A_OK, B_OK, encode
from .probs import argmax_lowest

NEITHER, ONLY_A, ONLY_B, BOTH = 0, A_OK, B_OK, A_OK | B_OK
#: outcome code -> name, in display order
OUTCOMES: dict[int, str] = {ONLY_A: "only_a", ONLY_B: "only_b", BOTH: "both", NEITHER: "neither"}
#: default histogram: 18 bins of 5 degrees over [0, 90]
N_BINS = 18
#: above this many distinct group assignments the permutation test samples instead of enumerating
N_PERM = 10_000
_CHUNK = 64


# ---- per-example quantities -------------------------------------------------------------------

def top1_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, conf): top-1 class (ties to the lowest index) and its probability, per row."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise DivergentError(f"probabilities must be (N, classes), got shape {probs.shape}")
    pred = argmax_lowest(probs)
    return pred, probs[np.arange(len(probs)), pred]


def confidence_angle(conf_a: np.ndarray, conf_b: np.ndarray) -> np.ndarray:
    """phi = degrees(atan2(conf_A, conf_B)) in [0, 90]; 45 when equal, near 90 when A dominates."""
    a = np.asarray(conf_a, dtype=np.float64)
    b = np.asarray(conf_b, dtype=np.float64)
    if a.shape != b.shape:
        raise DivergentError(f"confidences of A and B differ in shape: {a.shape} vs {b.shape}")
    if (a < 0).any() or (b < 0).any():
        raise DivergentError("confidences must be probabilities (>= 0)", "pass calibrated top-1 probabilities")
    return np.degrees(np.arctan2(a, b))


def outcome_codes(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Per-example code: 0 neither, 1 only A, 2 only B, 3 both correct (uint8)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise DivergentError(f"correctness vectors differ in shape: {a.shape} vs {b.shape}")
    return encode(a, b)


def angle_histogram(phi: np.ndarray, outcome: np.ndarray, bins: int | np.ndarray = N_BINS
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(edges, {outcome name: counts}) of phi over [0, 90]; the last bin is closed on the right."""
    phi = np.asarray(phi, dtype=np.float64)
    outcome = np.asarray(outcome)
    edges = np.linspace(0.0, 90.0, int(bins) + 1) if np.ndim(bins) == 0 else np.asarray(bins, dtype=np.float64)
    return edges, {name: np.histogram(phi[outcome == code], bins=edges)[0] for code, name in OUTCOMES.items()}


# ---- how far the only-A and only-B groups separate -------------------------------------------

def _auc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 along the last axis (Mann-Whitney U / (n_x n_y)), average ranks."""
    nx, ny = x.shape[-1], y.shape[-1]
    r = stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
    u = r[..., :nx].sum(axis=-1) - nx * (nx + 1) / 2
    return u / (nx * ny)


def specialization_score(phi: np.ndarray, outcome: np.ndarray) -> float:
    """The pair's scalar score: mean phi where only A is right minus mean phi where only B is right.

    In degrees; 0 when neither model is more confident on its own wins, up to 90 when each model
    is fully confident exactly where only it is right. NaN when either group is empty.
    """
    phi = np.asarray(phi, dtype=np.float64)
    outcome = np.asarray(outcome)
    a, b = phi[outcome == ONLY_A], phi[outcome == ONLY_B]
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(a.mean() - b.mean())


def resampled_scores(phi: np.ndarray, outcome: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The pair's score under example weights (B, N) (bootstrap multiplicities shared with other
    statistics): (B,) weighted mean phi where only A is right minus where only B is right. Without
    weights, one row of ones (the point estimate, shape (1,)); NaN where a group has no weight."""
    phi = np.asarray(phi, dtype=np.float64)
    outcome = np.asarray(outcome)
    a = (outcome == ONLY_A).astype(np.float64)
    b = (outcome == ONLY_B).astype(np.float64)
    w = np.ones((1, phi.size)) if weights is None else weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ (phi * a)) / (w @ a) - (w @ (phi * b)) / (w @ b)


def separation(phi: np.ndarray, outcome: np.ndarray, *, n_boot: int = N_BOOT, level: float = CI_LEVEL,
               seed: int = 0) -> dict[str, dict[str, float]]:
    """How far the only-A and only-B angle distributions separate, with bootstrap intervals.

    Statistics (all 'higher = more specialized'):
      * ``specialization_deg`` mean phi(only A) - mean phi(only B) (the pair's score);
      * ``median_diff_deg``   median phi(only A) - median phi(only B);
      * ``auc``               P(phi_onlyA > phi_onlyB) + ties/2 (0.5 = no separation), with the
                              two-sided Mann-Whitney p-value (scipy) of "no difference";
      * ``mean_phi_only_a``, ``mean_phi_only_b`` and the margins ``a_margin_deg`` = mean
        phi(only A) - 45 and ``b_margin_deg`` = 45 - mean phi(only B).
    Intervals: percentile two-sample bootstrap, resampling the only-A and only-B examples
    independently with their sizes fixed (``n_boot`` resamples, seeded; values are sorted
    first, so the result does not depend on example order). Returns
    {statistic: {'value', 'ci_low', 'ci_high', 'p_value', 'n'}}.
    """
    phi = np.asarray(phi, dtype=np.float64)
    outcome = np.asarray(outcome)
    if phi.shape != outcome.shape:
        raise DivergentError(f"phi and outcome differ in shape: {phi.shape} vs {outcome.shape}")
    # sorted so that the seeded bootstrap depends on the values only, not on example order
    a, b = np.sort(phi[outcome == ONLY_A]), np.sort(phi[outcome == ONLY_B])
    na, nb = a.size, b.size
    nan = float("nan")

    def row(value, lo=nan, hi=nan, p=nan, n=na + nb):
        return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi), "p_value": float(p), "n": int(n)}

    point = {
        "mean_phi_only_a": a.mean() if na else nan,
        "mean_phi_only_b": b.mean() if nb else nan,
    }
    point["a_margin_deg"] = point["mean_phi_only_a"] - 45.0
    point["b_margin_deg"] = 45.0 - point["mean_phi_only_b"]
    point["specialization_deg"] = point["mean_phi_only_a"] - point["mean_phi_only_b"]
    point["median_diff_deg"] = (np.median(a) - np.median(b)) if na and nb else nan
    point["auc"] = float(_auc(a, b)) if na and nb else nan
    p_mw = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue if na and nb else nan

    boots: dict[str, list[np.ndarray]] = {k: [] for k in point}
    if n_boot > 0 and na >= 2 and nb >= 2:
        rng = np.random.default_rng(seed)
        for s in range(0, n_boot, _CHUNK):
            m = min(_CHUNK, n_boot - s)
            ra = a[rng.integers(0, na, size=(m, na))]
            rb = b[rng.integers(0, nb, size=(m, nb))]
            ma, mb = ra.mean(axis=1), rb.mean(axis=1)
            boots["mean_phi_only_a"].append(ma)
            boots["mean_phi_only_b"].append(mb)
            boots["a_margin_deg"].append(ma - 45.0)
            boots["b_margin_deg"].append(45.0 - mb)
            boots["specialization_deg"].append(ma - mb)
            boots["median_diff_deg"].append(np.median(ra, axis=1) - np.median(rb, axis=1))
            boots["auc"].append(_auc(ra, rb))
    out = {}
    for k, v in point.items():
        lo, hi = percentile_interval(np.concatenate(boots[k]), level) if boots[k] else (nan, nan)
        n = na if k in ("mean_phi_only_a", "a_margin_deg") else nb if k in ("mean_phi_only_b", "b_margin_deg") else na + nb
        out[k] = row(v, lo, hi, p_mw if k == "auc" else nan, n)
    return out


# ---- per class (Figure 4) ---------------------------------------------------------------------

def per_class_specialization(phi: np.ndarray, outcome: np.ndarray, labels: np.ndarray, n_classes: int
                             ) -> dict[str, np.ndarray]:
    """Per-class counts and margins (arrays of length n_classes; NaN where a group is empty).

    ``a_margin_deg`` = mean phi - 45 over the class's only-A examples (how much more confident A
    is where only A is right), ``b_margin_deg`` = 45 - mean phi over its only-B examples,
    ``specialization_deg`` = a_margin + b_margin (the pair score within the class) and
    ``lean_deg`` = a_margin - b_margin (> 0: the class is A's domain, < 0: B's).
    ``share_only_a`` = n_only_a / (n_only_a + n_only_b).
    """
    phi = np.asarray(phi, dtype=np.float64)
    outcome = np.asarray(outcome)
    labels = np.asarray(labels, dtype=np.int64)
    if not (phi.shape == outcome.shape == labels.shape):
        raise DivergentError("phi, outcome and labels must have the same length")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DivergentError(f"labels must lie in [0, {n_classes}); got {labels.min()}..{labels.max()}")
    counts = {name: np.bincount(labels[outcome == code], minlength=n_classes) for code, name in OUTCOMES.items()}
    sum_a = np.bincount(labels[outcome == ONLY_A], weights=phi[outcome == ONLY_A], minlength=n_classes)
    sum_b = np.bincount(labels[outcome == ONLY_B], weights=phi[outcome == ONLY_B], minlength=n_classes)
    na, nb = counts["only_a"], counts["only_b"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a = np.where(na > 0, sum_a / np.maximum(na, 1), np.nan)
        mean_b = np.where(nb > 0, sum_b / np.maximum(nb, 1), np.nan)
        share = np.where(na + nb > 0, na / np.maximum(na + nb, 1), np.nan)
    a_margin, b_margin = mean_a - 45.0, 45.0 - mean_b
    return {
        "n": np.bincount(labels, minlength=n_classes),
        **{f"n_{k}": v for k, v in counts.items()},
        "mean_phi_only_a": mean_a, "mean_phi_only_b": mean_b,
        "a_margin_deg": a_margin, "b_margin_deg": b_margin,
        "specialization_deg": a_margin + b_margin, "lean_deg": a_margin - b_margin,
        "share_only_a": share,
    }


# ---- is the difference between class groups significant? --------------------------------------

def _between_ss(values: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """sum_g n_g (mean_g - grand mean)^2 along the last axis; groups (..., n) in 0..k-1."""
    grand = values.mean()
    ss = 0.0
    for g in range(k):
        mask = groups == g
        n_g = mask.sum(axis=-1)
        mean_g = (values * mask).sum(axis=-1) / n_g
        ss = ss + n_g * (mean_g - grand) ** 2
    return ss


def _n_assignments(sizes: list[int]) -> int:
    total, out = sum(sizes), 1
    for s in sizes:
        out *= math.comb(total, s)
        total -= s
    return out


def _all_assignments(sizes: list[int]) -> np.ndarray:
    """Every distinct way to give len = sum(sizes) units the group labels with these sizes."""
    n = sum(sizes)
    rows: list[np.ndarray] = []

    def rec(free: tuple[int, ...], g: int, cur: np.ndarray):
        if g == len(sizes) - 1:
            cur = cur.copy()
            cur[list(free)] = g
            rows.append(cur)
            return
        for pick in itertools.combinations(free, sizes[g]):
            nxt = cur.copy()
            nxt[list(pick)] = g
            rec(tuple(i for i in free if i not in pick), g + 1, nxt)

    rec(tuple(range(n)), 0, np.full(n, -1, dtype=np.int64))
    return np.array(rows)


def group_test(values: np.ndarray, groups: np.ndarray, *, n_perm: int = N_PERM, seed: int = 0) -> dict:
    """Permutation test that a per-class statistic differs between class groups.

    ``values`` (n_classes,) is the per-class statistic (e.g. ``lean_deg``), ``groups``
    (n_classes,) the group index of each class (-1 = in no group). Units are classes: classes with
    a NaN value or no group are left out. The statistic is the between-group sum of squares
    sum_g n_g (mean_g - mean)^2 (for two groups, equivalent to the two-sided |difference of
    means|). The p-value is exact (every distinct relabelling) when there are at most ``n_perm``
    of them, else a seeded Monte Carlo estimate (count + 1) / (n_perm + 1). Also returns the
    Kruskal-Wallis p-value (scipy) as a rank-based cross-check, the group means and, for two
    groups, ``difference`` = mean(group 0) - mean(group 1).
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    if values.shape != groups.shape:
        raise DivergentError("values and groups must have one entry per class")
    keep = np.isfinite(values) & (groups >= 0)
    v, g = values[keep], groups[keep]
    labels = np.unique(g)
    remap = np.searchsorted(labels, g)
    k = labels.size
    sizes = [int((remap == i).sum()) for i in range(k)]
    means = {int(labels[i]): float(v[remap == i].mean()) for i in range(k)}
    out = {"n_units": int(v.size), "n_dropped": int((~keep & (groups >= 0)).sum()), "group_sizes": dict(zip(labels.tolist(), sizes)),
           "group_means": means, "statistic": float("nan"), "difference": float("nan"),
           "p_value": float("nan"), "method": "none", "n_perm": 0, "kruskal_p": float("nan")}
    if k < 2 or v.size < 3:
        out["method"] = "too few groups or classes with values"
        return out
    if k == 2:
        out["difference"] = means[int(labels[0])] - means[int(labels[1])]
    observed = float(_between_ss(v, remap, k))
    out["statistic"] = observed
    tol = 1e-12 * max(1.0, abs(observed))
    total = _n_assignments(sizes)
    if total <= n_perm:
        perms = _all_assignments(sizes)
        ss = _between_ss(v[None, :], perms, k)
        out.update(p_value=float((ss >= observed - tol).mean()), method="exact", n_perm=int(total))
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for s in range(0, n_perm, 1024):
            m = min(1024, n_perm - s)
            perms = np.argsort(rng.random((m, v.size)), axis=1)
            ss = _between_ss(v[None, :], remap[perms], k)
            hits += int((ss >= observed - tol).sum())
        out.update(p_value=(hits + 1) / (n_perm + 1), method="monte-carlo", n_perm=int(n_perm))
    if all(s >= 1 for s in sizes) and np.ptp(v) > 0:
        out["kruskal_p"] = float(stats.kruskal(*[v[remap == i] for i in range(k)]).pvalue)
    return out
