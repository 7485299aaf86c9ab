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
