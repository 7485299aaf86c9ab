"""scripts/near_ties.py: the stand-in for another machine's `exp` and the near-tie count."""
import importlib.util
from pathlib import Path

import numpy as np

from divergent.analyses.calibration import calibrate
from divergent.metrics.probs import reference_probs
from divergent.store import Store

_spec = importlib.util.spec_from_file_location("near_ties", Path(__file__).parents[2] / "scripts" / "near_ties.py")
near_ties = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(near_ties)


def test_other_exp_differs_by_one_ulp_on_the_share_asked_and_is_a_function():
    rng = np.random.default_rng(1)
    z = np.concatenate([-rng.random(200_000) * 700, -rng.exponential(2.0, 200_000)])
    e, o = np.exp(z), near_ties.other_exp(0.04)(z)
    diff = o != e
    assert 0.035 < diff.mean() < 0.045
    ulps = np.abs(o.view(np.int64) - e.view(np.int64))
    assert ulps.max() == 1 and (ulps[diff] == 1).all()
    assert ((o > e)[diff]).mean() > 0.4 and ((o < e)[diff]).mean() > 0.4    # both directions
    assert np.array_equal(near_ties.other_exp(0.04)(z[::-1])[::-1], o)        # the same argument, the same value
    out = np.empty_like(z)
    assert near_ties.other_exp(0.04)(z, out=out) is out and np.array_equal(out, o)


def test_exp_replaced_reaches_the_reference_arithmetic_and_restores_numpy():
    logits = np.random.default_rng(2).normal(size=(500, 7)).astype(np.float32)
    with near_ties.exp_replaced(near_ties.other_exp(1.0)):
        p_other = reference_probs(logits, 1.3)
    assert np.exp is near_ties._NP_EXP
    p = reference_probs(logits, 1.3)
    assert not np.array_equal(p, p_other) and np.abs(p - p_other).max() < 1e-15


def test_measure_refits_the_stores_temperatures_and_counts_tied_ensembles(toy_store, tmp_path):
    st = toy_store
    # a row every model ties between classes 0 and 1: each pair's ensemble is tied there too
    with st.writer() as w:
        for m in ("m0", "m1", "m2"):
            x = np.array(st.array(m, "test", "logits"))
            x[0] = [2.0, 2.0, 0.0, 0.0, 0.0]
            w.put(m, "test", logits=x, force=True)
    calibrate(Store.open(tmp_path / "store"), fit_on="holdout")
    table, s = near_ties.measure(Store.open(tmp_path / "store"), share=0.04)
    assert table["equals_store"].all() and list(table["model"]) == ["m0", "m1", "m2"]
    assert (table["relative_change"] < 1e-9).all()
    assert s["pairs"] == 3 and s["ensemble_decisions"] == 3 * 600
    assert s["ensemble_margins_within_1e-12"] >= 3 and s["smallest_relative_margin"] == 0.0
    assert s["ensemble_margins_within_1e-06"] >= s["ensemble_margins_within_1e-09"] >= s["ensemble_margins_within_1e-12"]
