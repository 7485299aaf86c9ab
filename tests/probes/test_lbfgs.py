"""The L-BFGS probe against scikit-learn's lbfgs LogisticRegression, and its reporting."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from divergent.errors import DivergentError
from divergent.probes.lbfgs import (
    COARSE_GRID, KORNBLITH_GRID, ProbeConvergenceWarning, C_to_lam, fit_probe, l2_normalize, lam_to_C,
    objective, refinement_values, resolve_grid, sweep_probe,
)

from probe_fixtures import digits_parts


@pytest.fixture(scope="module")
def digits():
    X, y, parts = digits_parts()
    return X, y, parts


def _sk(Xn, y, C, **kw):
    return LogisticRegression(C=C, tol=1e-7, max_iter=5000, **kw).fit(Xn.astype(np.float64), y)


@pytest.mark.parametrize("lam", [pytest.param(1e-4, marks=pytest.mark.slow), 1e-3, 1e-2, 1.0])
def test_matches_sklearn_multinomial(digits, lam):
    X, y, parts = digits
    Xf, yf = X[parts["train"]], y[parts["train"]]
    Xn = l2_normalize(Xf)
    fit = fit_probe(Xf, yf, lam, tol=1e-6, warn=False)
    assert fit.converged
    sk = _sk(Xn, yf, lam_to_C(lam, len(yf)))
    ours = objective(Xn, yf, fit.W, fit.b, lam)
    theirs = objective(Xn, yf, sk.coef_, sk.intercept_, lam)
    assert abs(ours - theirs) / theirs < 1e-4
    assert abs(fit.objective - ours) / ours < 1e-5  # reported objective is the real one
    Xt = l2_normalize(X[parts["test"]])
    acc = (fit.predict(Xt) == y[parts["test"]]).mean()
    acc_sk = (sk.predict(Xt) == y[parts["test"]]).mean()
    assert acc == pytest.approx(acc_sk, abs=1.5 / len(Xt))


def test_binary_maps_to_twice_C(digits):
    X, y, parts = digits
    keep = np.isin(y, (3, 8))
    Xb, yb = l2_normalize(X[keep]), (y[keep] == 8).astype(np.int64)
    lam = 1e-3
    fit = fit_probe(Xb, yb, lam, tol=1e-6, normalize=False, warn=False)
    sk = _sk(Xb, yb, 2 * lam_to_C(lam, len(yb)))
    w = fit.W[1] - fit.W[0]
    np.testing.assert_allclose(w, sk.coef_[0], rtol=2e-3, atol=2e-3)
    assert np.array_equal(fit.predict(Xb), sk.predict(Xb))


def test_multilabel_matches_independent_sklearn_fits(digits):
    X, y, parts = digits
    Xn = l2_normalize(X[:400])
    rng = np.random.default_rng(0)
    Y = np.stack([(y[:400] % 3 == 0), (y[:400] > 4), (y[:400] % 2 == 0)], axis=1).astype(np.int64)
    mask = rng.random(Y.shape) > 0.1  # 10% "difficult" labels dropped
    lam = 1e-3
    fit = fit_probe(Xn, Y, lam, multilabel=True, mask=mask, normalize=False, tol=1e-6, warn=False)
    total = 0.0
    for k in range(3):
        m = mask[:, k]
        sk = _sk(Xn[m], Y[m, k], 1.0 / (lam * len(Xn)))  # n counts every row
        total += objective(Xn[m], Y[m, k][:, None], sk.coef_, sk.intercept_, 0.0, multilabel=True) * m.sum() / len(Xn)
        total += 0.5 * lam * float((sk.coef_.astype(np.float64) ** 2).sum())
        assert np.mean(sk.predict(Xn) == fit.predict(Xn)[:, k]) > 0.99
    ours = objective(Xn, Y, fit.W, fit.b, lam, multilabel=True, mask=mask)
    assert abs(ours - total) / total < 1e-4


def test_C_mapping_roundtrip():
    assert lam_to_C(1e-3, 1000) == pytest.approx(1.0)
    assert C_to_lam(lam_to_C(0.37, 123), 123) == pytest.approx(0.37)


def test_grids():
    assert len(KORNBLITH_GRID) == 45
    assert KORNBLITH_GRID[0] == pytest.approx(1e-6) and KORNBLITH_GRID[-1] == pytest.approx(1e5)
    assert len(COARSE_GRID) == 12 and set(COARSE_GRID) <= set(KORNBLITH_GRID)
    assert len(refinement_values(1e-2)) == 6
    assert resolve_grid(None) == (COARSE_GRID, True)
    assert resolve_grid([1e-3, 1e-1])[0] == (1e-1, 1e-3)
    with pytest.raises(DivergentError):
        resolve_grid([0.0])


def test_deterministic(digits):
    X, y, parts = digits
    a = fit_probe(X[:300], y[:300], 1e-3, warn=False)
    b = fit_probe(X[:300], y[:300], 1e-3, warn=False)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b) and a.W.dtype == np.float32


def test_non_convergence_is_reported(digits):
    X, y, parts = digits
    with pytest.warns(ProbeConvergenceWarning, match="stopped"):
        fit = fit_probe(X[:300], y[:300], 1e-5, max_iter=3)
    assert not fit.converged and fit.status == "max_iter" and fit.n_iter == 3
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        sw = sweep_probe(X[:300], y[:300], X[300:500], y[300:500], [1e-5, 1e-2], max_iter=3)
    assert not sw.table.converged.any()
    assert sum(issubclass(r.category, ProbeConvergenceWarning) for r in rec) == 2


def test_warm_sweep_selects_like_independent_fits(digits):
    X, y, parts = digits
    args = (X[parts["train"]], y[parts["train"]], X[parts["holdout"]], y[parts["holdout"]])
    warm = sweep_probe(*args, tol=1e-6, warn=False)
    cold = sweep_probe(*args, warm_start=False, tol=1e-6, warn=False)
    assert warm.best.lam == cold.best.lam
    assert list(warm.table.lam) == list(cold.table.lam)
    sel = warm.table.lam.between(1e-4, 1.0)  # well-conditioned part of the path
    np.testing.assert_allclose(warm.table.objective[sel], cold.table.objective[sel], rtol=1e-4)
    assert warm.table.selected.sum() == 1
    grid_rows = cold.table[cold.table.stage == "grid"]
    coarse_best = grid_rows.lam.iloc[int(np.argmax(grid_rows.select_score.to_numpy()))]
    assert set(warm.table.lam[warm.table.stage == "refine"]) <= set(refinement_values(coarse_best))
    # selection rule: best holdout accuracy
    assert warm.table.select_score[warm.table.selected].iloc[0] == warm.table.select_score.max()


def test_bad_input(digits):
    X, y, parts = digits
    bad = X[:100].copy()
    bad[3, 2] = np.nan
    with pytest.raises(DivergentError, match="non-finite"):
        fit_probe(bad, y[:100], 1e-3)
    with pytest.raises(DivergentError, match="single class"):
        fit_probe(X[:50], np.zeros(50, dtype=np.int64), 1e-3)
    with pytest.raises(DivergentError, match="rows"):
        fit_probe(X[:100], y[:90], 1e-3)
    with pytest.raises(DivergentError, match="no examples"):
        fit_probe(X[:100], y[:100] % 5, 1e-3, n_classes=10)
    with pytest.raises(DivergentError, match="dimensions"):
        sweep_probe(X[:100], y[:100], X[:50, :10], y[:50], [1e-3])
    with pytest.raises(DivergentError, match="lam"):
        fit_probe(X[:100], y[:100], 0.0)


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(x)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32
