"""Pair metrics under distribution shift, from a store, as DataFrames.

For the in-distribution split (``test``) and each of its shifted splits (``test~<shift>``, the
same examples and labels, transformed; docs/shift.md) this computes the paper's pair metrics of
the base against every model (:func:`divergent.analyses.pairs.pairs`: error inconsistency,
ensemble gain, conversion rate, ... with paired-bootstrap intervals) and their means by category
(:func:`divergent.analyses.categories.category_summary`: shared-resample intervals), split by
split, so a row of a shifted split equals the analysis run directly on that split.

:func:`shift_findings` asks whether the paper's ordering — errors decorrelate as training
diverges, Reinit < Hyper-parameters < Architecture < Framework < Dataset — persists under each
shift: the Spearman correlation between category rank and error inconsistency over the base's
pairs (the statistic of claim 1, divergent.analyses.findings), its change from the
in-distribution split, and the slope of ensemble gain on error inconsistency (claim 2's
statistic), each with a 95 % interval from one set of example resamples shared by every split
(rows matched by id) and every pair.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..conventions import CI_LEVEL, N_BOOT, TEST
from ..errors import DivergentError, unknown
from ..metrics.bootstrap import bca_interval, jackknife_values, percentile_interval, resample_weights
from ..metrics.pairs import A_OK, B_OK, ENS_OK
from ..metrics.relationships import ols_slope, spearman
from ._select import NamedTables, as_store, resolve_models
from .categories import category_summary
from .findings import CATEGORY_RANK, HOLDS, INTERVALS, verdict
from .lines import SHIFT_SEP, _aligned, shifted_splits
from .pairs import pair_outcome_codes, pairs

#: the value of the `shift` column on the in-distribution split
NO_SHIFT = "none"
#: statistic id -> (what it measures, the direction in which the paper's claim holds)
STATISTICS: dict[str, tuple[str, int]] = {
    "order_rho": ("Spearman correlation between category rank (reinit < hyper-parameters < architecture < "
                  "framework < dataset) and error inconsistency, pairs with the base", +1),
    "order_rho_change": ("change of that Spearman correlation from the in-distribution split "
                         "(shifted minus in-distribution)", 0),
    "gain_slope": ("OLS slope of ensemble gain over the members' mean accuracy on error inconsistency, "
                   "pairs with the base", +1),
}
FINDING_COLUMNS = ["split", "shift", "corruption", "severity", "statistic", "estimate", "lo", "hi", "verdict",
                   "n_pairs", "description", "text"]


@dataclass
class ShiftPairsResult(NamedTables):
    """Tables of :func:`shift_pairs`: the pairs of every split, their category means, the findings."""

    pairs: pd.DataFrame
    categories: pd.DataFrame
    findings: pd.DataFrame
    meta: dict = field(default_factory=dict)

    TABLES = ("pairs", "categories", "findings")


def shift_of(split: str) -> tuple[str, str, int]:
    """(shift, corruption, severity) of a split name: ``test~gaussian_noise-3`` ->
    ("gaussian_noise-3", "gaussian_noise", 3); the in-distribution split -> ("none", "none", 0).
    A shifted split that is not a corruption at a severity (an imported setting) keeps its name
    as the corruption, with severity 0."""
    _, sep, shift = split.partition(SHIFT_SEP)
    if not sep:
        return NO_SHIFT, NO_SHIFT, 0
    try:
        from ..data.shift import parse_split_name

        _, parsed = parse_split_name(split)
    except DivergentError:  # not <corruption>-<severity>: an imported setting such as test~imagenet-r
        parsed = None
    if parsed is None:
        return shift, shift, 0
    return shift, str(parsed.corruption), int(parsed.severity)


def _splits(store, split: str, shifted) -> list[str]:
    if split not in store.splits:
        raise unknown("split", split, store.splits)
    return [split, *shifted_splits(store, split, shifted)]


def _label(df: pd.DataFrame, split: str) -> pd.DataFrame:
    shift, corruption, severity = shift_of(split)
    df.insert(0, "severity", severity)
    df.insert(0, "corruption", corruption)
    df.insert(0, "shift", shift)
    df.insert(0, "split", split)
    return df


def _split_models(store, base: str, split: str, models) -> list[str]:
    names = resolve_models(store, models, split=None, need=None)
    have = [m for m in names if store.has_scores(m, split) or store.has(m, split, "pred")]
    if base not in have:
        raise DivergentError(f"the base model {base!r} has no predictions on split {split!r}",
                             f"extract or predict the base on {split!r} (or leave that split out)")
    return have


def shift_pairs(store, *, base: str, split: str = TEST, shifted=None, models=None, calibrated: bool = True,
                n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0, findings: bool = True,
                progress: bool = False) -> ShiftPairsResult:
    """The base's pair metrics on ``split`` and on each shifted split (``shifted``: names or
    wildcards, default ``<split>~*``), their means by category, and the findings.

    ``pairs``: the :func:`divergent.analyses.pairs.pairs` table of each split (the models with
    predictions on it), with columns split, shift, corruption, severity in front.
    ``categories``: :func:`divergent.analyses.categories.category_summary` of each split, likewise.
    ``findings``: :func:`shift_findings` (``findings=False`` skips it). Temperatures are the
    stored ones (fitted in-distribution); nothing is fitted on a shifted split.
    """
    store = as_store(store)
    splits = _splits(store, split, shifted)
    if base not in store.models:
        raise unknown("base model", base, store.models)
    p_rows, c_rows = [], []
    for s in splits:
        names = _split_models(store, base, s, models)
        pt = pairs(store, split=s, base=base, models=names, calibrated=calibrated, n_boot=n_boot, level=level,
                   seed=seed, progress=progress)
        cs = category_summary(store, base=base, split=s, calibrated=calibrated, n_boot=n_boot, level=level, seed=seed,
                              table=pt)
        p_rows.append(_label(pt, s))
        c_rows.append(_label(cs, s))
    f = (shift_findings(store, base=base, split=split, shifted=splits[1:], models=models, calibrated=calibrated,
                        n_boot=n_boot, level=level, seed=seed) if findings and len(splits) > 1
         else pd.DataFrame(columns=FINDING_COLUMNS))
    meta = {"split": split, "shifted": splits[1:], "base": base, "calibrated": calibrated, "n_boot": n_boot,
            "level": level, "seed": seed}
    res = ShiftPairsResult(pd.concat(p_rows, ignore_index=True), pd.concat(c_rows, ignore_index=True), f, meta)
    for df in res.tables().values():
        df.attrs.update(meta)
    return res


def _pair_matrices(store, base: str, split: str, others: list[str], order, calibrated: bool):
    """(error inconsistency, gain over the members' mean) indicators per pair and example, (P, N),
    rows of the split put into the in-distribution order."""
    plist = [(base, m) for m in others]
    codes = pair_outcome_codes(store, plist, split=split, calibrated=calibrated, as_codes=True)
    c = np.stack([codes[ab] for ab in plist])
    if order is not None:
        c = c[:, order]
    a, b, e = ((c & bit) > 0 for bit in (A_OK, B_OK, ENS_OK))
    return (a != b).astype(np.float64), e.astype(np.float64) - (a.astype(np.float64) + b) / 2


def _order_stats(ei: np.ndarray, gain: np.ndarray, rank: np.ndarray, W: np.ndarray | None):
    """Spearman(rank, error inconsistency) and slope(gain on error inconsistency): point (W=None) or per resample."""
    n = ei.shape[1]
    if W is None:
        W = np.ones((1, n))
    tot = W.sum(1, keepdims=True)
    e, g = (W @ ei.T) / tot, (W @ gain.T) / tot  # (B, P)
    return spearman(np.broadcast_to(rank, e.shape), e), ols_slope(e, g)


def shift_findings(store, *, base: str, split: str = TEST, shifted=None, models=None, calibrated: bool = True,
                   n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0) -> pd.DataFrame:
    """Does the paper's ordering persist under shift? One row per split and statistic
    (:data:`STATISTICS`): estimate, interval (``level``; one set of ``n_boot`` example resamples
    shared by every split and pair, rows matched by id), verdict (divergent.analyses.findings.verdict:
    'holds' when the interval excludes 0 in the paper's direction; ``order_rho_change`` has no
    direction and reports 'differs' / 'no change detected') and a sentence.

    Uses the base's pairs whose category has a rank (the paper's five categories) and whose
    models have probabilities on every split compared.
    """
    store = as_store(store)
    splits = _splits(store, split, shifted)
    if base not in store.models:
        raise unknown("base model", base, store.models)
    cands = resolve_models(store, models, split=None, need=None)
    others = [m for m in cands if m != base and all(store.has_scores(m, s) for s in splits)
              and store.has_scores(base, split)]
    base_card = store.card(base)
    from ..cards import category as card_category

    cats = {m: card_category(base_card, store.card(m)) for m in others}
    others = [m for m in others if cats[m] in CATEGORY_RANK]
    rank = np.array([CATEGORY_RANK[cats[m]] for m in others], dtype=np.float64)
    enough = len(others) >= 3 and len(set(rank)) >= 2 and all(store.has_scores(base, s) for s in splits)
    n = len(store.split(split).labels)
    W = resample_weights(n, n_boot=n_boot, seed=seed) if n_boot and enough else None
    rows, ref = [], None
    for s in splits:
        if not enough:
            rows += [_finding_row(s, k, np.nan, np.nan, np.nan, len(others),
                                  "needs at least 3 pairs with the base, in at least 2 of the paper's categories, "
                                  "with probabilities on every split") for k in STATISTICS]
            continue
        order = None if s == split else _aligned(store, split, s)
        ei, gain = _pair_matrices(store, base, s, others, order, calibrated)
        (rho0,), (slope0,) = _order_stats(ei, gain, rank, None)
        rho, slope = _order_stats(ei, gain, rank, W) if W is not None else (None, None)
        if ref is None:
            ref = (rho0, rho)
        if rho is not None and INTERVALS[1] == "BCa":  # claim 1's statistic: the interval the findings use
            jack = jackknife_values(lambda w, ei=ei, gain=gain: _order_stats(ei, gain, rank, w)[0], n)
            rho_ci = bca_interval(rho0, rho, jack, level, min_n=10)
        else:
            rho_ci = _interval(rho, level)
        rows.append(_finding_row(s, "order_rho", rho0, *rho_ci, len(others)))
        if s != split:
            d = None if rho is None else rho - ref[1]
            rows.append(_finding_row(s, "order_rho_change", rho0 - ref[0], *_interval(d, level), len(others)))
        rows.append(_finding_row(s, "gain_slope", slope0, *_interval(slope, level), len(others)))
    df = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    df.attrs.update({"split": split, "base": base, "n_boot": n_boot, "level": level, "seed": seed,
                     "models": others})
    return df


def _interval(draws, level: float) -> tuple[float, float]:
    if draws is None:
        return np.nan, np.nan
    return percentile_interval(np.asarray(draws, dtype=np.float64), level, min_n=10)


def _finding_row(split: str, stat: str, est: float, lo: float, hi: float, n_pairs: int, reason: str = "") -> dict:
    shift, corruption, severity = shift_of(split)
    desc, direction = STATISTICS[stat]
    if direction:
        v = verdict(lo, hi, direction) if math.isfinite(est) else verdict(np.nan, np.nan)
    else:
        v = ("differs" if math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0) else "no change detected")
    where = "in distribution" if shift == NO_SHIFT else f"under {shift}"
    if not math.isfinite(est):
        text = f"Not computed {where}: {reason or 'no interval'}."
    else:
        ci = (f"95% CI {lo:+.3f} to {hi:+.3f}" if math.isfinite(lo) and math.isfinite(hi) else "no interval")
        body = {"order_rho": f"the category order's Spearman correlation with error inconsistency is {est:+.3f} ({ci})",
                "order_rho_change": f"that correlation changes by {est:+.3f} from in distribution ({ci})",
                "gain_slope": f"ensemble gain rises by {est:+.3f} per unit of error inconsistency ({ci})"}[stat]
        lead = ("The ordering persists" if stat == "order_rho" and v == HOLDS and shift != NO_SHIFT else
                "The ordering holds" if stat == "order_rho" and v == HOLDS else
                v[0].upper() + v[1:])
        text = f"{lead} {where}: {body}."
    return {"split": split, "shift": shift, "corruption": corruption, "severity": severity, "statistic": stat,
            "estimate": float(est), "lo": float(lo), "hi": float(hi), "verdict": v, "n_pairs": int(n_pairs),
            "description": desc, "text": text}
