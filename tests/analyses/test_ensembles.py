"""Ensemble analyses on a store: exact greedy paths, held-out discipline, rules, CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from divergent.analyses.ensembles import base_plus_one, greedy_ensemble
from divergent.cards import ModelCard
from divergent.engine.naive import greedy_reference, pair_codes_reference, ref_probs
from divergent.errors import DivergentError
from divergent.metrics.pairs import ENS_OK
from divergent.store import Store

CARDS = {
    "base": ModelCard("base", family="resnet", train_data="cifar10", seed=0),
    "reinit": ModelCard("reinit", family="resnet", train_data="cifar10", seed=1),
    "arch": ModelCard("arch", family="vit", train_data="cifar10"),
    "frame": ModelCard("frame", family="resnet", objective="contrastive", train_data="cifar10"),
    "data": ModelCard("data", family="clip", objective="contrastive", train_data="wit"),
}


def _make_store(path, arrays: dict, labels: dict, temps: dict | None = None, cards=CARDS):
    st = Store.create(path)
    c = next(iter(arrays.values()))["test"].shape[1]
    with st.writer() as w:
        for split, y in labels.items():
            w.add_split(split, labels=y, class_names=[f"c{i}" for i in range(c)],
                        ids=[f"{split}/{i:04d}" for i in range(len(y))], dataset="synthetic")
        for m, per in arrays.items():
            for split, x in per.items():
                w.put(m, split, logits=x, card=cards.get(m, ModelCard(m)))
            if temps is not None:
                w.set_temperature(m, temps[m], fit_on="holdout")
    return Store.open(path)


@pytest.fixture(scope="module")
def random_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, c = 400, 10
    labels = {"holdout": rng.integers(0, c, n), "test": rng.integers(0, c, n)}
    arrays, temps = {}, {}
    for i, m in enumerate(CARDS):
        arrays[m] = {}
        for s, y in labels.items():
            z = rng.normal(size=(n, c)) * 2
            z[np.arange(n), y] += 3.5 if m == "base" else rng.uniform(1.0, 3.0)
            arrays[m][s] = z.astype(np.float32)
        temps[m] = float(rng.uniform(0.7, 1.5))
    st = _make_store(tmp_path_factory.mktemp("st") / "store", arrays, labels, temps)
    return st, arrays, labels, temps


def test_greedy_matches_naive(random_store):
    st, arrays, labels, temps = random_store
    df = greedy_ensemble(st, "base", max_size=4, workers=1)
    names = list(CARDS)
    pf = [ref_probs(arrays[m]["holdout"], "logits", temps[m]) for m in names]
    pe = [ref_probs(arrays[m]["test"], "logits", temps[m]) for m in names]
    ref = greedy_reference(pf, labels["holdout"], 0, max_size=4, names=names, probs_eval=pe, labels_eval=labels["test"])
    assert list(df["member"]) == [names[r[0]] for r in ref]
    assert list(df["fit_acc"]) == [r[1] for r in ref]
    assert list(df["eval_acc"]) == [r[3] for r in ref]
    assert df["best"].sum() == 1 and df.loc[0, "category"] == "base"
    cat = dict(zip(df["member"], df["category"]))
    expected = {"reinit": "reinit", "arch": "architecture", "frame": "framework", "data": "dataset"}
    assert all(cat[m] == expected[m] for m in cat if m in expected)


def test_refuses_fit_on_eval_and_missing_temperature(random_store, tmp_path):
    st, arrays, labels, _ = random_store
    with pytest.raises(DivergentError, match="refusing"):
        greedy_ensemble(st, "base", fit_on="test", split="test")
    st2 = _make_store(tmp_path / "s2", arrays, labels, temps=None)
    with pytest.raises(DivergentError, match="calibrate"):
        greedy_ensemble(st2, "base", max_size=2)
    assert len(greedy_ensemble(st2, "base", max_size=2, calibrated=False)) == 2


def _heldout_case(tmp_path):
    # base is wrong on examples 4, 5 of both splits; A fixes them on holdout only, B on test only
    y = np.array([0, 1, 2, 0, 0, 0])
    strong = lambda lab: np.eye(3)[lab] * 0.6 + 0.2  # noqa: E731
    weak_wrong = np.array([0.35, 0.45, 0.2])
    fixer = np.array([0.9, 0.05, 0.05])
    base = np.stack([strong(l) for l in y[:4]] + [weak_wrong, weak_wrong])
    fixed = base.copy()
    fixed[4:] = fixer
    L = lambda p: np.log(p).astype(np.float32)  # noqa: E731
    arrays = {"base": {"holdout": L(base), "test": L(base)},
              "a-fixes-holdout": {"holdout": L(fixed), "test": L(base)},
              "b-fixes-test": {"holdout": L(base), "test": L(fixed)}}
    return _make_store(tmp_path / "h", arrays, {"holdout": y, "test": y}, {m: 1.0 for m in arrays})


def test_selection_uses_holdout_not_test(tmp_path):
    st = _heldout_case(tmp_path)
    df = greedy_ensemble(st, "base", max_size=2)
    assert df["member"].tolist() == ["base", "a-fixes-holdout"]
    assert df["fit_acc"].tolist() == [4 / 6, 1.0] and df["eval_acc"].tolist() == [4 / 6, 4 / 6]
    cheat = greedy_ensemble(st, "base", max_size=2, fit_on="test", split="test", allow_fit_on_eval=True)
    assert cheat["member"].tolist() == ["base", "b-fixes-test"]


def test_base_plus_one_matches_pair_reference(random_store):
    st, arrays, labels, temps = random_store
    df = base_plus_one(st, "base", lower_only=False, n_boot=200)
    y = labels["test"]
    for r in df.itertuples(index=False):
        codes = pair_codes_reference(arrays["base"]["test"], arrays[r.member]["test"], y, temps["base"], temps[r.member])
        assert r.ensemble_acc == np.mean((codes & ENS_OK) > 0)
        assert r.ci_low <= r.ensemble_acc <= r.ci_high
    assert set(df["member"]) == set(CARDS) - {"base"}
    low = base_plus_one(st, "base", n_boot=50)
    assert (low["member_acc"] < low["base_acc"]).all()


def _z(x, t):
    """The mean-logits rule's scaled logits, by its definition: float64(float32(l)) / T."""
    return np.asarray(x, dtype=np.float32).astype(np.float64) / t


def _logit_ens(arrays, temps, members, split, y):
    """(accuracy, NLL) of softmax(mean of the members' scaled logits) on a split."""
    q = np.mean([_z(arrays[m][split], temps[m]) for m in members], axis=0)
    lse = np.log(np.exp(q - q.max(1, keepdims=True)).sum(1)) + q.max(1)
    return float(np.mean(q.argmax(1) == y)), float(np.mean(lse - q[np.arange(len(y)), y]))


def test_mean_logits_rule_by_its_definition(random_store):
    st, arrays, labels, temps = random_store
    df = greedy_ensemble(st, "base", max_size=4, rule="mean-logits")
    members = list(df["member"])
    assert members[0] == "base" and len(set(members)) == 4
    for t in range(1, 4):
        # the member added is the best by (holdout accuracy, then lower holdout NLL, then name)
        scored = sorted(((-_logit_ens(arrays, temps, members[:t] + [m], "holdout", labels["holdout"])[0],
                          _logit_ens(arrays, temps, members[:t] + [m], "holdout", labels["holdout"])[1], m)
                         for m in CARDS if m not in members[:t]))
        assert members[t] == scored[0][2], t
    for t, r in enumerate(df.itertuples()):
        fit_acc, fit_nll = _logit_ens(arrays, temps, members[:t + 1], "holdout", labels["holdout"])
        assert r.fit_acc == fit_acc and r.fit_nll == pytest.approx(fit_nll, rel=1e-12)
        assert r.eval_acc == _logit_ens(arrays, temps, members[:t + 1], "test", labels["test"])[0]
    b1 = base_plus_one(st, "base", rule="mean-logits", lower_only=False).set_index("member")
    assert set(b1.index) == set(CARDS) - {"base"}
    for m, r in b1.iterrows():
        assert r.ensemble_acc == _logit_ens(arrays, temps, ["base", m], "test", labels["test"])[0]


def test_weighted_rule_evaluates_its_weights(random_store):
    st, arrays, labels, temps = random_store
    df = greedy_ensemble(st, "base", max_size=3, rule="weighted")
    assert len(df) == 3
    for r in df.itertuples():
        w = r.weights
        assert set(w) == set(df["member"].iloc[:r.step]) and abs(sum(w.values()) - 1) < 1e-9
        for split, col in (("holdout", "fit_acc"), ("test", "eval_acc")):
            q = sum(wi * ref_probs(arrays[m][split], "logits", temps[m]) for m, wi in w.items())
            assert getattr(r, col) == float(np.mean(q.argmax(1) == labels[split]))
    b1 = base_plus_one(st, "base", rule="weighted", lower_only=False).set_index("member")
    assert set(b1.index) == set(CARDS) - {"base"}
    pb = ref_probs(arrays["base"]["test"], "logits", temps["base"])
    for m, r in b1.iterrows():
        q = r.weight_base * pb + (1 - r.weight_base) * ref_probs(arrays[m]["test"], "logits", temps[m])
        assert 0 <= r.weight_base <= 1 and r.ensemble_acc == float(np.mean(q.argmax(1) == labels["test"]))


def test_unknown_rule_is_refused(random_store):
    st, *_ = random_store
    with pytest.raises(DivergentError, match="unknown ensemble rule"):
        greedy_ensemble(st, "base", rule="median")
    with pytest.raises(DivergentError, match="unknown ensemble rule"):
        base_plus_one(st, "base", rule="median")


# A hand-built store (3 classes, 4 examples, the same on holdout and test; T = 1). Accuracies alone:
# base 2/4, alpha 3/4, beta 3/4, strong 4/4. With the base: strong fixes examples 2 and 3 (acc 4/4);
# alpha and beta fix example 2 only (3/4 each), beta with q[2, 2] = (.2 + .98) / 2 = .59 > alpha's
# (.2 + .90) / 2 = .55, so the lower holdout NLL picks beta although "alpha" < "beta".
HAND = {
    "base": [[.6, .2, .2], [.2, .6, .2], [.5, .3, .2], [.2, .5, .3]],
    "alpha": [[.4, .3, .3], [.3, .4, .3], [.05, .05, .9], [.3, .4, .3]],
    "beta": [[.4, .3, .3], [.3, .4, .3], [.01, .01, .98], [.3, .4, .3]],
    "strong": [[.5, .25, .25], [.25, .5, .25], [.1, .1, .8], [.8, .1, .1]],
}


@pytest.fixture
def hand_store(tmp_path):
    y = np.array([0, 1, 2, 0])
    arrays = {m: {s: np.log(np.array(p)).astype(np.float32) for s in ("holdout", "test")} for m, p in HAND.items()}
    return _make_store(tmp_path / "hand", arrays, {"holdout": y, "test": y}, {m: 1.0 for m in HAND},
                       cards={m: ModelCard(m) for m in HAND})


def test_acc_max_filters_the_pool_and_nll_breaks_the_tie(hand_store):
    free = greedy_ensemble(hand_store, "base", max_size=2)
    assert list(free["member"]) == ["base", "strong"] and list(free["fit_acc"]) == [0.5, 1.0]
    for acc_max in (0.8, 80, 0.75, 75):  # fraction or percent; the bound is inclusive
        df = greedy_ensemble(hand_store, "base", max_size=3, acc_max=acc_max)
        assert list(df["member"]) == ["base", "beta", "alpha"], acc_max
        assert list(df["member_acc"]) == [0.5, 0.75, 0.75] and list(df["fit_acc"]) == [0.5, 0.75, 0.75]
        assert df["fit_nll"].iloc[1] == pytest.approx(-np.mean(np.log([.5, .5, .59, .25])), rel=1e-6)
    band = greedy_ensemble(hand_store, "base", max_size=3, acc_band="70,80")
    assert list(band["member"]) == ["base", "beta", "alpha"]
    with pytest.raises(DivergentError, match="no candidate models"):
        greedy_ensemble(hand_store, "base", acc_max=0.74)


def test_cli_acc_max(hand_store, tmp_path, capsys):
    from divergent.cli import main

    root = str(hand_store.root)
    # without a filter: strong, then beta (with base + strong, alpha and beta both make 4/4; beta has the
    # lower NLL, (.2 + .8 + .98) / 3 > (.2 + .8 + .9) / 3 on example 2)
    for extra, expected in (([], ["base", "strong", "beta"]), (["--acc-max", "0.8"], ["base", "beta", "alpha"]),
                            (["--acc-max", "80"], ["base", "beta", "alpha"]),
                            (["--acc-band", "0.7,0.8"], ["base", "beta", "alpha"])):
        out = tmp_path / "t.csv"
        assert main(["ensemble", root, "--base", "base", "--max-size", "3", "--no-progress", "--out", str(out),
                     *extra]) == 0
        assert list(pd.read_csv(out)["member"]) == expected, extra
    capsys.readouterr()
    assert main(["ensemble", root, "--base", "base", "--acc-max", "0.5"]) == 2
    assert "no candidate models" in capsys.readouterr().err


def test_cli(random_store, tmp_path):
    from divergent.cli import main

    st, *_ = random_store
    out = tmp_path / "traj.csv"
    assert main(["ensemble", str(st.root), "--base", "base", "--max-size", "3", "--no-progress",
                 "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3
    assert main(["ensemble", str(st.root), "--base", "base", "--fit-on", "test"]) == 2
    assert main(["base-plus-one", str(st.root), "--base", "base", "--all"]) == 0
