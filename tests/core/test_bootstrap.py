"""Interval coverage of the count bootstrap, checked by simulation."""
import numpy as np

from divergent.metrics.bootstrap import count_bootstrap
from divergent.metrics.pairs import code_counts, encode, metrics_from_counts


def test_nominal_95_covers_about_95_percent():
    rng = np.random.default_rng(0)
    p_a, p_b, n, reps = 0.7, 0.65, 400, 300
    # population: independent correctness, ensemble correct when either is (a simple model)
    truth_inc = p_a * (1 - p_b) + p_b * (1 - p_a)
    counts = []
    for _ in range(reps):
        a = rng.random(n) < p_a
        b = rng.random(n) < p_b
        counts.append(code_counts(encode(a, b, a | b, a == b)))
    ci = count_bootstrap(np.stack(counts), metrics_from_counts, n_boot=400, seed=1)
    lo, hi = ci["error_inconsistency"]
    coverage = np.mean((lo <= truth_inc) & (truth_inc <= hi))
    assert 0.91 <= coverage <= 0.98, coverage


def test_bca_by_hand():
    # bootstrap values 1..10, estimate 4: 3 below, 1 tied -> share 3.5/10, z0 = Phi^-1(0.35) = -0.385320;
    # jackknife (0, 0, 3): d = mean - jack = (1, 1, -2), a = sum d^3 / (6 sum d^2 ^ 1.5) = -6 / (6 * 6^1.5)
    # = -0.0680414; lower point Phi(z0 + (z0 - 1.959964) / (1 - a (z0 - 1.959964))) = Phi(-3.175914)
    # = 0.000747 -> 1 + 9 * 0.000747 = 1.00672; upper Phi(z0 + (z0 + 1.959964) / (1 - a (z0 + 1.959964)))
    # = Phi(1.036940) = 0.850118 -> 1 + 9 * 0.850118 = 8.65106 (linear interpolation between order statistics)
    from divergent.metrics.bootstrap import bca_interval

    lo, hi = bca_interval(4.0, np.arange(1.0, 11.0), np.array([0.0, 0.0, 3.0]))
    assert abs(lo - 1.00672) < 2e-5 and abs(hi - 8.65106) < 2e-5, (lo, hi)
    # no bias, no skew: the percentile interval
    assert bca_interval(5.5, np.arange(1.0, 11.0), np.array([1.0, 2.0, 3.0])) == \
        tuple(np.percentile(np.arange(1.0, 11.0), [2.5, 97.5]))
    # every value on one side of the estimate: no bias correction, no interval
    assert all(np.isnan(bca_interval(0.5, np.arange(1.0, 11.0), np.zeros(3))))


def test_bca_equals_scipy_on_the_same_resamples():
    """scipy.stats.bootstrap(method='BCa') given our bootstrap values (bootstrap_result, no new
    resamples) and the data: the same interval, with the jackknife from the shared-weights form."""
    import scipy.stats as st

    from divergent.metrics.bootstrap import bca_interval, jackknife_values, resample_weights

    rng = np.random.default_rng(1)
    x = rng.exponential(size=80)                       # skewed: BCa differs from the percentile interval
    W = resample_weights(x.size, n_boot=2000, seed=0)

    def stat(w):
        return (w @ x) / w.sum(1)

    ours = bca_interval(float(x.mean()), stat(W), jackknife_values(stat, x.size, chunk=7))
    prior = st.bootstrap((x,), np.mean, n_resamples=1, method="percentile", rng=0)
    prior.bootstrap_distribution = stat(W)
    ref = st.bootstrap((x,), np.mean, n_resamples=0, method="BCa", bootstrap_result=prior).confidence_interval
    assert np.allclose(ours, (ref.low, ref.high), rtol=1e-12, atol=0)
    from divergent.metrics.bootstrap import percentile_interval

    assert not np.allclose(ours, percentile_interval(stat(W)), rtol=1e-3)


def test_leave_one_out_weights_equal_the_dense_matrix():
    from divergent.metrics.bootstrap import jackknife_weights

    X = np.random.default_rng(2).random((23, 4))
    for w in jackknife_weights(23, chunk=5):
        dense = np.asarray(w)
        assert dense.shape == w.shape and (dense.sum(1) == 22).all()
        assert np.allclose(w @ X, dense @ X, rtol=0, atol=1e-12) and np.array_equal(w.sum(1), dense.sum(1))
