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
