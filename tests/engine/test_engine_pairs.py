"""Pair engine decisions equal the naive float64 reference, on random and adversarial data."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.engine import all_pair_codes, pair_codes, prepare
from divergent.engine.naive import pair_codes_reference
from exp_dispatch import check_child, run_without_numpy_avx512


def _check(xs, y, ts, k, kind="logits"):
    """Every pair's codes against the reference; returns (pairs whose codes equal the reference,
    pairs expected, examples that left tier 1)."""
    prepared = [prepare(x, y, t, kind=kind, k=k, block=97) for x, t in zip(xs, ts)]
    total_fb, equal = 0, 0
    for res in all_pair_codes(prepared, progress=False, workers=2):
        ref = pair_codes_reference(xs[res.a], xs[res.b], y, ts[res.a], ts[res.b], kind, kind)
        equal += bool(np.array_equal(res.codes, ref))
        total_fb += res.n_fallback + res.n_gather
    return equal, len(xs) * (len(xs) - 1) // 2, total_fb


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_random(dtype):
    rng = np.random.default_rng(0)
    n, c = 2000, 50
    y = rng.integers(0, c, n)
    latent = rng.normal(size=(n, c))
    xs = [((latent + rng.normal(size=(n, c))) * 3 + 4 * np.eye(c)[y] * rng.random()).astype(dtype) for _ in range(5)]
    equal, expected, _ = _check(xs, y, [1.0, 0.7, 1.3, 2.0, 0.9], k=4)
    assert equal == expected == 10


def test_small_k_forces_fallback():
    rng = np.random.default_rng(1)
    n, c = 1500, 30
    y = rng.integers(0, c, n)
    xs = [(rng.normal(size=(n, c)) * 0.3).astype(np.float32) for _ in range(4)]  # flat: top-2 rarely decides
    equal, expected, left_tier1 = _check(xs, y, [1.0] * 4, k=2)
    assert equal == expected and left_tier1 > 0


def test_exact_ties_and_near_ties():
    rng = np.random.default_rng(2)
    n, c = 3000, 8
    y = rng.integers(0, c, n)
    base = np.round(rng.normal(size=(n, c)) * 2).astype(np.float16)  # integer logits -> exact ties
    xs = [base, base[:, ::-1].copy(), np.roll(base, 1, axis=1), base + np.float16(0)]
    near = base.astype(np.float32)
    near[:, 1] = np.nextafter(near[:, 0], np.float32(np.inf))
    xs += [near, base[rng.permutation(n)]]
    for k in (2, 3):
        equal, expected, _ = _check(xs, y, [1.0] * len(xs), k=k)
        assert equal == expected == 15


def test_rounding_tie_when_models_agree():
    # p_a = (0.5, 0.5 + ulp) vs p_b equal: sums collapse, the lower index must win
    la = np.log(np.array([[0.5, 0.5 + 2 ** -53, 1e-300]])).astype(np.float32)
    for x in (la, np.array([[1.0, 1.0, 0.0]], np.float32), np.array([[0.0, 1e-7, 0.0]], np.float32)):
        xs = [x, x.copy(), x[:, [1, 0, 2]].copy()]
        for y in range(3):
            equal, expected, _ = _check(xs, np.array([y]), [1.0, 1.0, 1.0], k=2)
            assert equal == expected == 3


def test_probs_input_and_different_temperatures():
    rng = np.random.default_rng(3)
    n, c = 1000, 12
    y = rng.integers(0, c, n)
    xs = [rng.dirichlet(np.ones(c) * a, size=n).astype(np.float32) for a in (0.1, 0.5, 2.0)]
    equal, expected, _ = _check(xs, y, [1.0, 0.5, 3.0], k=3, kind="probs")
    assert equal == expected == 3


def test_memmap_source(tmp_path):
    rng = np.random.default_rng(4)
    n, c = 500, 20
    y = rng.integers(0, c, n)
    paths = []
    for i in range(2):
        p = tmp_path / f"m{i}.npy"
        np.save(p, (rng.normal(size=(n, c)) * 2).astype(np.float16))
        paths.append(p)
    mm = [np.load(p, mmap_mode="r") for p in paths]
    pa, pb = (prepare(x, y, 1.1, k=2) for x in mm)
    codes, _, _ = pair_codes(pa, pb)
    assert np.array_equal(codes, pair_codes_reference(mm[0], mm[1], y, 1.1, 1.1))


def test_kernel_agreeing_models_whose_sums_round_together():
    # both models predict class 1, but fl(p_a[0] + p_b[0]) == fl(p_a[1] + p_b[1]) = 0.75:
    # the reference ensemble then predicts class 0 (lowest index), so tier 1 must not certify 1
    from divergent.engine import kernels

    eps = 2.0 ** -54
    topi_a = np.array([[1, 0]], np.int32)
    topp_a = np.array([[0.25 + eps, 0.25]])
    topi_b = np.array([[1, 0]], np.int32)
    topp_b = np.array([[0.5, 0.5 - eps]])
    assert topp_a[0, 1] + topp_b[0, 1] == topp_a[0, 0] + topp_b[0, 0]
    codes = np.zeros(1, np.uint8)
    pending = np.zeros(1, np.uint8)
    npend = kernels.pair_tier1(np.array([1], np.int32), topi_a, topp_a, np.array([1e-3]),
                               np.array([1], np.int32), topi_b, topp_b, np.array([1e-3]),
                               np.array([0]), codes, pending)
    assert npend == 1 and pending[0] == 1 and codes[0] == 8


def tier2_paths_agree():
    """Tier 2 in numba and in numpy give the reference codes and the same counts; returns the counts.
    Needs numba's exp to be numpy's (run here or in a child process)."""
    from divergent.engine import kernels
    from divergent.engine import pairs as pairs_mod

    rng = np.random.default_rng(6)
    n, c = 1500, 40
    y = rng.integers(0, c, n)
    xs = [(rng.normal(size=(n, c)) * 0.8).astype(np.float16), (rng.normal(size=(n, c)) * 0.8).astype(np.float32)]
    pa, pb = (prepare(x, y, t, k=3) for x, t in zip(xs, (0.9, 1.4)))
    ref = pair_codes_reference(xs[0], xs[1], y, 0.9, 1.4)
    real_kernel, real_scores = kernels.pair_tier2, pairs_mod._numba_scores
    calls = []
    kernels.warmup()  # compiles by calling every kernel once: before counting

    def counting_kernel(*a):
        calls.append(1)
        return real_kernel(*a)

    kernels.pair_tier2 = counting_kernel
    try:
        fast = pair_codes(pa, pb)
        n_numba = len(calls)
        pairs_mod._numba_scores = lambda pm: None
        slow = pair_codes(pa, pb)
    finally:
        kernels.pair_tier2, pairs_mod._numba_scores = real_kernel, real_scores
    assert (n_numba, len(calls)) == (1, 1), "the first run must take the numba kernel, the second must not"
    assert fast[1] > 0, "no example reached tier 2"
    assert np.array_equal(fast[0], ref) and np.array_equal(slow[0], ref)
    assert fast[1:] == slow[1:]
    return list(fast[1:])


def test_tier2_numba_and_numpy_paths_agree():
    from divergent.engine.prepare import fused_exp_matches_numpy

    if not fused_exp_matches_numpy():
        pytest.skip("numba's exp is not numpy's here, so tier 2 runs in numpy only: the two paths are compared "
                    "with numpy's AVX-512 dispatch off, in test_tier2_paths_agree_without_numpy_avx512")
    n_gather, n_fallback = tier2_paths_agree()
    assert n_gather > 0


def test_tier2_paths_agree_without_numpy_avx512():
    out = run_without_numpy_avx512(__file__, "tier2_paths_agree")
    check_child(out)
    assert out["result"][0] > 0


def test_tier2_runs_in_numpy_where_exp_differs(monkeypatch):
    # what happens on an AVX-512 machine: numba's exp is not numpy's, so the numba tier 2 must not run
    from divergent.engine import kernels
    from divergent.engine import pairs as pairs_mod

    rng = np.random.default_rng(7)
    n, c = 800, 30
    y = rng.integers(0, c, n)
    xs = [(rng.normal(size=(n, c)) * 0.8).astype(np.float16) for _ in range(2)]
    pa, pb = (prepare(x, y, 1.0, k=2) for x in xs)
    monkeypatch.setattr(pairs_mod, "fused_exp_matches_numpy", lambda: False)

    def no_numba(*a):
        raise AssertionError("numba tier 2 ran although exp differs")

    monkeypatch.setattr(kernels, "pair_tier2", no_numba)
    assert pairs_mod._numba_scores(pa) is None
    codes, n_gather, _ = pair_codes(pa, pb)
    assert n_gather > 0 and np.array_equal(codes, pair_codes_reference(xs[0], xs[1], y))
