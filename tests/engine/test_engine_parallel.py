"""Threads: the engine's phases give bit-identical results with 1, 2 or 3 threads, and the thread
count comes from one setting (synthetic data: these are property tests)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from divergent.conventions import THREADS_ENV, threads
from divergent.engine import ModelSource, all_pair_codes, pair_codes, prepare, prepare_many
from divergent.engine import pairs as pairs_mod
from divergent.engine.naive import pair_codes_reference
from divergent.errors import DivergentError
from divergent.metrics.bootstrap import count_bootstrap
from divergent.metrics.pairs import metrics_from_counts

prepare_mod = importlib.import_module("divergent.engine.prepare")  # the package exports a function of that name
FIELDS = ("pred", "topi", "topp", "thr", "plabel", "unot", "m", "s")


def _models(n=700, c=50, seed=0):
    """Five models sharing a latent: float16 and float32 logits, probabilities, exact ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    lat = rng.normal(size=(n, c))
    xs = []
    for i in range(5):
        z = 0.6 * lat + 0.8 * rng.normal(size=(n, c))
        z[np.arange(n), y] += rng.uniform(0.5, 2.5)
        xs.append(z)
    xs[3] = np.round(xs[3])  # integer logits: exact ties in p
    srcs = [ModelSource(xs[0].astype(np.float16), 1.3, "logits", "h0"),
            ModelSource(xs[1].astype(np.float16), 0.8, "logits", "h1"),
            ModelSource(xs[2].astype(np.float32), 1.1, "logits", "f2"),
            ModelSource(xs[3].astype(np.float16), 1.0, "logits", "t3"),
            ModelSource(np.exp(xs[4]) / np.exp(xs[4]).sum(1, keepdims=True), 0.9, "probs", "p4")]
    return srcs, y


@pytest.fixture
def small_tasks(monkeypatch):
    """Tasks small enough that 700 rows make several chunks, row blocks and pair groups."""
    monkeypatch.setattr(prepare_mod, "CHUNK_SCORES", 96 * 50)  # chunks of 96 rows (3 blocks of 32)
    monkeypatch.setattr(pairs_mod, "ROWS_PER_TASK", 64)
    monkeypatch.setattr(pairs_mod, "GROUP_BYTES", 4 * 700)  # groups of 4 pairs
    monkeypatch.setattr(pairs_mod, "ARGS_CAP", 12)  # 3 open examples per exp call at k = 2: resumes
    monkeypatch.setattr(pairs_mod, "FULL_ARGS_CAP", 200)  # full rows 2 at a time at 50 classes


def test_threads_setting(monkeypatch):
    import os

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, "3")
    assert threads() == 3
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(DivergentError, match=THREADS_ENV):
            threads()


def test_default_thread_count_comes_from_the_setting(monkeypatch):
    seen = []
    real = prepare_mod._run_jobs
    monkeypatch.setattr(prepare_mod, "_run_jobs", lambda jobs, workers, **kw: (seen.append(workers), real(jobs, workers, **kw)))
    monkeypatch.setenv(THREADS_ENV, "3")
    srcs, y = _models(n=40)
    prepare_many(srcs[:2], y)
    prepare(srcs[0], y)
    assert seen == [3, 3]


def test_prepare_is_independent_of_threads(small_tasks):
    srcs, y = _models()
    runs = {w: prepare_many(srcs, y, k=3, block=32, workers=w) for w in (1, 2, 3)}
    for w in (2, 3):
        for a, b in zip(runs[1], runs[w]):
            assert [f for f in FIELDS if not np.array_equal(getattr(a, f), getattr(b, f))] == []
            assert a.extra["path"] == b.extra["path"]
    # and equal to a single serial pass over the whole matrix, block by block, by numpy
    for pm, src in zip(runs[2], srcs):
        ref = prepare(src, y, k=3, block=10_000, path="numpy", workers=1)
        assert [f for f in FIELDS if not np.array_equal(getattr(pm, f), getattr(ref, f))] == []


def test_auto_decides_per_model_before_its_other_chunks(small_tasks, monkeypatch):
    # the fused pass of model "f2" is one ulp off in its first block: with any thread count only
    # that model falls back to numpy, and the fused pass is not run on its other rows
    srcs, y = _models()
    real = prepare_mod._summaries_fused
    calls = []

    def off_for_f2(x, kind, T, y_, k, out):
        bad = real(x, kind, T, y_, k, out)
        if T == 1.1:
            calls.append(len(y_))
            out[6][0] = np.nextafter(out[6][0], np.inf)
        return bad

    monkeypatch.setattr(prepare_mod, "fused_exp_matches_numpy", lambda: True)
    monkeypatch.setattr(prepare_mod, "_summaries_fused", off_for_f2)
    for w in (1, 3):
        calls.clear()
        got = prepare_many(srcs[:4], y, k=3, block=32, workers=w)
        assert [pm.extra["path"] for pm in got] == ["fused", "fused", "numpy", "fused"]
        assert calls == [32]
        for pm, src in zip(got, srcs):
            ref = prepare(src, y, k=3, block=32, path="numpy", workers=1)
            assert [f for f in FIELDS if not np.array_equal(getattr(pm, f), getattr(ref, f))] == []


def test_bad_row_is_reported_alike_with_any_thread_count(small_tasks):
    srcs, y = _models()
    x = np.array(srcs[1].scores)
    x[500, 7] = np.nan  # in the second chunk of 96 rows
    x[650, 2] = np.inf
    bad = ModelSource(x, 1.0, "logits", "bad")
    msgs = set()
    for w in (1, 2, 3):
        with pytest.raises(DivergentError) as err:
            prepare_many([srcs[0], bad, srcs[2]], y, k=3, block=32, workers=w)
        msgs.add(str(err.value))
    assert len(msgs) == 1 and "bad: row 500 " in msgs.pop()


def test_all_pair_codes_is_independent_of_threads(small_tasks):
    srcs, y = _models()
    prepared = prepare_many(srcs, y, k=2, block=32)  # k = 2: many examples reach tiers 2 and 3
    pairs = [(a, b) for a in range(5) for b in range(a + 1, 5)] + [(2, 2), (4, 0)]
    runs = {w: list(all_pair_codes(prepared, pairs, progress=False, workers=w)) for w in (1, 2, 3)}
    assert sum(r.n_gather for r in runs[1]) > 0 and sum(r.n_fallback for r in runs[1]) > 0
    for i, (a, b) in enumerate(pairs):
        ref = pair_codes(prepared[a], prepared[b])
        naive = pair_codes_reference(srcs[a].scores, srcs[b].scores, y, srcs[a].temperature, srcs[b].temperature,
                                     srcs[a].kind, srcs[b].kind)
        assert np.array_equal(ref[0], naive)
        for w in (1, 2, 3):
            r = runs[w][i]
            assert (r.a, r.b) == (a, b)
            assert np.array_equal(r.codes, ref[0]) and (r.n_gather, r.n_fallback) == ref[1:]
            assert np.array_equal(r.counts, np.bincount(ref[0], minlength=16))


@pytest.mark.parametrize("side", ["a", "b"])
def test_dominant_model_certificate_needs_a_strict_margin(side):
    # max p_a == fl(p_a^(2) + max p_b): class 0 can tie pred_a (0.25 + 0.25 = 0.5), so tier 1 must
    # leave the example open
    from divergent.engine import kernels

    one = dict(pred=np.array([1], np.int32), topi=np.array([[1, 0]], np.int32), topp=np.array([[0.5, 0.25]]),
               thr=np.array([0.25]))
    other = dict(pred=np.array([0], np.int32), topi=np.array([[0, 2]], np.int32), topp=np.array([[0.25, 0.25]]),
                 thr=np.array([0.25]))
    a, b = (one, other) if side == "a" else (other, one)
    codes, pending = np.zeros(1, np.uint8), np.zeros(1, np.uint8)
    npend = kernels.pair_tier1(a["pred"], a["topi"], a["topp"], a["thr"], b["pred"], b["topi"], b["topp"], b["thr"],
                               np.array([1]), codes, pending)
    assert npend == 1 and pending[0] == 1 and codes[0] & 4 == 0


def test_pairs_outside_the_models_are_refused():
    srcs, y = _models(n=40)
    prepared = prepare_many(srcs[:2], y, k=3)
    for pairs in ([(0, 2)], [(-1, 0)]):
        with pytest.raises(DivergentError, match="outside the 2 prepared"):
            list(all_pair_codes(prepared, pairs, progress=False))


@pytest.mark.filterwarnings("ignore:All-NaN slice")
def test_count_bootstrap_is_independent_of_threads():
    rng = np.random.default_rng(3)
    counts = np.stack([rng.multinomial(int(rng.integers(20, 3000)), p) for p in rng.dirichlet(np.full(16, 0.4), 70)])
    counts[:6, [1, 2, 5, 6, 9, 10, 13, 14]] = 0  # no inconsistent examples: conversion rate is NaN
    counts[6:8] = 0
    counts[6:8, 15] = 50  # every example right in both models
    counts[8:10] = 0
    counts[8:10, 15] = 60
    counts[8:10, 5] = 1  # one inconsistent example: NaN conversion rate in some resamples only
    runs = {w: count_bootstrap(counts, metrics_from_counts, n_boot=300, seed=5, chunk=16, workers=w) for w in (1, 2, 3)}

    # the bootstrap as a single loop: one generator, chunk after chunk, np.nanpercentile
    rng = np.random.default_rng(5)
    ref: dict[str, list] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for s in range(0, len(counts), 16):
                c = counts[s:s + 16]
                n = c.sum(axis=1)
                draws = rng.multinomial(n[None, :], (c / np.maximum(n, 1)[:, None])[None], size=(300, len(c)))
                for key, v in metrics_from_counts(draws).items():
                    ref.setdefault(key, []).append(np.nanpercentile(v, [(1 - 0.95) / 2 * 100, (1 + 0.95) / 2 * 100], axis=0))
    for w, got in runs.items():
        assert got.keys() == ref.keys()
        for key, parts in ref.items():
            want = np.concatenate(parts, axis=1)
            assert np.array_equal(got[key][0], want[0], equal_nan=True), (w, key)
            assert np.array_equal(got[key][1], want[1], equal_nan=True), (w, key)
    assert np.isnan(runs[2]["conversion_rate"][0][:6]).all()
    assert np.isfinite(runs[2]["conversion_rate"][0][8:10]).all()
