"""Exact rows: block/gather probabilities are bitwise the reference's on this machine."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.engine.naive import ref_probs
from divergent.engine.prepare import prepare
from divergent.engine.rows import block_probs
from divergent.errors import DivergentError
from divergent.metrics.probs import reference_probs


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_block_and_gather_bitwise(dtype):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 37)) * 6).astype(dtype)
    ref = reference_probs(x, 1.7)
    full = np.concatenate([block_probs(x[r:r + 64], "logits", 1.7)[0] for r in range(0, 300, 64)])
    assert np.array_equal(full, ref)
    pm = prepare(x, rng.integers(0, 37, 300), 1.7, k=4, block=50)
    rows = rng.integers(0, 300, 500)
    cols = rng.integers(0, 37, (500, 9))
    assert np.array_equal(pm.gather(rows, cols), ref[rows[:, None], cols])
    # single elements, strided and one-by-one gathers take the same path
    for r, c in zip(rows[:20], cols[:20, 0]):
        assert pm.gather(np.array([r]), np.array([[c]]))[0, 0] == ref[r, c]


def test_probs_kind_bitwise():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(11) * 0.3, size=200).astype(np.float32)
    p[0, 3] = 0.0
    ref = ref_probs(p, "probs", 0.8)
    pm = prepare(p, rng.integers(0, 11, 200), 0.8, kind="probs", k=3)
    assert np.array_equal(pm.topp[:, 0], ref.max(1))
    assert np.array_equal(pm.pred, ref.argmax(1))
    rows = np.arange(200)
    assert np.array_equal(pm.gather(rows, np.tile(np.arange(11), (200, 1))), ref)


def test_summaries_exact():
    rng = np.random.default_rng(2)
    x = np.round(rng.normal(size=(400, 20)) * 2).astype(np.float16)  # many exact ties
    y = rng.integers(0, 20, 400)
    ref = reference_probs(x, 1.0)
    pm = prepare(x, y, 1.0, k=5)
    assert np.array_equal(pm.pred, ref.argmax(1))
    order = np.lexsort((np.tile(np.arange(20), (400, 1)), -ref), axis=1)
    assert np.array_equal(pm.topi, order[:, :5])
    assert np.array_equal(pm.topp, np.take_along_axis(ref, order[:, :5], 1))
    assert np.array_equal(pm.thr, np.take_along_axis(ref, order[:, 5:6], 1)[:, 0])
    assert np.array_equal(pm.plabel, ref[np.arange(400), y])
    masked = ref.copy()
    masked[np.arange(400), y] = -1
    assert np.array_equal(pm.unot, masked.max(1))


def test_bad_input():
    with pytest.raises(DivergentError):
        prepare(np.array([[np.nan, 1.0], [0.0, 1.0]], np.float32), np.array([0, 1]))
    with pytest.raises(DivergentError):
        prepare(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(DivergentError):
        prepare(np.zeros((2, 3), np.float32), np.array([0, 1]), temperature=0.0)


@pytest.mark.parametrize("c", [2, 7, 9, 128, 129, 1000, 1001])
def test_fused_path_bitwise_equals_numpy_path(c):
    rng = np.random.default_rng(c)
    x = (rng.normal(size=(96, c)) * 5).astype(np.float16)
    x[0] = 0  # a flat row: all ties
    x[64:] = np.round(x[64:] / 4)  # integer logits: many exact ties in p
    x[70, :] = 1e-3
    x[70, :3] = [2, 2, 2 + 2e-3][:min(3, c)]
    y = rng.integers(0, c, 96)
    a = prepare(x, y, 0.77, k=4, path="numpy")
    b = prepare(x, y, 0.77, k=4, path="fused")
    for f in ("topi", "topp", "thr", "plabel", "unot", "m", "s", "pred"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert prepare(x, y, 0.77, k=4).extra["path"] in ("fused", "numpy")


def test_auto_path_is_fused_here():
    from divergent.engine.prepare import fused_exp_matches_numpy

    # informative: on this machine numba's and numpy's exp are the same libm function
    assert isinstance(fused_exp_matches_numpy(), bool)
