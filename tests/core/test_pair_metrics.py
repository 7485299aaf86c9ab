"""Pair metrics: invariants (hypothesis), independent references and hand-computed cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import cohen_kappa_score

from divergent.metrics.pairs import (
    METRICS, code_counts, conversion_rate, encode, error_consistency, error_inconsistency,
    metrics_from_counts, reference_pair_codes,
)
from divergent.metrics.probs import reference_probs


def _probs(draw_seed, n, c):
    rng = np.random.default_rng(draw_seed)
    return rng.normal(size=(n, c)).astype(np.float32), rng.integers(0, c, n)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), c=st.integers(2, 6))
def test_invariants(seed, n, c):
    la, y = _probs(seed, n, c)
    lb, _ = _probs(seed + 1, n, c)
    pa, pb = reference_probs(la), reference_probs(lb)
    ab = metrics_from_counts(code_counts(reference_pair_codes(pa, pb, y)))
    ba = metrics_from_counts(code_counts(reference_pair_codes(pb, pa, y)))
    for name, (_, symmetric, _) in METRICS.items():
        if symmetric:
            np.testing.assert_allclose(ab[name], ba[name], equal_nan=True)
    assert ab["acc_a"] == pytest.approx(ba["acc_b"])
    assert ab["both_correct"] + ab["both_wrong"] + ab["error_inconsistency"] == pytest.approx(1.0)
    # a model with itself: no inconsistency, ensemble accuracy equals its own
    aa = metrics_from_counts(code_counts(reference_pair_codes(pa, pa, y)))
    assert aa["error_inconsistency"] == 0
    assert aa["ensemble_acc"] == pytest.approx(aa["acc_a"])
    # invariance to example order
    perm = np.random.default_rng(seed).permutation(n)
    pp = metrics_from_counts(code_counts(reference_pair_codes(pa[perm], pb[perm], y[perm])))
    for name in METRICS:
        np.testing.assert_allclose(ab[name], pp[name], equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.booleans(), min_size=2, max_size=80), seed=st.integers(0, 1000))
def test_error_consistency_is_cohens_kappa(a, seed):
    a = np.array(a)
    b = np.random.default_rng(seed).random(len(a)) < 0.6
    ours = error_consistency(a, b)
    if np.all(a == b):
        assert ours == 1.0  # Geirhos et al.'s reference code: kappa = 1 when consistency is 1
        return
    ref = cohen_kappa_score(a, b)
    if np.isnan(ref):
        return
    assert ours == pytest.approx(ref, abs=1e-12)


def test_hand_computed_case():
    # 6 examples; label 0 everywhere.  A: right on 0,1,2,3 ; B: right on 0,1,4
    # probabilities chosen so the ensemble rescues example 4 (B very confident) and not 2, 3.
    y = np.zeros(6, dtype=int)
    pa = np.array([[.9, .1], [.8, .2], [.6, .4], [.55, .45], [.4, .6], [.3, .7]])
    pb = np.array([[.7, .3], [.6, .4], [.1, .9], [.2, .8], [.95, .05], [.2, .8]])
    m = metrics_from_counts(code_counts(reference_pair_codes(pa, pb, y)))
    assert m["acc_a"] == pytest.approx(4 / 6) and m["acc_b"] == pytest.approx(3 / 6)
    assert m["error_inconsistency"] == pytest.approx(3 / 6)  # examples 2, 3, 4
    assert m["both_correct"] == pytest.approx(2 / 6) and m["both_wrong"] == pytest.approx(1 / 6)
    # ensemble: ex2 .35 vs .65 wrong; ex3 .375 vs .625 wrong; ex4 .675 right
    assert m["ensemble_acc"] == pytest.approx(3 / 6)
    assert m["conversion_rate"] == pytest.approx(1 / 3)
    assert m["gain_vs_best"] == pytest.approx(3 / 6 - 4 / 6)
    ca, cb = pa.argmax(1) == y, pb.argmax(1) == y
    assert error_inconsistency(ca, cb) == pytest.approx(0.5)
    assert conversion_rate(ca, cb, (pa + pb).argmax(1) == y) == pytest.approx(1 / 3)


def test_conversion_rate_missing_without_inconsistency():
    c = np.array([True, False, True])
    assert np.isnan(conversion_rate(c, c, c))
    m = metrics_from_counts(code_counts(encode(c, c, c, np.ones(3, bool))))
    assert np.isnan(m["conversion_rate"])


def test_ties_go_to_lowest_class():
    y = np.array([1])
    pa = np.array([[0.5, 0.5]])  # tie -> class 0 -> wrong
    pb = np.array([[0.5, 0.5]])
    m = metrics_from_counts(code_counts(reference_pair_codes(pa, pb, y)))
    assert m["acc_a"] == 0 and m["ensemble_acc"] == 0
