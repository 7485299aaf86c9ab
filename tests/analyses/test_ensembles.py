"""Ensemble analyses on a store: exact greedy paths, held-out discipline, rules, CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from divergent.analyses.ensembles import base_plus_one, greedy_ensemble
from divergent.cards import ModelCard
from divergent.engine.naive import greedy_reference, pair_codes_reference, ref_probs
from divergent.errors import DivergentError
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
        assert r.ensemble_acc == np.mean((codes & 4) > 0)
        assert r.ci_low <= r.ensemble_acc <= r.ci_high
    assert set(df["member"]) == set(CARDS) - {"base"}
    low = base_plus_one(st, "base", n_boot=50)
    assert (low["member_acc"] < low["base_acc"]).all()


@pytest.mark.parametrize("rule", ["mean-logits", "weighted"])
def test_other_rules(random_store, rule):
    st, *_ = random_store
    df = greedy_ensemble(st, "base", max_size=3, rule=rule)
    assert len(df) == 3 and df["eval_acc"].between(0, 1).all()
    if rule == "weighted":
        assert all(abs(sum(w.values()) - 1) < 1e-9 for w in df["weights"])
    b1 = base_plus_one(st, "base", rule=rule, lower_only=False)
    assert len(b1) == 4
    with pytest.raises(DivergentError):
        greedy_ensemble(st, "base", rule="median")


def test_cli(random_store, tmp_path):
    from divergent.cli import main

    st, *_ = random_store
    out = tmp_path / "traj.csv"
    assert main(["ensemble", str(st.root), "--base", "base", "--max-size", "3", "--no-progress",
                 "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3
    assert main(["ensemble", str(st.root), "--base", "base", "--fit-on", "test"]) == 2
    assert main(["base-plus-one", str(st.root), "--base", "base", "--all"]) == 0
