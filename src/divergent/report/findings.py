"""The paper's five claims (Section 1) as statistics fixed before the run, with shared-resample
bootstrap intervals and a verdict: 'holds', 'contradicted' or 'inconclusive'.

A verdict is 'holds' when the 95 % interval excludes zero in the paper's direction,
'contradicted' when it excludes zero the other way, 'inconclusive' otherwise (including
when the statistic could not be computed; the text then says why). Definitions: docs/report.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..cards import CATEGORIES

HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
#: category rank used by claim 1 (the paper's order; controls are excluded)
CATEGORY_RANK = {c: i for i, c in enumerate(CATEGORIES)}

#: claim id -> (the paper's claim in a sentence, statistic, paper's direction of the statistic)
CLAIMS: dict[int, tuple[str, str, int]] = {
    1: ("Model pairs that diverge more in training methodology (reinit < hyper-parameters < "
        "architecture < framework < dataset) produce increasingly uncorrelated errors.",
        "Spearman correlation between category rank and error inconsistency over pairs with the base", +1),
    2: ("Ensemble performance increases as error correlation decreases.",
        "OLS slope of ensemble gain over the members' mean accuracy on error inconsistency, pairs with the base", +1),
    3: ("Differently-trained models specialise: each is more confident where only it is right, "
        "more so the more different the training.",
        "specialization separation (mean phi where only the base is right minus where only the other is right, degrees) "
        "of the most different category's representative minus that of the reinit representative", +1),
    4: ("Low-accuracy models can improve a high-accuracy model if trained differently enough.",
        "test accuracy of the greedy ensemble of the base (or base.high_accuracy) with only lower-accuracy models (selected on holdout) "
        "minus the test accuracy of the model it starts from", +1),
    5: ("Representations of differently-trained models overlap but do not superset: combined they do better.",
        "accuracy of the best stacked/combined embedding minus the best single embedding (same evaluation)", +1),
}
SCOPES = {"all": "all models", "band": "within the accuracy band"}


def verdict(lo: float, hi: float, direction: int = +1) -> str:
    """'holds' if [lo, hi] excludes 0 on the paper's side, 'contradicted' if on the other side."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if direction > 0:
        return HOLDS if lo > 0 else CONTRADICTED if hi < 0 else INCONCLUSIVE
    return HOLDS if hi < 0 else CONTRADICTED if lo > 0 else INCONCLUSIVE


@dataclass
class Evidence:
    """Per-example inputs of the claims for one scope (all arrays are 0/1 or degrees on test).

    correct_base: (N,) whether the base is right; correct[m], ens_correct[m]: model m and the
    (base, m) ensemble; category[m]: m's category vs the base. phi/outcome: angle arrays of
    representative pairs keyed by category. greedy_correct: the greedy ensemble on test;
    greedy_base_correct / greedy_base: the model the greedy ensemble starts from (the study's
    high-accuracy model, which may differ from the base of the pairs; claim 4 compares to it).
    combined_correct / single_correct: per-example correctness of the best combined and best
    single embedding (downstream or feature combination), with their names.
    """

    correct_base: np.ndarray | None = None
    correct: dict[str, np.ndarray] = field(default_factory=dict)
    ens_correct: dict[str, np.ndarray] = field(default_factory=dict)
    category: dict[str, str] = field(default_factory=dict)
    phi: dict[str, np.ndarray] = field(default_factory=dict)
    outcome: dict[str, np.ndarray] = field(default_factory=dict)
    rep_model: dict[str, str] = field(default_factory=dict)
    greedy_correct: np.ndarray | None = None
    greedy_members: list[str] = field(default_factory=list)
    greedy_base_correct: np.ndarray | None = None
    greedy_base: str = ""
    combined_correct: np.ndarray | None = None
    single_correct: np.ndarray | None = None
    combined_name: str = ""
    single_name: str = ""
    notes: dict[int, str] = field(default_factory=dict)


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multinomial counts: one shared set of example resamples for every model."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _ci(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size < 10:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))


def _rank_rows(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(-1) / den, np.nan)


def _slope_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = (xc * xc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / den, np.nan)


def _pair_stats(ev: Evidence, models: list[str], W: np.ndarray | None):
    """error inconsistency and gain vs mean per pair; W=None gives the point estimate."""
    cb = ev.correct_base.astype(np.float64)
    C = np.stack([ev.correct[m].astype(np.float64) for m in models], axis=1)  # (N, P)
    E = np.stack([ev.ens_correct[m].astype(np.float64) for m in models], axis=1)
    I = np.abs(C - cb[:, None])  # exactly one is right
    n = cb.size
    if W is None:
        W = np.ones((1, n))
    tot = W.sum(1, keepdims=True)
    acc_b = (W @ cb)[:, None] / tot
    acc_m = (W @ C) / tot
    ens = (W @ E) / tot
    ei = (W @ I) / tot
    gain = ens - (acc_b + acc_m) / 2
    return ei, gain


def _claims_1_2(ev: Evidence, W: np.ndarray) -> list[dict]:
    out = []
    models = sorted(m for m in ev.correct if m in ev.ens_correct)
    ranked = [m for m in models if ev.category.get(m) in CATEGORY_RANK]
    # claim 1
    if ev.correct_base is None or len(ranked) < 3 or len({ev.category[m] for m in ranked}) < 2:
        out.append(dict(claim=1, estimate=np.nan, lo=np.nan, hi=np.nan, n=len(ranked),
                        reason="needs at least 3 pairs with the base in at least 2 of the paper's categories"))
    else:
        r = np.array([CATEGORY_RANK[ev.category[m]] for m in ranked], dtype=np.float64)
        ei0, _ = _pair_stats(ev, ranked, None)
        ei, _ = _pair_stats(ev, ranked, W)
        rr = _rank_rows(r)
        est = float(_pearson_rows(rr[None, :], _rank_rows(ei0))[0])
        reps = _pearson_rows(np.broadcast_to(rr, ei.shape), _rank_rows(ei))
        lo, hi = _ci(reps)
        out.append(dict(claim=1, estimate=est, lo=lo, hi=hi, n=len(ranked), reason=""))
    # claim 2
    if ev.correct_base is None or len(models) < 3:
        out.append(dict(claim=2, estimate=np.nan, lo=np.nan, hi=np.nan, n=len(models),
                        reason="needs at least 3 pairs with the base"))
    else:
        ei0, g0 = _pair_stats(ev, models, None)
        ei, g = _pair_stats(ev, models, W)
        est = float(_slope_rows(ei0, g0)[0])
        lo, hi = _ci(_slope_rows(ei, g))
        out.append(dict(claim=2, estimate=est, lo=lo, hi=hi, n=len(models), reason=""))
    return out


def _separation(phi: np.ndarray, outcome: np.ndarray, W: np.ndarray | None) -> np.ndarray:
    a = (outcome == "only_a").astype(np.float64)
    b = (outcome == "only_b").astype(np.float64)
    if W is None:
        W = np.ones((1, phi.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (W @ (phi * a)) / (W @ a) - (W @ (phi * b)) / (W @ b)


def most_different(categories) -> str | None:
    ranked = [c for c in categories if c in CATEGORY_RANK and c != "reinit"]
    return max(ranked, key=CATEGORY_RANK.get) if ranked else None


def _claim_3(ev: Evidence, W: np.ndarray) -> dict:
    far = most_different(ev.phi)
    if "reinit" not in ev.phi or far is None:
        return dict(claim=3, estimate=np.nan, lo=np.nan, hi=np.nan, n=len(ev.phi),
                    reason="needs angle data for a reinit pair and a pair of a more different category")
    s_far = _separation(ev.phi[far], ev.outcome[far], W)
    s_re = _separation(ev.phi["reinit"], ev.outcome["reinit"], W)
    est = float((_separation(ev.phi[far], ev.outcome[far], None)
                 - _separation(ev.phi["reinit"], ev.outcome["reinit"], None))[0])
    lo, hi = _ci(s_far - s_re)
    return dict(claim=3, estimate=est, lo=lo, hi=hi, n=2, reason="", far=far)


def _diff_claim(claim: int, a: np.ndarray | None, b: np.ndarray | None, W: np.ndarray | None, why: str) -> dict:
    if a is None or b is None:
        return dict(claim=claim, estimate=np.nan, lo=np.nan, hi=np.nan, n=0, reason=why)
    d = a.astype(np.float64) - b.astype(np.float64)
    if W is None or W.shape[1] != d.size:
        W = None
    est = float(d.mean())
    if W is None:
        return dict(claim=claim, estimate=est, lo=np.nan, hi=np.nan, n=d.size,
                    reason="no shared resample for this evaluation")
    lo, hi = _ci((W @ d) / W.sum(1))
    return dict(claim=claim, estimate=est, lo=lo, hi=hi, n=d.size, reason="")


def claim_statistics(ev: Evidence, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Point estimates and 95 % percentile intervals of the five statistics for one scope."""
    out = []
    W = resample_weights(ev.correct_base.size, n_boot, seed) if ev.correct_base is not None else None
    if W is not None:
        out += _claims_1_2(ev, W)
        out.append(_claim_3(ev, W) if ev.phi else dict(claim=3, estimate=np.nan, lo=np.nan, hi=np.nan, n=0,
                                                       reason="no angle data for representative pairs"))
    else:
        for c in (1, 2, 3):
            out.append(dict(claim=c, estimate=np.nan, lo=np.nan, hi=np.nan, n=0, reason="no pairs with the base"))
    start = ev.greedy_base_correct if ev.greedy_base_correct is not None else ev.correct_base
    out.append(_diff_claim(4, ev.greedy_correct, start, W,
                           "no greedy ensemble of the base with lower-accuracy models"))
    Wd = (resample_weights(ev.combined_correct.size, n_boot, seed + 1)
          if ev.combined_correct is not None else None)
    out.append(_diff_claim(5, ev.combined_correct, ev.single_correct, Wd,
                           "no feature-combination or stacked-transfer result"))
    for row in out:
        if ev.notes.get(row["claim"]) and not row["reason"]:
            row["note"] = ev.notes[row["claim"]]
    return out


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.2f} pp" if pct else f"{x:+.3f}"


def describe(claim: int, scope: str, est: float, lo: float, hi: float, v: str, n: int,
             reason: str = "", extra: dict | None = None) -> str:
    """One plain-language sentence (or two) with the numbers."""
    extra = extra or {}
    where = SCOPES.get(scope, scope)
    if not math.isfinite(est):
        return f"Not computed {where}: {reason}." if reason else f"Not computed {where}."
    pct = claim in (4, 5)
    ci = (f"95% CI {_fmt(lo, pct)} to {_fmt(hi, pct)}" if math.isfinite(lo) and math.isfinite(hi)
          else f"no interval ({reason})" if reason else "no interval")
    body = {
        1: f"over {n} pairs with the base, the Spearman correlation between category rank and error inconsistency is {_fmt(est)} ({ci})",
        2: f"over {n} pairs with the base, ensemble gain over the members' mean accuracy rises by {_fmt(est)} per unit of error inconsistency ({ci})",
        3: f"the {extra.get('far', 'most different')} pair's specialization separation exceeds the reinit pair's by {_fmt(est)} degrees ({ci})",
        4: f"the greedy ensemble of {extra.get('start', 'the base')} with lower-accuracy models{extra.get('members', '')} changes its test accuracy by {_fmt(est, True)} ({ci})",
        5: f"the best combined embedding{extra.get('combined', '')} beats the best single embedding{extra.get('single', '')} by {_fmt(est, True)} ({ci})",
    }[claim]
    lead = {HOLDS: "Holds", CONTRADICTED: "Contradicted", INCONCLUSIVE: "Inconclusive"}[v]
    return f"{lead} {where}: {body}."


def findings_table(evidence: dict[str, Evidence], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (claim, scope): statistic, estimate, lo, hi, verdict, plain-language text."""
    rows = []
    for scope, ev in evidence.items():
        for r in claim_statistics(ev, n_boot=n_boot, seed=seed):
            c = r["claim"]
            extra = {}
            if c == 3:
                extra["far"] = r.get("far", "most different")
            if c == 4 and ev.greedy_members:
                extra["members"] = f" ({', '.join(ev.greedy_members)})"
            if c == 4 and ev.greedy_base:
                extra["start"] = ev.greedy_base
            if c == 5:
                extra["combined"] = f" ({ev.combined_name})" if ev.combined_name else ""
                extra["single"] = f" ({ev.single_name})" if ev.single_name else ""
            rows.append(make_row(c, scope, r["estimate"], r["lo"], r["hi"], n=r["n"],
                                 reason=r.get("reason", ""), extra=extra))
    return pd.DataFrame(rows)


def make_row(claim: int, scope: str, estimate: float, lo: float, hi: float, n: int = 0,
             reason: str = "", extra: dict | None = None) -> dict:
    """A findings row from a statistic and its interval (also used with constructed intervals)."""
    paper, statistic, direction = CLAIMS[claim]
    v = verdict(lo, hi, direction) if math.isfinite(estimate) else INCONCLUSIVE
    return dict(claim=claim, scope=scope, paper=paper, statistic=statistic, estimate=float(estimate),
                lo=float(lo), hi=float(hi), direction=direction, n=int(n), verdict=v,
                reason=reason or "", text=describe(claim, scope, estimate, lo, hi, v, n, reason, extra))
