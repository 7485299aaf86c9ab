"""Linear CKA: the streamed Gram-free estimator and the resample-weighted bootstrap against the
direct Gram-matrix definition, hand-computed cases, invariances (property tests on synthetic data)."""
import itertools

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.metrics import cka as cm


def _data(rng, n=40, p=6, q=4, offset=0.0):
    X = rng.normal(size=(n, p)) + offset
    Y = np.tanh(X @ rng.normal(size=(p, q))) + 0.5 * rng.normal(size=(n, q)) + offset
    return X, Y


def test_hand_computed_one_dimensional():
    # 1-D linear CKA is the squared Pearson correlation: x_c = [-1, 0, 1], y = [0, 1, 4]
    # -> sum xy = 4, sum x^2 = 2, sum y_c^2 = 78/9 -> r^2 = 16 / (2 * 78 / 9) = 12/13
    X, Y = np.array([[0.0], [1.0], [2.0]]), np.array([[0.0], [1.0], [4.0]])
    assert cm.linear_cka(X, Y) == pytest.approx(12 / 13, abs=1e-15)
    assert cm.cka_gram(X, Y) == pytest.approx(12 / 13, abs=1e-15)


def _u_statistic(K, L):
    """HSIC's U-statistic by brute force over distinct index tuples (Song et al. 2012, eq. 4)."""
    n = len(K)
    t2 = np.mean([K[i, j] * L[i, j] for i, j in itertools.permutations(range(n), 2)])
    t3 = np.mean([K[i, j] * L[i, q] for i, j, q in itertools.permutations(range(n), 3)])
    t4 = np.mean([K[i, j] * L[q, r] for i, j, q, r in itertools.permutations(range(n), 4)])
    return t2 + t4 - 2 * t3


def test_unbiased_hsic_is_the_u_statistic():
    rng = np.random.default_rng(3)
    X, Y = _data(rng, n=7, p=3, q=2)
    K, L = X @ X.T, Y @ Y.T
    ref = _u_statistic(K, L)
    assert cm.hsic_gram(K, L, unbiased=True) == pytest.approx(ref, rel=1e-12)
    assert cm.hsic_from_stats(cm.cross_stats(X, Y), unbiased=True) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_streamed_equals_gram(unbiased, chunk_rows):
    rng = np.random.default_rng(chunk_rows)
    for offset in (0.0, 50.0):  # a large mean: the centring must stay exact
        X, Y = _data(rng, offset=offset)
        got = cm.linear_cka(X, Y, unbiased=unbiased, chunk_bytes=8 * (X.shape[1] + Y.shape[1]) * chunk_rows)
        # CKA is shift-invariant (both estimators); the reference centres first, as raw Gram
        # matrices of features with a large mean lose digits to cancellation
        ref = cm.cka_gram(X - X.mean(0), Y - Y.mean(0), unbiased=unbiased)
        assert got == pytest.approx(ref, abs=1e-12)
        if offset == 0.0:
            assert got == pytest.approx(cm.cka_gram(X, Y, unbiased=unbiased), abs=1e-12)


def test_float16_and_memmap_inputs(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = _data(rng)
    np.save(tmp_path / "x.npy", X.astype(np.float16))
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert cm.linear_cka(Xm, Y) == pytest.approx(cm.cka_gram(Xm.astype(np.float64), Y), abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_invariances(unbiased):
    rng = np.random.default_rng(5)
    X, Y = _data(rng, n=60)
    Q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], X.shape[1])))
    base = cm.linear_cka(X, Y, unbiased=unbiased)
    assert cm.linear_cka(X, X, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)
    assert cm.linear_cka(X @ Q * 3.7, Y, unbiased=unbiased) == pytest.approx(base, abs=1e-12)
    assert cm.linear_cka(X, X @ Q * 0.01 + 4.0, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)
    # not invariant to a general linear map (CKA is not CCA)
    assert abs(cm.linear_cka(X * np.arange(1, X.shape[1] + 1), Y, unbiased=unbiased) - base) > 1e-3


def test_pairs_and_degenerate_cases():
    rng = np.random.default_rng(2)
    X, Y = _data(rng)
    Z = rng.normal(size=(40, 9))
    got = cm.cka_pairs([X, Y, Z], [(0, 1), (0, 2), (1, 2), (2, 2)])
    want = [cm.cka_gram(X, Y), cm.cka_gram(X, Z), cm.cka_gram(Y, Z), 1.0]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.isnan(cm.linear_cka(np.ones((10, 3)), Y[:10]))
    with pytest.raises(DivergentError, match="same examples"):
        cm.linear_cka(X, Y[:-1])
    with pytest.raises(DivergentError, match="at least 4"):
        cm.linear_cka(X[:3], Y[:3], unbiased=True)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("block", [5, 16, None])
def test_bootstrap_equals_gram_on_resampled_rows(unbiased, block):
    rng = np.random.default_rng(11)
    X, Y = _data(rng, n=37)
    Z = rng.normal(size=(37, 3)) + X[:, :3]
    idx = rng.integers(0, 37, size=(6, 37))
    W = np.vstack([np.ones(37), cm.resample_weights(37, idx)])
    got = cm.bootstrap_cka([X, Y, Z], [(0, 1), (2, 0), (1, 2), (1, 1)], W, unbiased=unbiased, block=block)
    assert got.shape == (4, 7)
    for t, (a, b) in enumerate([(X, Y), (Z, X), (Y, Z)]):
        assert got[t, 0] == pytest.approx(cm.linear_cka(a, b, unbiased=unbiased), abs=1e-12)  # weights 1 = point
        np.testing.assert_allclose(got[t, 1:], [cm.cka_gram(a[i], b[i], unbiased=unbiased) for i in idx], atol=1e-11)
    np.testing.assert_allclose(got[3], 1.0, atol=1e-12)


def test_bootstrap_resample_groups_agree():
    rng = np.random.default_rng(4)
    X, Y = _data(rng, n=30)
    W = cm.resample_weights(30, rng.integers(0, 30, size=(9, 30)))
    one = cm.bootstrap_cka([X, Y], [(0, 1)], W)
    small = cm.bootstrap_cka([X, Y], [(0, 1)], W, budget_bytes=8 * 2 * 30 * 2 * 2, block=8)  # groups of 2 resamples
    np.testing.assert_allclose(small, one, atol=1e-13)


@pytest.mark.parametrize("unbiased", [False, True])
def test_stats_exact_for_any_centring(unbiased):
    """The streamed formulas keep the residual column sums: centring by any vector gives the
    same HSIC (the first pass's means serve precision only)."""
    rng = np.random.default_rng(8)
    X, Y = _data(rng, n=30, offset=2.0)
    ref = cm.hsic_from_stats(cm.cross_stats(X, Y), unbiased)
    for mx, my in ((np.zeros(6), np.zeros(4)), (rng.normal(size=6), rng.normal(size=4))):
        got = cm.hsic_from_stats(cm.cross_stats(X, Y, mean_x=mx, mean_y=my), unbiased)
        assert got == pytest.approx(ref, rel=1e-9)
