"""Tests of the Figure 2 relationship summaries: statistics, the shared-resample bootstrap, the store path."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from divergent.errors import DivergentError
from divergent.metrics import pairs as pm
from divergent.metrics import relationships as rm
from divergent.metrics.bootstrap import shared_resamples
from divergent.metrics.probs import ensemble_probs, reference_probs


# ---- statistics against independent implementations -----------------------------------------------

def test_statistics_match_numpy_and_scipy():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.3, 12)
    y = 0.2 * x + rng.normal(0, 0.01, 12)
    cat = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    st = rm.relationship_stats(x, y, cat)
    assert st["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-10)
    assert st["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    design = np.column_stack([x, cat == 0, cat == 1, cat == 2]).astype(float)   # y ~ x + dummies
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    assert st["within_category_slope"] == pytest.approx(beta[0], rel=1e-10)
    # vectorised over resamples: row-wise equal to the 1-D results
    xb, yb = np.stack([x, x[::-1]]), np.stack([y, y])
    np.testing.assert_allclose(rm.ols_slope(xb, yb)[1], np.polyfit(x[::-1], y, 1)[0], rtol=1e-10)
    ties = np.array([1.0, 1.0, 2.0, 3.0, 3.0])
    assert rm.spearman(ties, ties[::-1]) == pytest.approx(stats.spearmanr(ties, ties[::-1]).statistic)


def test_within_slope_removes_a_category_confound():
    # inside each category y falls with x, but categories with larger x have larger y
    x = np.array([1, 2, 3, 11, 12, 13, 21, 22, 23.0])
    cat = np.repeat([0, 1, 2], 3)
    y = -0.5 * x + 10 * cat
    st = rm.relationship_stats(x, y, cat)
    assert st["slope"] > 0 and st["within_category_slope"] == pytest.approx(-0.5)


# ---- the shared-resample bootstrap -----------------------------------------------------------------

def _simulate(n, rng, p_pairs=6):
    """Per-pair outcome probabilities with rising error inconsistency and conversion."""
    codes, pis = [], []
    for j in range(p_pairs):
        inc = 0.05 + 0.05 * j
        conv = 0.45 + 0.05 * j
        both = 0.7 - inc
        pi = np.zeros(8)
        pi[pm.A_OK | pm.B_OK | pm.ENS_OK] = both
        pi[pm.A_OK | pm.ENS_OK] = pi[pm.B_OK | pm.ENS_OK] = inc / 2 * conv
        pi[pm.A_OK] = pi[pm.B_OK] = inc / 2 * (1 - conv)
        pi[0] = 1 - pi.sum()
        pis.append(pi)
        codes.append(rng.choice(8, size=n, p=pi).astype(np.uint8))
    return np.stack(codes), np.stack([np.r_[pi, np.zeros(8)] for pi in pis])


def _naive_bootstrap(codes, cat, n_boot, seed, resp="gain_vs_mean", stat="slope"):
    vals = []
    for idx in shared_resamples(codes.shape[1], n_boot=n_boot, seed=seed):
        counts = np.stack([np.bincount(c[idx], minlength=16) for c in codes])
        m = pm.metrics_from_counts(counts)
        vals.append(rm.relationship_stats(m["error_inconsistency"][None], m[resp][None], cat)[stat][0])
    return np.percentile(vals, [2.5, 97.5])


def test_bootstrap_matches_naive_shared_resampling():
    rng = np.random.default_rng(1)
    codes, _ = _simulate(400, rng, 5)
    order = np.lexsort(codes[::-1])   # the function's canonical example order
    cat = np.array(["arch", "arch", "data", "data", "data"])
    rows = rm.relationship_bootstrap(codes, cat, n_boot=150, seed=3)
    got = {(r["response"], r["statistic"]): r for r in rows}
    canon = codes[:, order]
    for resp, stat in (("gain_vs_mean", "slope"), ("conversion_rate", "spearman"), ("gain_vs_best", "within_category_slope")):
        lo, hi = _naive_bootstrap(canon, np.array([0, 0, 1, 1, 1]), 150, 3, resp, stat)
        assert got[(resp, stat)]["ci_low"] == pytest.approx(lo, rel=1e-9, abs=1e-12)
        assert got[(resp, stat)]["ci_high"] == pytest.approx(hi, rel=1e-9, abs=1e-12)


def test_point_estimates_use_the_core_pair_metrics():
    rng = np.random.default_rng(2)
    ca, cb, ce = rng.random((3, 4, 300)) < 0.7
    codes = rm.pair_codes(ca, cb, ce)
    rows = rm.relationship_bootstrap(codes, None, n_boot=20, seed=0)
    x = np.array([pm.error_inconsistency(a, b) for a, b in zip(ca, cb)])
    y = np.array([pm.conversion_rate(a, b, e) for a, b, e in zip(ca, cb, ce)])
    r = next(r for r in rows if r["response"] == "conversion_rate" and r["statistic"] == "slope")
    assert r["estimate"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-10)
    w = next(r for r in rows if r["statistic"] == "within_category_slope")
    assert np.isnan(w["estimate"])           # no category given


def test_bootstrap_invariant_to_example_and_pair_order():
    rng = np.random.default_rng(3)
    codes, _ = _simulate(300, rng, 6)
    cat = np.array(list("aabbcc"))
    keys = [("base", f"m{j}") for j in range(6)]
    r1 = pd.DataFrame(rm.relationship_bootstrap(codes, cat, n_boot=60, seed=4, pair_keys=keys))
    pe, pp = rng.permutation(300), rng.permutation(6)
    r2 = pd.DataFrame(rm.relationship_bootstrap(codes[:, pe], cat, n_boot=60, seed=4))
    pd.testing.assert_frame_equal(r1, r2, check_exact=False, rtol=1e-12)       # example order
    r3 = pd.DataFrame(rm.relationship_bootstrap(codes[pp][:, pe], cat[pp], n_boot=60, seed=4,
                                                pair_keys=[keys[i] for i in pp]))
    pd.testing.assert_frame_equal(r1, r3, check_exact=False, rtol=1e-12)       # pair order too


def test_bootstrap_coverage_is_roughly_nominal():
    rng = np.random.default_rng(4)
    reps, hits = 60, {"slope": 0, "spearman": 0}
    _, pis = _simulate(10, rng, 6)
    truth_m = pm.metrics_from_counts(pis)
    true_slope = rm.ols_slope(truth_m["error_inconsistency"], truth_m["gain_vs_mean"])
    for r in range(reps):
        codes, _ = _simulate(1500, rng, 6)
        rows = rm.relationship_bootstrap(codes, None, responses=("gain_vs_mean",), n_boot=200, seed=r)
        s = next(x for x in rows if x["statistic"] == "slope")
        hits["slope"] += s["ci_low"] <= true_slope <= s["ci_high"]
    assert 0.83 <= hits["slope"] / reps <= 1.0


def test_needs_three_pairs_and_aligned_arrays():
    with pytest.raises(DivergentError, match="at least 3"):
        rm.relationship_bootstrap(np.zeros((2, 10), np.uint8))
    with pytest.raises(DivergentError, match="same examples"):
        rm.pair_codes(np.ones((2, 5)), np.ones((2, 4)), np.ones((2, 5)))


# ---- from a store ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store4(tmp_path_factory):
    from divergent.store import Store

    rng = np.random.default_rng(5)
    n, k = 300, 5
    labels = rng.integers(0, k, n)
    st = Store.create(tmp_path_factory.mktemp("rel") / "st")
    with st.writer() as w:
        w.add_split("test", labels=labels, class_names=list("abcde"), ids=[f"x/{i}" for i in range(n)])
        for j, name in enumerate(["base", "m1", "m2", "m3", "m4"]):
            lg = rng.normal(0, 1, (n, k)).astype(np.float32)
            lg[np.arange(n), labels] += 1.0 + 0.3 * j
            w.put(name, "test", logits=lg)
            w.set_temperature(name, 0.7 + 0.2 * j, fit_on="holdout")
    return Store.open(st.root)


def _reference_outcomes(st, pairs):
    """Per pair: (A correct, B correct, ensemble correct) by the reference arithmetic."""
    labels = st.split("test").labels
    probs = {m: reference_probs(st.array(m, "test", "logits"), st.temperature(m)) for m in st.models}
    return [(probs[a].argmax(1) == labels, probs[b].argmax(1) == labels,
             ensemble_probs([probs[a], probs[b]]).argmax(1) == labels) for a, b in pairs]


def _reference_codes(st, pairs):
    return np.stack([pm.encode(*o) for o in _reference_outcomes(st, pairs)])


PAIRS4 = pd.DataFrame({"model_a": ["base"] * 4, "model_b": ["m1", "m2", "m3", "m4"],
                       "category": ["arch", "arch", "data", "data"]})


def test_store_codes_follow_reference_arithmetic(store4):
    from divergent.analyses.relationships import pair_outcome_codes, relationships

    pairs = PAIRS4
    plist = list(zip(pairs.model_a, pairs.model_b))
    codes = pair_outcome_codes(store4, pairs, "test")
    np.testing.assert_array_equal(codes, _reference_codes(store4, plist))
    out = relationships(store4, pairs, "test", n_boot=100, seed=0)
    assert len(out) == 4 * 3 and set(out["statistic"]) == set(rm.STATISTICS)
    # every statistic is defined here (4 pairs, 2 categories of 2): none may be NaN
    assert np.isfinite(out[["estimate", "ci_low", "ci_high"]].to_numpy()).all()
    assert (out["ci_low"] <= out["ci_high"]).all()
    # point estimates, recomputed from the per-example outcomes by the definitions, with numpy / scipy
    x, resp = [], {r: [] for r in rm.RESPONSES}
    for a, b, e in _reference_outcomes(store4, plist):
        inc = a != b
        acc_a, acc_b, acc_e = a.mean(), b.mean(), e.mean()
        x.append(inc.mean())
        resp["ensemble_acc"].append(acc_e)
        resp["gain_vs_best"].append(acc_e - max(acc_a, acc_b))
        resp["gain_vs_mean"].append(acc_e - (acc_a + acc_b) / 2)
        resp["conversion_rate"].append(e[inc].mean())
    dummies = np.column_stack([x, pairs.category == "arch", pairs.category == "data"]).astype(float)
    got = out.set_index(["response", "statistic"])["estimate"]
    for r, y in resp.items():
        assert got[(r, "slope")] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9, abs=1e-12), r
        assert got[(r, "spearman")] == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-9, abs=1e-12), r
        assert got[(r, "within_category_slope")] == pytest.approx(np.linalg.lstsq(dummies, y, rcond=None)[0][0],
                                                                  rel=1e-9, abs=1e-12), r
    # a pairs table whose columns disagree with the recomputation is flagged
    bad = pairs.assign(error_inconsistency=[0.9, 0.8, 0.7, 0.6])
    with pytest.warns(UserWarning, match="error_inconsistency"):
        relationships(store4, bad, "test", n_boot=10, codes=codes)


def test_store_codes_match_the_core_pairs_table(store4):
    """Cross-check against the core pairs table (the engine path)."""
    from divergent.analyses.pairs import pairs
    from divergent.analyses.relationships import relationship_table, relationships

    table = pairs(store4, split="test", base="base", n_boot=0, cache=False)
    assert list(table["model_b"]) == list(PAIRS4.model_b)
    table = table.assign(category=PAIRS4.category.to_list())
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # recomputed metrics must agree with the table
        out = relationships(store4, table, "test", n_boot=50)
    point = relationship_table(table).set_index(["response", "statistic"])["estimate"]
    got = out.set_index(["response", "statistic"])["estimate"]
    assert np.isfinite(point).all() and len(point) == 12
    np.testing.assert_allclose(got.loc[point.index], point, rtol=1e-9)
