"""Findings logic: verdicts from constructed intervals, and statistics from constructed per-example data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from divergent.analyses.findings import (CONTRADICTED, HOLDS, INCONCLUSIVE, Evidence, claim_statistics,
                                         findings_table, make_row, verdict)
from divergent.metrics import specialization as sm


@pytest.mark.parametrize("lo,hi,direction,expected", [
    (0.1, 0.5, +1, HOLDS), (-0.5, -0.1, +1, CONTRADICTED), (-0.1, 0.2, +1, INCONCLUSIVE),
    (0.0, 0.2, +1, INCONCLUSIVE), (-0.2, 0.0, +1, INCONCLUSIVE),
    (-0.5, -0.1, -1, HOLDS), (0.1, 0.5, -1, CONTRADICTED), (float("nan"), 0.3, +1, INCONCLUSIVE),
])
def test_verdict(lo, hi, direction, expected):
    assert verdict(lo, hi, direction) == expected


def test_make_row_not_computed_is_inconclusive_with_reason():
    r = make_row(3, "band", float("nan"), float("nan"), float("nan"), reason="no reinit pair")
    assert r["verdict"] == INCONCLUSIVE and "no reinit pair" in r["text"]


def _evidence(strength: float, n: int = 4000, seed: int = 0) -> Evidence:
    """Base right ~80%; others disagree with the base more the further their category (times strength)."""
    rng = np.random.default_rng(seed)
    cb = rng.random(n) < 0.8
    ev = Evidence(correct_base=cb)
    cats = ["reinit", "hyperparameters", "architecture", "framework", "dataset"]
    for i, c in enumerate(cats):
        for k in range(2):
            m = f"{c}-{k}"
            flip = rng.random(n) < 0.02 + strength * 0.03 * i
            cm = np.where(flip, ~cb, cb)
            # ensemble converts a share of inconsistent examples that grows with the category
            inc = cm != cb
            conv = rng.random(n) < (0.5 + strength * 0.08 * i)
            ens = np.where(inc, conv, cb)
            ev.correct[m], ev.ens_correct[m], ev.category[m] = cm, ens, c
    return ev


def test_claims_hold_on_constructed_data():
    rows = {r["claim"]: r for r in claim_statistics(_evidence(1.0), n_boot=200)}
    assert rows[1]["estimate"] > 0.8 and rows[1]["lo"] > 0
    assert rows[2]["estimate"] > 0 and rows[2]["lo"] > 0


def test_claim_1_contradicted_when_order_reversed():
    ev = _evidence(1.0)
    rev = {"reinit": "dataset", "hyperparameters": "framework", "architecture": "architecture",
           "framework": "hyperparameters", "dataset": "reinit"}
    ev.category = {m: rev[c] for m, c in ev.category.items()}
    f = findings_table({"all": ev}, n_boot=200)
    assert f.set_index("claim").loc[1, "verdict"] == CONTRADICTED


def test_claim_1_inconclusive_without_signal():
    f = findings_table({"all": _evidence(0.0)}, n_boot=200)
    assert f.set_index("claim").loc[1, "verdict"] == INCONCLUSIVE


def test_claim_3_4_5_from_arrays():
    rng = np.random.default_rng(1)
    n = 3000
    ev = _evidence(1.0, n=n)
    for cat, sep in (("reinit", 1.0), ("dataset", 10.0)):
        oc = rng.choice(np.array([sm.ONLY_A, sm.ONLY_B, sm.BOTH, sm.NEITHER]), size=n, p=[0.1, 0.1, 0.7, 0.1])
        phi = 45 + np.where(oc == sm.ONLY_A, sep / 2, np.where(oc == sm.ONLY_B, -sep / 2, 0)) + rng.normal(0, 3, n)
        ev.phi[cat], ev.outcome[cat] = phi, oc
    ev.greedy_correct = np.where(rng.random(n) < 0.1, True, ev.correct_base)  # strictly better
    ev.combined_correct = rng.random(500) < 0.9
    ev.single_correct = ev.combined_correct & (rng.random(500) < 0.97)
    f = findings_table({"all": ev}, n_boot=300).set_index("claim")
    assert f.loc[3, "verdict"] == HOLDS and math.isclose(f.loc[3, "estimate"], 9.0, abs_tol=1.0)
    assert f.loc[4, "verdict"] == HOLDS and f.loc[4, "estimate"] > 0
    assert f.loc[5, "verdict"] == HOLDS
    assert "dataset pair" in f.loc[3, "text"]


def test_missing_evidence_is_inconclusive_and_says_why():
    f = findings_table({"band": Evidence()}, n_boot=50).set_index("claim")
    assert (f["verdict"] == INCONCLUSIVE).all()
    assert "Not computed within the accuracy band" in f.loc[4, "text"]


def test_shared_resample_is_deterministic():
    a = findings_table({"all": _evidence(1.0)}, n_boot=100, seed=3)
    b = findings_table({"all": _evidence(1.0)}, n_boot=100, seed=3)
    assert a.equals(b)


def test_claim_4_compares_with_the_model_the_greedy_ensemble_starts_from():
    # the study's greedy ensemble may start from a high-accuracy model other than the pairs' base
    # (cifar10: base cnn 73 %, greedy from pretrained/resnet56 83 %): the gain is over that model
    rng = np.random.default_rng(2)
    n = 4000
    ev = _evidence(1.0, n=n)
    strong = rng.random(n) < 0.83
    ev.greedy_base, ev.greedy_base_correct = "pretrained/resnet56", strong
    ev.greedy_correct = strong.copy()
    ev.greedy_correct[np.flatnonzero(~strong)[:80]] = True          # +2 pp over the strong model
    ev.greedy_members = ["m1", "m2"]
    f = findings_table({"all": ev}, n_boot=200).set_index("claim")
    assert math.isclose(f.loc[4, "estimate"], 80 / n, abs_tol=1e-12)
    assert "greedy ensemble of pretrained/resnet56 with lower-accuracy models (m1, m2)" in f.loc[4, "text"]


def test_study_probabilities_refuse_a_missing_or_same_split_temperature(tmp_path):
    """The greedy ensemble's and the starting model's correctness use the calibrated probabilities
    with the library's refusals (no silent T = 1)."""
    from divergent.analyses.ensembles import members_correct
    from divergent.errors import DivergentError
    from divergent.metrics.probs import ensemble_probs, reference_probs
    from divergent.store import Store

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    logits = {m: rng.normal(size=(50, 3)).astype(np.float32) for m in ("a", "b")}
    st = Store.create(tmp_path / "s")
    with st.writer() as w:
        w.add_split("test", labels=y, class_names=["x", "y", "z"], ids=[f"t/{i}" for i in range(50)])
        for m, z in logits.items():
            w.put(m, "test", logits=z)
        w.set_temperature("a", 1.5, fit_on="holdout")
    st = Store.open(tmp_path / "s")
    with pytest.raises(DivergentError, match="no temperature"):
        members_correct(st, ["a", "b"], "test")
    with st.writer() as w:
        w.set_temperature("b", 0.7, fit_on="test")
    with pytest.raises(DivergentError, match="fitted on 'test'"):
        members_correct(Store.open(tmp_path / "s"), ["a", "b"], "test")
    with st.writer() as w:
        w.set_temperature("b", 0.7, fit_on="holdout")
    q = ensemble_probs([reference_probs(logits["a"], 1.5), reference_probs(logits["b"], 0.7)])
    assert np.array_equal(members_correct(Store.open(tmp_path / "s"), ["a", "b"], "test"), q.argmax(1) == y)


def test_scope_evidence_from_a_store(tmp_path):
    """Per-example evidence read from a store: pair correctness, the representatives' angles and
    outcome codes (A = the base), and the greedy ensemble against the model it starts from."""
    import pandas as pd

    from divergent.analyses.findings import scope_evidence
    from divergent.metrics.probs import ensemble_probs, reference_probs
    from divergent.store import Store

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    logits = {m: (rng.normal(size=(60, 3)) + 2 * np.eye(3)[y] * k).astype(np.float32)
              for m, k in (("base", 1.0), ("r", 0.8), ("d", 0.6))}
    temps = {"base": 1.2, "r": 0.9, "d": 1.0}
    st = Store.create(tmp_path / "s")
    with st.writer() as w:
        w.add_split("test", labels=y, class_names=["x", "y", "z"], ids=[f"t/{i}" for i in range(60)])
        for m, z in logits.items():
            w.put(m, "test", logits=z)
            w.set_temperature(m, temps[m], fit_on="holdout")
    st = Store.open(tmp_path / "s")
    p = {m: reference_probs(z, temps[m]) for m, z in logits.items()}
    ok = {m: q.argmax(1) == y for m, q in p.items()}
    acc = {m: float(v.mean()) for m, v in ok.items()}
    pairs = pd.DataFrame({"model_a": "base", "model_b": ["r", "d"], "category": ["reinit", "dataset"],
                          "acc_a": acc["base"], "acc_b": [acc["r"], acc["d"]], "ensemble_acc": 0.5})
    ev = scope_evidence(st, pairs, "base", ["r", "d"], "test", greedy_members=["base", "d"])
    assert np.array_equal(ev.correct_base, ok["base"]) and np.array_equal(ev.correct["d"], ok["d"])
    assert np.array_equal(ev.ens_correct["r"], ensemble_probs([p["base"], p["r"]]).argmax(1) == y)
    assert ev.rep_model == {"reinit": "r", "dataset": "d"} and ev.category == {"r": "reinit", "d": "dataset"}
    only_a = ok["base"] & ~ok["d"]
    assert np.array_equal(ev.outcome["dataset"] == sm.ONLY_A, only_a)
    assert np.array_equal(ev.phi["dataset"], np.degrees(np.arctan2(p["base"].max(1), p["d"].max(1))))
    assert ev.greedy_base == "base" and ev.greedy_members == ["d"]
    assert np.array_equal(ev.greedy_correct, ensemble_probs([p["base"], p["d"]]).argmax(1) == y)


def test_band_statistics_use_in_band_models_only(tmp_path):
    """The band scope never borrows: a feature or transfer result with an out-of-band member, or
    out-of-band pairs, are left out, and a statistic without enough in-band models says so."""
    import pandas as pd

    from divergent.analyses.findings import TOO_FEW, study_findings
    from divergent.store import Store

    rng = np.random.default_rng(3)
    n = 400
    y = {s: rng.integers(0, 3, n) for s in ("holdout", "test")}
    skill = {"base": 1.6, "r": 1.5, "h": 1.45, "d": 0.3, "a": 0.35}   # d and a: far less accurate
    cats = {"r": "reinit", "h": "hyperparameters", "d": "dataset", "a": "architecture"}
    st = Store.create(tmp_path / "s")
    with st.writer() as w:
        for s in y:
            w.add_split(s, labels=y[s], class_names=["x", "y", "z"], ids=[f"{s}/{i}" for i in range(n)])
        for m, k in skill.items():
            for s in y:
                w.put(m, s, logits=(rng.normal(size=(n, 3)) + k * 2 * np.eye(3)[y[s]]).astype(np.float32))
            w.set_temperature(m, 1.0, fit_on="holdout")
    st = Store.open(tmp_path / "s")
    from divergent.analyses.ensembles import members_correct

    acc = {m: float(members_correct(st, [m], "test").mean()) for m in skill}
    band = (min(acc["base"], acc["r"], acc["h"]) - 1e-9, max(acc["base"], acc["r"], acc["h"]) + 1e-9)
    assert not band[0] <= acc["d"] <= band[1] and not band[0] <= acc["a"] <= band[1]
    pairs = pd.DataFrame({"model_a": "base", "model_b": list(cats), "category": list(cats.values()),
                          "acc_a": acc["base"], "acc_b": [acc[m] for m in cats], "ensemble_acc": 0.5})
    best = tmp_path / "best.npz"
    np.savez(best, single=members_correct(st, ["base"], "test"), combined=members_correct(st, ["base", "d"], "test"))
    feats = [dict(best=str(best), model_b="d", single="base", combined="base+d (concat)", single_holdout=0.5,
                  combined_holdout=0.6)]
    tr = dict(best=str(best), single="base", combined="base+d")
    f, n_in = study_findings(st, pairs, "base", acc, band, greedy_members=["base", "d"], features=feats,
                             transfer=tr, n_boot=50)
    assert n_in == 2
    f = f.set_index(["scope", "claim"])
    # all models: computed from every pair and result; band: too few in-band models, nothing borrowed
    assert f.loc[("all", 5), "estimate"] == f.loc[("all", 5), "estimate"] and f.loc[("all", 2), "n"] == 4
    for c in (1, 2, 5):
        assert TOO_FEW in f.loc[("band", c), "text"] and f.loc[("band", c), "verdict"] == INCONCLUSIVE, c
        assert np.isnan(f.loc[("band", c), "estimate"])
    # the band's greedy run: from the base over in-band lower-accuracy models only (d is out of band)
    assert "(d" not in f.loc[("band", 4), "text"] and ", d" not in f.loc[("band", 4), "text"]
    # with the result of an in-band pair, claim 5 in the band uses it (and not the out-of-band one)
    np.savez(tmp_path / "b2.npz", single=members_correct(st, ["base"], "test"),
             combined=members_correct(st, ["base", "r"], "test"))
    feats.append(dict(best=str(tmp_path / "b2.npz"), model_b="r", single="base", combined="base+r (concat)",
                      single_holdout=0.5, combined_holdout=0.55))
    f2 = study_findings(st, pairs, "base", acc, band, greedy_members=["base", "d"], features=feats, transfer=tr,
                        n_boot=50)[0].set_index(["scope", "claim"])
    assert "base+r (concat)" in f2.loc[("band", 5), "text"] and "base+d" in f2.loc[("all", 5), "text"]


def test_claim_1_interval_is_bca():
    from divergent.analyses.findings import INTERVALS

    f = findings_table({"all": _evidence(0.2, n=1000, seed=1)}, n_boot=200).set_index("claim")
    assert INTERVALS[1] == "BCa" and f.loc[1, "interval"] == "BCa" and "95% BCa CI" in f.loc[1, "text"]
    assert f.loc[2, "interval"] == "percentile" and "95% CI" in f.loc[2, "text"]
    # the numbers: BCa of the Spearman correlation over the same shared resamples, leave-one-out jackknife
    from divergent.analyses.findings import CATEGORY_RANK, _pair_stats
    from divergent.metrics.bootstrap import bca_interval, percentile_interval, resample_weights
    from divergent.metrics.relationships import spearman

    ev = _evidence(0.2, n=1000, seed=1)
    ranked = sorted(ev.correct)
    r = np.array([CATEGORY_RANK[ev.category[m]] for m in ranked], dtype=np.float64)
    n = ev.correct_base.size

    def rho(w):
        ei = _pair_stats(ev, ranked, w)[0]
        return spearman(np.broadcast_to(r, ei.shape), ei)

    boot = rho(resample_weights(n, n_boot=200, seed=0))
    loo = np.array([rho((np.arange(n) != i)[None].astype(np.float64))[0] for i in range(n)])  # dense, one by one
    expect = bca_interval(f.loc[1, "estimate"], boot, loo)
    assert (f.loc[1, "lo"], f.loc[1, "hi"]) == pytest.approx(expect, abs=1e-12)
    assert (f.loc[1, "lo"], f.loc[1, "hi"]) != pytest.approx(percentile_interval(boot), abs=1e-6)
