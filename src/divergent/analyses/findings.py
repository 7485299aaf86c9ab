"""The paper's five claims (Section 1) as statistics fixed before the run, with shared-resample
bootstrap intervals and a verdict: 'holds', 'contradicted' or 'inconclusive' — the findings table
that the study writes and the report renders.

A verdict is 'holds' when the 95 % interval excludes zero in the paper's direction,
'contradicted' when it excludes zero the other way, 'inconclusive' otherwise (including
when the statistic could not be computed; the text then says why). Definitions: docs/report.md.

:func:`study_findings` gathers the per-example evidence of both scopes (all models, the accuracy
band) from a store and the study's earlier results; :func:`findings_table` turns evidence into
the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..cards import CATEGORIES
from ..conventions import N_BOOT, TEST
from ..metrics import specialization as sm
from ..metrics.bootstrap import bca_interval, jackknife_values, percentile_interval, resample_weights
from ..metrics.relationships import ols_slope, spearman

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
#: claim id -> what the claim is, in a few words (the report's "At a glance")
CLAIM_NAMES = {
    1: "errors decorrelate as training diverges",
    2: "ensembles gain as errors decorrelate",
    3: "differently-trained models specialise",
    4: "lower-accuracy models improve a high-accuracy one",
    5: "combined representations beat the best single one",
}
#: the interval of each claim's statistic (docs/report.md, "Intervals"): BCa for the rank
#: correlation over a handful of pairs (bounded and discrete: its estimate sits on the edge of its
#: percentile interval), the percentile interval for the smooth ones (slopes, means, differences)
INTERVALS = {1: "BCa", 2: "percentile", 3: "percentile", 4: "percentile", 5: "percentile"}
#: the reason a band statistic gives when the band holds too few models for it
TOO_FEW = "too few in-band models"


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
    (base, m) ensemble; category[m]: m's category vs the base. phi/outcome: angles and outcome
    codes (divergent.metrics.specialization: ONLY_A, ONLY_B, BOTH, NEITHER) of representative
    pairs keyed by category. greedy_correct: the greedy ensemble on test;
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
    #: the accuracy-band scope: a statistic that lacks models says TOO_FEW (never borrows others)
    band: bool = False
    #: the band scope: the models in the band (base included), and claim 5's reason when no
    #: feature or transfer result has only in-band members
    n_models: int = 0
    missing: dict[int, str] = field(default_factory=dict)


#: finite bootstrap values an interval needs (fewer: no interval)
MIN_RESAMPLES = 10


def _ci(reps: np.ndarray) -> tuple[float, float]:
    return percentile_interval(reps, min_n=MIN_RESAMPLES)


def _bca(est: float, reps: np.ndarray, stat, n: int) -> tuple[float, float]:
    """BCa interval of `stat` (a statistic of (B, n) example weights) from its bootstrap values
    `reps`, with the leave-one-out jackknife over the n test examples for the acceleration."""
    if np.count_nonzero(np.isfinite(reps)) < MIN_RESAMPLES:
        return float("nan"), float("nan")
    return bca_interval(est, reps, jackknife_values(stat, n), min_n=MIN_RESAMPLES)


def _why(ev: Evidence, need: str) -> str:
    """The reason a statistic was not computed: in the band scope, too few in-band models."""
    return f"{TOO_FEW} ({ev.n_models} in the band; {need})" if ev.band else need


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
                        reason=_why(ev, "needs at least 3 pairs with the base in at least 2 of the paper's categories")))
    else:
        r = np.array([CATEGORY_RANK[ev.category[m]] for m in ranked], dtype=np.float64)

        def rho(w):
            ei = _pair_stats(ev, ranked, w)[0]
            return spearman(np.broadcast_to(r, ei.shape), ei)

        est = float(rho(None)[0])
        lo, hi = _bca(est, rho(W), rho, W.shape[1])
        out.append(dict(claim=1, estimate=est, lo=lo, hi=hi, n=len(ranked), reason=""))
    # claim 2
    if ev.correct_base is None or len(models) < 3:
        out.append(dict(claim=2, estimate=np.nan, lo=np.nan, hi=np.nan, n=len(models),
                        reason=_why(ev, "needs at least 3 pairs with the base")))
    else:
        ei0, g0 = _pair_stats(ev, models, None)
        ei, g = _pair_stats(ev, models, W)
        est = float(ols_slope(ei0, g0)[0])
        lo, hi = _ci(ols_slope(ei, g))
        out.append(dict(claim=2, estimate=est, lo=lo, hi=hi, n=len(models), reason=""))
    return out


def most_different(categories) -> str | None:
    ranked = [c for c in categories if c in CATEGORY_RANK and c != "reinit"]
    return max(ranked, key=CATEGORY_RANK.get) if ranked else None


def _claim_3(ev: Evidence, W: np.ndarray) -> dict:
    far = most_different(ev.phi)
    if "reinit" not in ev.phi or far is None:
        return dict(claim=3, estimate=np.nan, lo=np.nan, hi=np.nan, n=len(ev.phi),
                    reason=_why(ev, "needs angle data for a reinit pair and a pair of a more different category"))
    s_far = sm.resampled_scores(ev.phi[far], ev.outcome[far], W)
    s_re = sm.resampled_scores(ev.phi["reinit"], ev.outcome["reinit"], W)
    est = float((sm.resampled_scores(ev.phi[far], ev.outcome[far])
                 - sm.resampled_scores(ev.phi["reinit"], ev.outcome["reinit"]))[0])
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


def claim_statistics(ev: Evidence, n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """Point estimates and 95 % intervals (:data:`INTERVALS`) of the five statistics for one scope."""
    out = []
    W = resample_weights(ev.correct_base.size, n_boot=n_boot, seed=seed) if ev.correct_base is not None else None
    if W is not None:
        out += _claims_1_2(ev, W)
        out.append(_claim_3(ev, W) if ev.phi else dict(claim=3, estimate=np.nan, lo=np.nan, hi=np.nan, n=0,
                                                       reason=_why(ev, "no angle data for representative pairs")))
    else:
        for c in (1, 2, 3):
            out.append(dict(claim=c, estimate=np.nan, lo=np.nan, hi=np.nan, n=0,
                            reason=_why(ev, "no pairs with the base")))
    start = ev.greedy_base_correct if ev.greedy_base_correct is not None else ev.correct_base
    out.append(_diff_claim(4, ev.greedy_correct, start, W,
                           _why(ev, "no greedy ensemble of the base with lower-accuracy models")))
    Wd = (resample_weights(ev.combined_correct.size, n_boot=n_boot, seed=seed + 1)
          if ev.combined_correct is not None else None)
    out.append(_diff_claim(5, ev.combined_correct, ev.single_correct, Wd,
                           ev.missing.get(5) or _why(ev, "no feature-combination or stacked-transfer result")))
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
    kind = "BCa " if INTERVALS[claim] == "BCa" else ""
    ci = (f"95% {kind}CI {_fmt(lo, pct)} to {_fmt(hi, pct)}" if math.isfinite(lo) and math.isfinite(hi)
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


def findings_table(evidence: dict[str, Evidence], n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
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
    return dict(claim=claim, scope=scope, claim_name=CLAIM_NAMES[claim], paper=paper, statistic=statistic,
                estimate=float(estimate), lo=float(lo), hi=float(hi), interval=INTERVALS[claim],
                direction=direction, n=int(n), verdict=v, reason=reason or "",
                text=describe(claim, scope, estimate, lo, hi, v, n, reason, extra))


# ---- the evidence of one study ------------------------------------------------------------------

def scope_evidence(store, pairs: pd.DataFrame, base: str, models: list[str], split: str = TEST, *,
             greedy_members: list[str] | None = None, features: list[dict] = (), transfer: dict | None = None,
             band: bool = False) -> Evidence:
    """The per-example evidence of one scope: the base's pairs with `models` (pairs table rows with a
    finite ensemble accuracy), the representative pairs' angles, the greedy ensemble `greedy_members`
    (its first member is the model it starts from) and the best single / combined embeddings (the
    study's feature and transfer results: dicts with 'best' (.npz of per-example correctness),
    'single', 'combined' and, for features, 'combined_holdout' and 'model_b').

    band=True: the accuracy-band scope. Only results whose every member is the base or one of
    `models` count (a feature or transfer result with a model outside the band is left out, never
    borrowed); a statistic without enough of them says "too few in-band models"."""
    from .ensembles import members_correct, representatives
    from .pairs import pair_outcome_codes
    from .specialization import top1

    ev = Evidence(band=band, n_models=len(set(models) | {base}))
    allowed = set(models) | {base}
    bp = pairs[(pairs["model_a"] == base) & pairs["model_b"].isin(models)]
    bp = bp[np.isfinite(bp["ensemble_acc"].astype(float))]
    plist = [(base, m) for m in bp["model_b"]]
    if plist:
        oc = pair_outcome_codes(store, plist, split=split, calibrated=True)
        for (a, m), df in oc.items():
            ev.correct_base = df["a_correct"].to_numpy()
            ev.correct[m] = df["b_correct"].to_numpy()
            ev.ens_correct[m] = df["ensemble_correct"].to_numpy()
        ev.category = dict(zip(bp["model_b"], bp["category"]))
    acc = dict(zip(bp["model_b"], bp["acc_b"]))
    acc[base] = float(bp["acc_a"].iloc[0]) if len(bp) else np.nan
    reps = representatives(pairs, base, acc, models=list(bp["model_b"]))
    labels = np.asarray(store.split(split).labels)
    pred: dict[str, np.ndarray] = {}  # top-1 classes by the calibrated probabilities
    if reps:
        pa, ca = top1(store, base, split, calibrated=True)
        pred[base] = pa
        for cat, m in reps.items():
            pb, cb = top1(store, m, split, calibrated=True)
            ev.phi[cat] = sm.confidence_angle(ca, cb)
            ev.outcome[cat] = sm.outcome_codes(pa == labels, pb == labels)
            ev.rep_model[cat] = m
    if greedy_members:
        def correct(m):
            if m not in pred:
                pred[m] = top1(store, m, split, calibrated=True)[0]
            return labels == pred[m]

        if ev.correct_base is None:
            ev.correct_base = correct(base)
        # claim 4 compares the ensemble with the model it starts from (the high-accuracy model)
        ev.greedy_base = greedy_members[0]
        ev.greedy_base_correct = ev.correct_base if greedy_members[0] == base else correct(greedy_members[0])
        ev.greedy_correct = (members_correct(store, greedy_members, split) if len(greedy_members) > 1
                             else ev.greedy_base_correct)
        ev.greedy_members = greedy_members[1:]
    cands = [f for f in features if "best" in f]
    if transfer and "best" in transfer:
        cands.append({**transfer, "single_holdout": 0, "combined_holdout": 0, "_transfer": True})
    if band:
        def members(c):
            if not c.get("_transfer"):
                return {base, c.get("model_b", "")}
            return {str(c["single"]), *str(c["combined"]).split("+")}

        n_all = len(cands)
        cands = [c for c in cands if members(c) <= allowed]
        if n_all and not cands:
            ev.missing[5] = (f"{TOO_FEW}: every feature-combination or stacked-transfer result uses a model "
                             f"outside the band")
    if cands:
        # prefer the downstream (stacked transfer) result; else the best feature combination by holdout
        pick = next((c for c in cands if c.get("_transfer")), None) or max(cands, key=lambda c: c["combined_holdout"])
        z = np.load(pick["best"])
        ev.single_correct, ev.combined_correct = z["single"], z["combined"]
        ev.single_name, ev.combined_name = pick["single"], pick["combined"]
    return ev


def study_findings(store, pairs: pd.DataFrame, base: str, acc: dict[str, float], band: tuple[float, float], *,
                   split: str = TEST, greedy_members: list[str] | None = None, high_accuracy: str = "",
                   max_size: int = 4, features: list[dict] = (), transfer: dict | None = None,
                   n_boot: int = N_BOOT, seed: int = 0) -> tuple[pd.DataFrame, int]:
    """The findings table of a study in both scopes: "all" (every model; the study's greedy run
    `greedy_members`) and "band" (models whose test accuracy `acc` lies in `band`, with the base:
    their pairs with the base, representatives, feature and transfer results whose members are all
    in the band, and a greedy run over the lower-accuracy models in the band from the high-accuracy
    model when it lies in the band, else from the base). A band statistic without enough in-band
    models says "too few in-band models" and is inconclusive. Returns the table and the number of
    models in the band."""
    from ._select import as_store
    from .ensembles import lower_accuracy_greedy

    store = as_store(store)
    all_models = [m for m in acc if m != base]
    in_band = [m for m in all_models if band[0] <= acc[m] <= band[1]]
    cats = dict(zip(pairs["model_b"], pairs["category"]))
    # the band's greedy run starts from the high-accuracy model only when it lies in the band
    start = high_accuracy if high_accuracy in in_band else base
    _, band_members, _ = lower_accuracy_greedy(store, start, [m for m in in_band if m != start],
                                               max_size=max_size, cats=cats)
    kw = dict(features=list(features), transfer=transfer)
    ev = {"all": scope_evidence(store, pairs, base, all_models, split, greedy_members=greedy_members, **kw),
          "band": scope_evidence(store, pairs, base, in_band, split, greedy_members=band_members, band=True, **kw)}
    return findings_table(ev, n_boot=n_boot, seed=seed), len(in_band)
