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


# Hand-built cases: 3 classes, 4 examples, probabilities given as log-probabilities. The base is right
# on examples 0 and 1 only. Every expected value below is worked out by hand from these tables.
Y4 = np.array([0, 1, 2, 0])
BASE4 = [[.6, .2, .2], [.2, .6, .2], [.5, .3, .2], [.2, .5, .3]]
FIX2 = lambda p2: [[.4, .3, .3], [.3, .4, .3], [(1 - p2) / 2, (1 - p2) / 2, p2], [.3, .4, .3]]  # noqa: E731
WEAK4 = [[.1, .8, .1], [.8, .1, .1], [.8, .1, .1], [.1, .8, .1]]


def _hand(tables: dict, order=None):
    names = [n for n in (order or tables) if n != "base"]
    xs = [np.log(np.array(tables[n])).astype(np.float32) for n in ["base", *names]]
    return _engine(xs, Y4, [1.0] * len(xs), ["base", *names], 0, False, len(xs))


def _nll(*q_label):
    return -float(np.mean(np.log(q_label)))


def test_accuracy_tie_goes_to_the_lower_nll_not_the_name():
    # alpha and beta both fix example 2 only (fit acc 3/4 each), beta more confidently: with the base,
    # q[2, 2] = (.2 + .90) / 2 = .55 for alpha and (.2 + .98) / 2 = .59 for beta; the other examples are
    # the same: q_y = .5, .5 and (.2 + .3) / 2 = .25 for example 3. So beta wins although "alpha" < "beta".
    nll_alpha, nll_beta = _nll(.5, .5, .55, .25), _nll(.5, .5, .59, .25)
    assert nll_beta < nll_alpha - 0.01
    tables = {"base": BASE4, "alpha": FIX2(.90), "beta": FIX2(.98), "weak": WEAK4}
    for order in (["alpha", "beta", "weak"], ["weak", "beta", "alpha"]):
        steps = _hand(tables, order)
        assert [s.name for s in steps] == ["base", "beta", "alpha", "weak"], order
        # fit accuracies by hand: base 2/4; +beta fixes example 2; +alpha changes nothing (example 3:
        # class 0 gets .2+.3+.3, class 1 .5+.4+.4); +weak breaks examples 0 and 1 (1.5 vs 1.6)
        assert [s.fit_acc for s in steps] == [0.5, 0.75, 0.75, 0.25]
        assert steps[1].fit_nll == pytest.approx(nll_beta, rel=1e-6)
        nll3 = _nll((.6 + .4 + .4) / 3, (.6 + .4 + .4) / 3, (.2 + .98 + .9) / 3, (.2 + .3 + .3) / 3)
        assert steps[2].fit_nll == pytest.approx(nll3, rel=1e-6)
        assert best_size(steps) == 2  # 3/4 at sizes 2 and 3: the smaller one


def test_accuracy_decides_before_nll():
    # "aaa" is very confident where the base is already right and keeps examples 2, 3 wrong (acc 2/4),
    # "zzz" is barely right on 0, 1 but fixes 2 and 3 (acc 4/4); aaa has the lower NLL and the smaller name
    aaa = [[.998, .001, .001], [.001, .998, .001], [.45, .05, .5], [.45, .5, .05]]
    zzz = [[.34, .33, .33], [.33, .34, .33], [.1, .1, .8], [.8, .1, .1]]
    nll_aaa = _nll((.6 + .998) / 2, (.6 + .998) / 2, (.2 + .5) / 2, (.2 + .45) / 2)
    nll_zzz = _nll((.6 + .34) / 2, (.6 + .34) / 2, (.2 + .8) / 2, (.2 + .8) / 2)
    assert nll_aaa < nll_zzz - 0.05
    steps = _hand({"base": BASE4, "aaa": aaa, "zzz": zzz})
    assert [s.name for s in steps[:2]] == ["base", "zzz"] and steps[1].fit_acc == 1.0
    assert steps[1].fit_nll == pytest.approx(nll_zzz, rel=1e-6)


def test_accuracy_and_nll_tie_goes_to_the_smaller_name():
    # identical models under two names: same accuracy, bitwise the same NLL; "eta" < "zeta"
    tables = {"base": BASE4, "zeta": FIX2(.9), "eta": FIX2(.9)}
    for order in (["zeta", "eta"], ["eta", "zeta"]):
        assert [s.name for s in _hand(tables, order)] == ["base", "eta", "zeta"], order


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
