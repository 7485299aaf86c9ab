"""Findings logic: verdicts from constructed intervals, and statistics from constructed per-example data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from divergent.report.findings import (CONTRADICTED, HOLDS, INCONCLUSIVE, Evidence, claim_statistics,
                                       findings_table, make_row, verdict)


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
        oc = rng.choice(np.array(["only_a", "only_b", "both", "neither"]), size=n, p=[0.1, 0.1, 0.7, 0.1])
        phi = 45 + np.where(oc == "only_a", sep / 2, np.where(oc == "only_b", -sep / 2, 0)) + rng.normal(0, 3, n)
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
