"""Tests of the pure specialization functions: angles, separation, per-class margins, group tests."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from divergent.errors import DivergentError
from divergent.metrics import specialization as sm


# ---- angles -------------------------------------------------------------------------------------

def test_angles_known_values():
    phi = sm.confidence_angle([0.5, 0.99, 0.01, 1.0, math.sqrt(3) / 2, 0.3], [0.5, 0.01, 0.99, math.sqrt(3), 0.5, 0.3])
    np.testing.assert_allclose(phi[[0, 5]], 45.0, atol=1e-12)           # equal confidence
    assert phi[1] > 89.0 and phi[2] < 1.0                                # A (resp. B) dominates
    np.testing.assert_allclose(phi[1] + phi[2], 90.0, atol=1e-12)        # swapping A and B mirrors
    np.testing.assert_allclose(phi[3], 30.0, atol=1e-12)                 # atan2(1, sqrt 3)
    np.testing.assert_allclose(phi[4], 60.0, atol=1e-12)


def test_angle_rejects_bad_input():
    with pytest.raises(DivergentError):
        sm.confidence_angle([0.5, 0.2], [0.5])
    with pytest.raises(DivergentError):
        sm.confidence_angle([-0.1], [0.5])


def test_top1_confidence_ties_to_lowest_index():
    p = np.array([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]])
    pred, conf = sm.top1_confidence(p)
    assert pred.tolist() == [0, 2]
    np.testing.assert_allclose(conf, [0.4, 0.7])


def test_outcome_codes():
    codes = sm.outcome_codes([1, 1, 0, 0], [1, 0, 1, 0])
    assert [sm.OUTCOMES[c] for c in codes] == ["both", "only_a", "only_b", "neither"]


def test_histogram_counts_and_right_edge():
    phi = np.array([0.0, 4.9, 5.0, 90.0, 45.0, 45.0])
    out = sm.outcome_codes([1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 1, 1])
    edges, hist = sm.angle_histogram(phi, out, bins=18)
    assert len(edges) == 19 and edges[0] == 0 and edges[-1] == 90
    assert hist["only_a"].sum() == 4 and hist["only_a"][0] == 2 and hist["only_a"][1] == 1 and hist["only_a"][-1] == 1
    assert hist["only_b"][9] == 1 and hist["both"][9] == 1 and hist["neither"].sum() == 0


# ---- separation ---------------------------------------------------------------------------------

def test_separation_hand_case():
    phi = np.array([60.0, 70.0, 30.0, 20.0, 45.0, 10.0])
    out = np.array([sm.ONLY_A, sm.ONLY_A, sm.ONLY_B, sm.ONLY_B, sm.BOTH, sm.NEITHER])
    s = sm.separation(phi, out, n_boot=200, seed=1)
    assert s["specialization_deg"]["value"] == pytest.approx(40.0)
    assert s["mean_phi_only_a"]["value"] == pytest.approx(65.0)
    assert s["a_margin_deg"]["value"] == pytest.approx(20.0)
    assert s["b_margin_deg"]["value"] == pytest.approx(20.0)
    assert s["median_diff_deg"]["value"] == pytest.approx(40.0)
    assert s["auc"]["value"] == 1.0
    assert s["specialization_deg"]["n"] == 4 and s["a_margin_deg"]["n"] == 2
    assert sm.specialization_score(phi, out) == pytest.approx(40.0)
    lo, hi = s["specialization_deg"]["ci_low"], s["specialization_deg"]["ci_high"]
    assert 30.0 <= lo <= 40.0 <= hi <= 50.0


def test_separation_auc_matches_sklearn_and_scipy():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(50, 10, 80))       # rounded: plenty of ties
    b = np.round(rng.normal(44, 10, 60))
    phi = np.concatenate([a, b])
    out = np.array([sm.ONLY_A] * 80 + [sm.ONLY_B] * 60)
    s = sm.separation(phi, out, n_boot=0)
    auc = sklearn_metrics.roc_auc_score(np.r_[np.ones(80), np.zeros(60)], phi)
    assert s["auc"]["value"] == pytest.approx(auc, abs=1e-12)
    assert s["auc"]["p_value"] == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert math.isnan(s["auc"]["ci_low"])


def test_separation_empty_group_is_nan():
    s = sm.separation(np.array([50.0, 60.0]), np.array([sm.ONLY_A, sm.BOTH]), n_boot=50)
    assert math.isnan(s["specialization_deg"]["value"]) and math.isnan(s["auc"]["value"])
    assert s["mean_phi_only_a"]["value"] == 50.0


def test_separation_invariant_to_example_order():
    rng = np.random.default_rng(3)
    phi = rng.uniform(0, 90, 500)
    out = rng.integers(0, 4, 500)
    perm = rng.permutation(500)
    s1 = sm.separation(phi, out, n_boot=100, seed=7)
    s2 = sm.separation(phi[perm], out[perm], n_boot=100, seed=7)
    for k in s1:
        for f in ("value", "ci_low", "ci_high", "p_value"):
            np.testing.assert_allclose(s1[k][f], s2[k][f], rtol=1e-12, equal_nan=True)


def test_separation_bootstrap_coverage_is_roughly_nominal():
    """Two-sample bootstrap interval of the mean difference covers the truth ~95% of the time."""
    rng = np.random.default_rng(12345)
    truth, reps, hits = 15.0, 150, 0
    out = np.array([sm.ONLY_A] * 60 + [sm.ONLY_B] * 40)
    for r in range(reps):
        phi = np.concatenate([rng.normal(55, 8, 60), rng.normal(40, 8, 40)])
        s = sm.separation(phi, out, n_boot=300, seed=r)["specialization_deg"]
        hits += s["ci_low"] <= truth <= s["ci_high"]
    assert 0.87 <= hits / reps <= 0.99


# ---- per class ----------------------------------------------------------------------------------

def test_per_class_hand_case():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    phi = np.array([80, 60, 45, 30, 20, 50, 40.0])
    out = np.array([sm.ONLY_A, sm.ONLY_A, sm.BOTH, sm.ONLY_B, sm.ONLY_B, sm.ONLY_A, sm.NEITHER])
    pc = sm.per_class_specialization(phi, out, labels, 3)
    assert pc["n"].tolist() == [3, 4, 0]
    assert pc["n_only_a"].tolist() == [2, 1, 0] and pc["n_only_b"].tolist() == [0, 2, 0]
    assert pc["a_margin_deg"][0] == pytest.approx(25.0) and math.isnan(pc["b_margin_deg"][0])
    assert pc["a_margin_deg"][1] == pytest.approx(5.0) and pc["b_margin_deg"][1] == pytest.approx(20.0)
    assert pc["specialization_deg"][1] == pytest.approx(25.0) and pc["lean_deg"][1] == pytest.approx(-15.0)
    assert pc["share_only_a"][1] == pytest.approx(1 / 3) and math.isnan(pc["share_only_a"][2])


# ---- group test ---------------------------------------------------------------------------------

def _brute_two_group_p(values, groups):
    v = np.asarray(values, float)
    n0 = int((groups == 0).sum())
    obs = abs(v[groups == 0].mean() - v[groups == 1].mean())
    diffs = []
    for pick in itertools.combinations(range(len(v)), n0):
        m = np.zeros(len(v), bool)
        m[list(pick)] = True
        diffs.append(abs(v[m].mean() - v[~m].mean()))
    return np.mean(np.array(diffs) >= obs - 1e-12)


def test_group_test_exact_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1, 10)
    g = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    t = sm.group_test(v, g)
    assert t["method"] == "exact" and t["n_perm"] == math.comb(10, 4)
    assert t["p_value"] == pytest.approx(_brute_two_group_p(v, g))
    assert t["difference"] == pytest.approx(v[:6].mean() - v[6:].mean())
    assert t["kruskal_p"] == pytest.approx(stats.kruskal(v[:6], v[6:]).pvalue)


def test_group_test_detects_planted_effect_not_null():
    rng = np.random.default_rng(1)
    g = np.array([0] * 6 + [1] * 4)                 # CIFAR-10-sized: 6 vs 4 classes
    planted = np.where(g == 0, 8.0, -8.0) + rng.normal(0, 2, 10)
    assert sm.group_test(planted, g)["p_value"] <= 1 / 210 + 1e-12
    # under the null the test rejects at the nominal rate (exact test: at most 5%)
    rejections = [sm.group_test(rng.normal(0, 2, 10), g)["p_value"] <= 0.05 for _ in range(200)]
    assert np.mean(rejections) <= 0.09


def test_group_test_monte_carlo_three_groups_seeded():
    rng = np.random.default_rng(2)
    g = np.repeat([0, 1, 2], 20)
    null = rng.normal(0, 1, 60)
    t1 = sm.group_test(null, g, n_perm=2000, seed=5)
    t2 = sm.group_test(null, g, n_perm=2000, seed=5)
    assert t1["method"] == "monte-carlo" and t1["p_value"] == t2["p_value"] and t1["p_value"] > 0.01
    planted = null + np.repeat([0.0, 1.5, -1.5], 20)
    t = sm.group_test(planted, g, n_perm=2000, seed=5)
    assert t["p_value"] <= 2 / 2001 and math.isnan(t["difference"])
    # the statistic equals the between-group sum of squares (one-way ANOVA numerator)
    ss = sum(20 * (planted[g == k].mean() - planted.mean()) ** 2 for k in range(3))
    assert t["statistic"] == pytest.approx(ss)


def test_group_test_drops_nan_and_ungrouped():
    v = np.array([1.0, 2.0, np.nan, 3.0, 4.0, 100.0])
    g = np.array([0, 0, 0, 1, 1, -1])
    t = sm.group_test(v, g)
    assert t["n_units"] == 4 and t["n_dropped"] == 1 and t["group_means"] == {0: 1.5, 1: 3.5}
    assert sm.group_test(np.array([1.0, 2.0]), np.array([0, 1]))["method"].startswith("too few")
