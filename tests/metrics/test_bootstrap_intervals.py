"""The one percentile interval: per column (NaN resamples left out) and for one statistic."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from divergent.metrics.bootstrap import percent_points, percentile_interval, percentile_intervals


def _nanpercentile(v, level):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return np.nanpercentile(v, percent_points(level), axis=0)


@pytest.mark.parametrize("shape", [(1,), (7,), (200,), (200, 3), (57, 4, 2), (1000, 5)])
@pytest.mark.parametrize("nan_share", [0.0, 0.2, 0.95, 1.0])
def test_columns_equal_nanpercentile_bitwise(shape, nan_share):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    v = rng.normal(size=shape)
    v[rng.random(shape) < nan_share] = np.nan
    if v.ndim > 1:
        v[:, 0] = np.nan  # one column with no resample at all
    for level in (0.95, 0.9):
        lo, hi = percentile_intervals(v, level)
        ref = _nanpercentile(v, level)
        assert np.shape(lo) == v.shape[1:]
        assert np.array_equal(lo, ref[0], equal_nan=True) and np.array_equal(hi, ref[1], equal_nan=True)


def test_one_statistic_drops_non_finite_and_needs_min_n():
    v = np.array([3.0, np.nan, 1.0, np.inf, 2.0, -np.inf, 4.0])
    lo, hi = percentile_interval(v, 0.5)
    assert (lo, hi) == tuple(np.percentile([3.0, 1.0, 2.0, 4.0], [25, 75]))
    assert np.isnan(percentile_interval(v, min_n=5)).all()
    assert percentile_interval(v, min_n=4) == percentile_interval(v)
    assert np.isnan(percentile_interval(np.array([np.nan, np.inf]))).all()


def test_one_statistic_matches_quantiles_of_the_level():
    # (1 - level) / 2 and 1 - (1 - level) / 2 as quantiles: the definition the findings used
    v = np.random.default_rng(3).normal(size=999)
    assert percentile_interval(v) == (float(np.quantile(v, (1 - 0.95) / 2)), float(np.quantile(v, 1 - (1 - 0.95) / 2)))
