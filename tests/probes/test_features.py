"""Feature combination (Section 4.6): inverse-rate subsets, ranked selection, dims to a target."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.probes.features import dims_to_target, feature_combination, rank_dimensions, ranked_features


def _dims(store, model):
    return np.asarray(store.array(model, "train", "features")).shape[1]


def test_inverse_rate_subsets_draw_the_right_columns(digits_store, monkeypatch):
    import divergent.probes.features as F

    drawn = []

    def record(data, fit_on, select_on, split, cols_a, cols_b, K, grid, lam, scores=None, **kw):
        drawn.append((np.array(cols_a), np.array(cols_b)))
        return dict(lam=lam, select_accuracy=0.0, accuracy=0.0, converged=True)

    monkeypatch.setattr(F, "_evaluate", record)
    rates, seeds = (0.0, 0.3, 0.5, 1.0), (0, 1)
    df = feature_combination(digits_store, "pixels", "relu", rates=rates, seeds=seeds, lam=1e-3)
    dA, dB = _dims(digits_store, "pixels"), _dims(digits_store, "relu")
    D = min(dA, dB)
    assert (dA, dB, D) == (64, 48, 48)
    assert len(df) == len(drawn) == len(rates) * len(seeds)
    for r, (ca, cb) in zip(df.itertuples(), drawn):
        assert (r.n_a, r.n_b, r.dims) == (len(ca), len(cb), D) and r.n_a == round(r.p * D)
        for cols, d in ((ca, dA), (cb, dB)):
            assert np.array_equal(cols, np.unique(cols)) and (cols < d).all() and (cols >= 0).all()
    assert list(df[df.seed == 0].n_a) == [0, 14, 24, 48]  # round(p * 48): 0, 14.4, 24, 48
    by = {(r.p, r.seed): cols for r, cols in zip(df.itertuples(), drawn)}
    assert np.array_equal(by[0.0, 0][1], np.arange(dB)) and by[0.0, 0][0].size == 0  # p = 0: all of B
    assert by[1.0, 0][1].size == 0 and by[1.0, 0][0].size == 48                     # p = 1: 48 of A's 64
    for p in (0.3, 0.5, 1.0):                                                       # seeds draw other subsets
        assert not all(np.array_equal(x, y) for x, y in zip(by[p, 0], by[p, 1])), p
    first = list(drawn)
    drawn.clear()
    feature_combination(digits_store, "pixels", "relu", rates=rates, seeds=seeds, lam=1e-3)
    assert all(np.array_equal(x, y) for a, b in zip(first, drawn) for x, y in zip(a, b))  # reproducible


def test_inverse_rate_subsets_probe_accuracy(digits_store):
    from divergent.probes.lbfgs import fit_probe, l2_normalize

    df, z = feature_combination(digits_store, "pixels", "relu", rates=(0.0, 0.5), seeds=(0, 1), lam=1e-3,
                                return_scores=True)
    assert df.accuracy.between(0.5, 1.0).all()
    # p = 0 is model B alone, whatever the seed: the same as a probe fitted on B's own embeddings
    yt = np.asarray(digits_store.split("test").labels)
    fit = fit_probe(l2_normalize(np.asarray(digits_store.array("relu", "train", "features"))),
                    np.asarray(digits_store.split("train").labels), 1e-3, n_classes=10)
    alone = fit.decision_function(l2_normalize(np.asarray(digits_store.array("relu", "test", "features"))))
    assert np.array_equal(z[0], z[1]) and np.allclose(z[0], alone, rtol=1e-5, atol=1e-6)
    assert df.accuracy.iloc[0] == df.accuracy.iloc[1] == float((alone.argmax(1) == yt).mean())
    assert not np.array_equal(z[2], z[3])  # p = 0.5: the two seeds fit different columns


def test_rank_dimensions():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 4)) * np.array([1.0, 3.0, 0.5, 2.0])
    assert list(rank_dimensions(Z, "variance")) == [1, 3, 0, 2]
    base = rng.normal(size=500)
    Z = np.stack([base, base + 0.01 * rng.normal(size=500), rng.normal(size=500)], axis=1)
    assert rank_dimensions(Z, "redundancy")[0] == 2  # the independent dimension is least redundant
    assert sorted(rank_dimensions(Z, "random", seed=3)) == [0, 1, 2]
    with pytest.raises(DivergentError):
        rank_dimensions(Z, "nope")


def test_ranked_curve_and_target(digits_store):
    from divergent.probes.lbfgs import l2_normalize

    df = ranked_features(digits_store, "pixels", "relu", rankings=("variance", "redundancy"), step=16,
                         max_dims=48, lam=1e-3)
    assert list(df[df.ranking == "variance"].dims) == [16, 32, 48]
    assert (df.n_a + df.n_b == df.dims).all()
    # the variance ranking: highest per-dimension variance of the normalised fit-split concatenation first
    Z = np.concatenate([l2_normalize(np.asarray(digits_store.array(m, "train", "features")))
                        for m in ("pixels", "relu")], axis=1).astype(np.float64)
    top = np.argsort(-Z.var(axis=0), kind="stable")
    var = df[df.ranking == "variance"]
    assert list(var.n_a) == [int((top[:d] < 64).sum()) for d in var.dims]
    # dims to a target on the measured curve: the fewest dims whose accuracy reaches it
    for ranking, g in df.groupby("ranking"):
        target = float(g[g.dims == 32].accuracy.iloc[0])
        r = dims_to_target(g, target).iloc[0]
        assert r.reached and r.dims == min(d for d, a in zip(g.dims, g.accuracy) if a >= target) <= 32
        assert r.best == g.accuracy.max() and r.max_dims_tested == 48
    never = dims_to_target(df, 99.9)  # percent: 0.999, above every accuracy here
    assert (df.accuracy < 0.999).all()
    assert not never.reached.any() and never.dims.isna().all() and (never.target == 0.999).all()
    assert list(never.best) == [df[df.ranking == k].accuracy.max() for k in never.ranking]


def test_dims_to_target_fewest_dims_and_percent():
    import pandas as pd

    # rows out of order; accuracy not monotone in dims; two rankings with different answers
    curve = pd.DataFrame({"a": "A", "b": "B", "ranking": ["variance"] * 4 + ["random"] * 3,
                          "dims": [48, 32, 64, 16, 16, 32, 48],
                          "accuracy": [0.95, 0.91, 0.75, 0.6, 0.5, 0.875, 0.625]})
    for target in (0.9, 90, 90.0):  # a fraction or a percent
        r = dims_to_target(curve, target).set_index("ranking")
        assert r.loc["variance", "target"] == 0.9
        assert r.loc["variance", "reached"] and r.loc["variance", "dims"] == 32  # not 48 (first row, best)
        assert not r.loc["random", "reached"] and np.isnan(r.loc["random", "dims"])
        assert r.loc["random", "best"] == 0.875 and r.loc["variance", "max_dims_tested"] == 64
    r = dims_to_target(curve, 87.5).set_index("ranking")  # reaching means >=: exactly 0.875 counts
    assert r.loc["random", "reached"] and r.loc["random", "dims"] == 32 and r.loc["variance", "dims"] == 32
    r = dims_to_target(curve, 0.6).set_index("ranking")
    assert r.loc["variance", "dims"] == 16 and r.loc["random", "dims"] == 32
    # a percent is the decimal written: 99.9 % reaches an accuracy of exactly 0.999 (999 of 1,000)
    edge = curve.assign(accuracy=curve.accuracy.replace(0.95, 999 / 1000))
    assert dims_to_target(edge, 99.9).set_index("ranking").loc["variance", "dims"] == 48


def test_feature_bad_input(digits_store):
    with pytest.raises(DivergentError, match="no model"):
        feature_combination(digits_store, "pixels", "missing", lam=1e-3)
    with pytest.raises(DivergentError, match="outside"):
        feature_combination(digits_store, "pixels", "relu", rates=(1.5,), lam=1e-3)
    with pytest.raises(DivergentError, match="refusing"):
        ranked_features(digits_store, "pixels", "relu", select_on="test", lam=1e-3)


def test_feature_combination_return_scores(digits_store):
    import numpy as np

    df, z = feature_combination(digits_store, "pixels", "relu", rates=(0.0, 0.5), seeds=(0,), grid=[1e-3],
                                return_scores=True)
    assert len(z) == len(df) == 2
    y = np.asarray(digits_store.split("test").labels)
    for r, s in zip(df.itertuples(), z):
        assert float((s.argmax(1) == y).mean()) == r.accuracy
