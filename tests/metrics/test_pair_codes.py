"""Pair-metric descriptors and the named outcome-code bits."""
from __future__ import annotations

import itertools

import numpy as np

from divergent.metrics import specialization as sm
from divergent.metrics.pairs import (A_OK, B_OK, INCONSISTENT_CODES, METRICS, N_CODES, code_counts, encode,
                                     metrics_from_counts)


def test_inconsistent_codes_are_those_with_exactly_one_model_right():
    rows = list(itertools.product([0, 1], repeat=4))
    a, b, e, g = (np.array(c, bool) for c in zip(*rows))
    codes = encode(a, b, e, g)
    assert sorted(int(c) for c in codes[a != b]) == list(INCONSISTENT_CODES)
    counts = code_counts(codes)
    assert counts[list(INCONSISTENT_CODES)].sum() == (a != b).sum()
    assert metrics_from_counts(counts)["error_inconsistency"] == (a != b).mean()


def test_metric_descriptors_are_named():
    assert {k for k, m in METRICS.items() if m.needs_probs} == {"ensemble_acc", "gain_vs_best", "gain_vs_mean",
                                                                "conversion_rate"}
    assert not METRICS["acc_a"].symmetric and METRICS["both_wrong"].higher_is_better is False


def test_specialization_outcomes_use_the_pair_bits():
    assert (sm.ONLY_A, sm.ONLY_B, sm.BOTH, sm.NEITHER) == (A_OK, B_OK, A_OK | B_OK, 0)
    a, b = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)
    assert np.array_equal(sm.outcome_codes(a, b), encode(a, b)) and N_CODES == 16
