"""Exact rows: block/gather probabilities are bitwise the reference's; the fused pass is the numpy pass."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from divergent.engine.naive import ref_probs
from divergent.engine.prepare import fused_exp_matches_numpy, prepare
from divergent.engine.rows import block_probs
from divergent.errors import DivergentError
from divergent.metrics.probs import reference_probs
from exp_dispatch import check_child, run_without_numpy_avx512

PREP = importlib.import_module("divergent.engine.prepare")  # the module; the package exports the function


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


CS = [2, 7, 9, 128, 129, 1000, 1001]
FIELDS = ("topi", "topp", "thr", "plabel", "unot", "m", "s", "pred")


def _case(c):
    rng = np.random.default_rng(c)
    x = (rng.normal(size=(96, c)) * 5).astype(np.float16)
    x[0] = 0  # a flat row: all ties
    x[64:] = np.round(x[64:] / 4)  # integer logits: many exact ties in p
    x[70, :] = 1e-3
    x[70, :3] = [2, 2, 2 + 2e-3][:min(3, c)]
    return x, rng.integers(0, c, 96)


def _differing_fields(a, b):
    return [f for f in FIELDS if not np.array_equal(getattr(a, f), getattr(b, f))]


def fused_vs_numpy():
    """{c: fields where the forced fused pass differs from the numpy pass} (run here or in a child)."""
    out = {}
    for c in CS:
        x, y = _case(c)
        fused = prepare(x, y, 0.77, k=4, path="fused")
        assert fused.extra["path"] == "fused"
        out[str(c)] = _differing_fields(prepare(x, y, 0.77, k=4, path="numpy"), fused)
    return out


def fused_checks():
    """What the child process reports: the fused pass vs the numpy pass, and the pass "auto" chose."""
    return {"differing": fused_vs_numpy(),
            "auto": {str(c): prepare(*_case(c), 0.77, k=4, block=32).extra["path"] for c in CS}}


@pytest.mark.parametrize("c", CS)
def test_auto_path_bitwise_equals_numpy_path(c):
    # must hold on every machine: "auto" takes the fused pass only where it is the numpy pass bitwise
    x, y = _case(c)
    auto = prepare(x, y, 0.77, k=4, block=32)  # blocks after the first one are not re-checked
    assert _differing_fields(prepare(x, y, 0.77, k=4, path="numpy"), auto) == []
    assert auto.extra["path"] == ("fused" if fused_exp_matches_numpy() else "numpy")


@pytest.mark.parametrize("c", CS)
def test_fused_path_bitwise_equals_numpy_path(c):
    if not fused_exp_matches_numpy():
        pytest.skip("numba's exp is not numpy's here (numpy's AVX-512 exp): the fused pass is checked with "
                    "numpy's AVX-512 dispatch off, in test_fused_path_equals_numpy_path_without_numpy_avx512")
    assert fused_vs_numpy()[str(c)] == []


@pytest.fixture(scope="module")
def child():
    return run_without_numpy_avx512(__file__, "fused_checks")


@pytest.mark.parametrize("c", CS)
def test_fused_path_equals_numpy_path_without_numpy_avx512(child, c):
    check_child(child)
    assert child["result"]["differing"][str(c)] == []
    assert child["result"]["auto"][str(c)] == "fused"


def test_auto_takes_the_numpy_pass_where_exp_differs(monkeypatch):
    # what happens on an AVX-512 machine: the exp check fails, the fused kernel is never run
    monkeypatch.setattr(PREP, "fused_exp_matches_numpy", lambda: False)

    def no_fused(*a, **k):
        raise AssertionError("the fused pass ran although exp differs")

    monkeypatch.setattr(PREP, "_summaries_fused", no_fused)
    x, y = _case(129)
    auto = prepare(x, y, 0.77, k=4, block=32)
    assert auto.extra["path"] == "numpy"
    assert _differing_fields(prepare(x, y, 0.77, k=4, path="numpy"), auto) == []


def test_auto_rejects_a_fused_pass_that_differs_in_the_first_block(monkeypatch):
    # exp check passes, but the fused pass is one ulp off in one row sum: the first-block check catches it
    real = PREP._summaries_fused
    calls = []

    def off_by_one_ulp(x, kind, T, y, k, out):
        calls.append(len(y))
        bad = real(x, kind, T, y, k, out)
        out[6][3] = np.nextafter(out[6][3], np.inf)
        return bad

    monkeypatch.setattr(PREP, "fused_exp_matches_numpy", lambda: True)
    monkeypatch.setattr(PREP, "_summaries_fused", off_by_one_ulp)
    x, y = _case(9)
    auto = prepare(x, y, 0.77, k=4, block=32)
    assert calls == [32]  # checked on the first block only, then not used
    assert auto.extra["path"] == "numpy"
    assert _differing_fields(prepare(x, y, 0.77, k=4, path="numpy"), auto) == []


def test_exp_check_compares_numba_exp_with_numpy_bitwise(monkeypatch):
    from divergent.engine import kernels
    # where the check says "same", numba's exp is numpy's on other arguments too
    if fused_exp_matches_numpy():
        z = np.concatenate([np.linspace(-745.0, 0.0, 200_001), -np.random.default_rng(7).random(100_000) * 30])
        e = np.empty_like(z)
        kernels.exp_into(z, e)
        assert np.array_equal(e, np.exp(z))
    # and it is bitwise: one value one ulp off anywhere makes it "different"

    def exp_numpy(zz, out, off=None):
        out[:] = np.exp(zz)
        if off is not None:
            out[off] = np.nextafter(out[off], 0.0)

    for off, expected in ((None, True), (123_456, False), (0, False)):
        monkeypatch.setattr(kernels, "exp_into", lambda zz, out: exp_numpy(zz, out, off))
        monkeypatch.setattr(PREP, "_EXP_CHECK", None)
        assert PREP.fused_exp_matches_numpy() is expected, off
