"""Greedy engine: same path as a naive exact implementation; order-independent tie-breaking."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.engine import ModelSource, greedy_select, prepare
from divergent.engine.greedy import best_size
from divergent.engine.naive import greedy_reference, ref_probs


def _models(seed, m=7, n=600, c=15, scale=2.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    latent = rng.normal(size=(n, c))
    xs = []
    for i in range(m):
        z = (0.7 * latent + rng.normal(size=(n, c))) * scale
        z[np.arange(n), y] += rng.uniform(0.5, 2.5) * scale
        xs.append(z.astype(dtype))
    return xs, y, list(rng.uniform(0.6, 1.8, m))


def _engine(xs, y, ts, names, base, replacement, max_size, k=3, eval_xs=None, ey=None):
    fit = [prepare(ModelSource(x, t, "logits", nm), y, k=k) for x, t, nm in zip(xs, ts, names)]
    ev = [ModelSource(x, t, "logits", nm) for x, t, nm in zip(eval_xs, ts, names)] if eval_xs else None
    pool = None if not replacement else list(range(len(xs)))
    return greedy_select(fit, base, pool=pool, max_size=max_size, replacement=replacement,
                         eval_sources=ev, eval_labels=ey, workers=2)


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive(seed, replacement):
    xs, y, ts = _models(seed)
    exs, ey, _ = _models(seed + 100)
    names = [f"m{i}" for i in range(len(xs))]
    steps = _engine(xs, y, ts, names, 0, replacement, 6, k=2, eval_xs=exs, ey=ey)
    pf = [ref_probs(x, "logits", t) for x, t in zip(xs, ts)]
    pe = [ref_probs(x, "logits", t) for x, t in zip(exs, ts)]
    pool = list(range(len(xs))) if replacement else None
    ref = greedy_reference(pf, y, 0, pool=pool, max_size=6, replacement=replacement, names=names,
                           probs_eval=pe, labels_eval=ey)
    assert [s.member for s in steps] == [r[0] for r in ref]
    assert [s.fit_acc for s in steps] == [r[1] for r in ref]
    assert [s.eval_acc for s in steps] == [r[3] for r in ref]
    assert np.allclose([s.fit_nll for s in steps], [r[2] for r in ref], rtol=1e-12)


def test_hand_built_path():
    # 3 classes, 4 examples. base is right on 0,1; A right on 2 (confidently); B right on 3
    y = np.array([0, 1, 2, 0])
    L = np.log
    base = L(np.array([[.6, .2, .2], [.2, .6, .2], [.5, .3, .2], [.2, .5, .3]]))
    a = L(np.array([[.4, .3, .3], [.3, .4, .3], [.05, .05, .9], [.3, .4, .3]]))
    b = L(np.array([[.4, .3, .3], [.3, .4, .3], [.4, .3, .3], [.9, .05, .05]]))
    weak = L(np.array([[.1, .8, .1], [.8, .1, .1], [.8, .1, .1], [.1, .8, .1]]))
    xs = [x.astype(np.float32) for x in (base, a, b, weak)]
    steps = _engine(xs, y, [1.0] * 4, ["base", "a", "b", "weak"], 0, False, 4)
    assert steps[0].fit_acc == 0.5
    # a and b both fix one example; tie on accuracy -> lower NLL decides
    pf = [ref_probs(x) for x in xs]
    nll = {nm: -np.mean(np.log(((pf[0] + pf[i]) / 2)[np.arange(4), y])) for i, nm in ((1, "a"), (2, "b"))}
    first = min(nll, key=nll.get)
    assert steps[1].name == first and steps[1].fit_acc == 0.75
    assert steps[2].name == ({"a", "b"} - {first}).pop() and steps[2].fit_acc == 1.0
    assert steps[3].name == "weak"
    assert best_size(steps) == 3


def test_tie_breaking_independent_of_order():
    xs, y, ts = _models(3, m=6)
    # duplicate models under different names: exact ties in accuracy and NLL -> name decides
    xs = xs + [xs[2].copy(), xs[4].copy()]
    ts = ts + [ts[2], ts[4]]
    names = ["base", "m1", "zz-dup", "m3", "b-dup", "m5", "aa-dup", "a-dup"]
    ref_steps = [s.name for s in _engine(xs, y, ts, names, 0, False, 6)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        perm = [0] + list(rng.permutation(np.arange(1, len(xs))))
        got = [s.name for s in _engine([xs[i] for i in perm], y, [ts[i] for i in perm],
                                       [names[i] for i in perm], 0, False, 6)]
        assert got == ref_steps
    # of two identical models, the one with the smaller name is taken first
    for a, b in (("zz-dup", "aa-dup"), ("b-dup", "a-dup")):
        if a in ref_steps and b in ref_steps:
            assert ref_steps.index(b) < ref_steps.index(a)


def test_rounding_ties_in_mean_of_three():
    # integer logits give exact ties; the division by 3 can merge sums that differ in the last bit
    rng = np.random.default_rng(5)
    n, c = 2000, 6
    y = rng.integers(0, c, n)
    xs = [np.round(rng.normal(size=(n, c)) * 1.5).astype(np.float16) for _ in range(6)]
    names = [f"m{i}" for i in range(6)]
    steps = _engine(xs, y, [1.0] * 6, names, 0, True, 7, k=2)
    pf = [ref_probs(x) for x in xs]
    ref = greedy_reference(pf, y, 0, pool=list(range(6)), max_size=7, replacement=True, names=names)
    assert [s.member for s in steps] == [r[0] for r in ref]
    assert [s.fit_acc for s in steps] == [r[1] for r in ref]
