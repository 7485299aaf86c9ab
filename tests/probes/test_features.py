"""Feature combination (Section 4.6): inverse-rate subsets, ranked selection, dims to a target."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.probes.features import dims_to_target, feature_combination, rank_dimensions, ranked_features


def test_inverse_rate_subsets(digits_store):
    df = feature_combination(digits_store, "pixels", "relu", rates=(0.0, 0.5, 1.0), seeds=(0, 1), lam=1e-3)
    assert len(df) == 6
    D = min(64, 48)
    assert (df.n_a + df.n_b == D).all() and (df.dims == D).all()
    assert list(df[df.seed == 0].n_a) == [0, 24, 48]
    assert df.accuracy.between(0.5, 1.0).all()
    # seeds draw different subsets: the mixed rate gives different accuracies or identical by chance
    again = feature_combination(digits_store, "pixels", "relu", rates=(0.0, 0.5, 1.0), seeds=(0, 1), lam=1e-3)
    assert np.array_equal(df.accuracy, again.accuracy)  # deterministic given the seeds


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
    df = ranked_features(digits_store, "pixels", "relu", rankings=("variance", "redundancy"), step=16,
                         max_dims=48, lam=1e-3)
    assert list(df[df.ranking == "variance"].dims) == [16, 32, 48]
    assert (df.n_a + df.n_b == df.dims).all()
    reach = dims_to_target(df, 0.5)
    assert reach.reached.all() and (reach.dims <= 48).all()
    never = dims_to_target(df, 99.9)  # percent accepted, never reached
    assert not never.reached.any() and never.dims.isna().all()
    assert (never.best < 0.999).all()


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
