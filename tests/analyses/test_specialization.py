"""Tests of store-level specialization (tables, groups, calibration rules) and `divergent specialize`."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from divergent.analyses import class_groups as cg
from divergent.analyses.specialization import specialization, specialization_scores, write_tables
from divergent.errors import DivergentError
from divergent.metrics.probs import reference_probs

CIFAR = cg.BUILTIN_GROUPS["cifar10"]["classes"]
NATURE = {CIFAR.index(c) for c in cg.BUILTIN_GROUPS["cifar10"]["groups"]["nature"]}


def _logit_row(k: int, top: int, conf: float) -> np.ndarray:
    """Logits whose softmax (T = 1) puts `conf` on class `top` and the rest evenly elsewhere."""
    z = np.zeros(k, dtype=np.float32)
    z[top] = math.log(conf * (k - 1) / (1 - conf))
    return z


def _synthetic(n: int = 800, planted: bool = True, seed: int = 0):
    """Labels and A/B logits on CIFAR-10 classes. With `planted`, A wins (and is confident) on the
    nature classes and B on the vehicles; otherwise every class behaves the same."""
    rng = np.random.default_rng(seed)
    k = len(CIFAR)
    labels = np.arange(n) % k
    la, lb = np.zeros((n, k), np.float32), np.zeros((n, k), np.float32)
    for i, y in enumerate(labels):
        a_side = (y in NATURE) if planted else bool(rng.integers(2))
        # outcome: 0 neither, 1 only the specialist, 2 only the other, 3 both
        o = rng.choice(4, p=[0.1, 0.3, 0.1, 0.5])
        spec_ok, other_ok = o in (1, 3), o in (2, 3)
        spec_conf = 0.9 + rng.uniform(-0.05, 0.05) if o == 1 else 0.6 + rng.uniform(-0.1, 0.1)
        other_conf = 0.6 + rng.uniform(-0.1, 0.1)
        wrong = (y + 1 + rng.integers(k - 1)) % k
        spec = _logit_row(k, y if spec_ok else wrong, spec_conf)
        other = _logit_row(k, y if other_ok else (y + 1 + rng.integers(k - 1)) % k, other_conf)
        la[i], lb[i] = (spec, other) if a_side else (other, spec)
    return labels, la, lb


def _make_store(path, labels, la, lb, *, order=None, temps=(1.05, 0.95), fit_on="holdout"):
    from divergent.store import Store

    n = len(labels)
    ids = np.array([f"test/{i:05d}" for i in range(n)])
    if order is not None:
        labels, la, lb, ids = labels[order], la[order], lb[order], ids[order]
    st = Store.create(path)
    with st.writer() as w:
        w.add_split("test", labels=labels, class_names=CIFAR, ids=ids, dataset="cifar10")
        w.add_split("holdout", labels=labels[:20], class_names=CIFAR, ids=ids[:20], dataset="cifar10")
        for name, lg in (("res/a", la), ("clip:b", lb)):
            w.put(name, "test", logits=lg)
            w.put(name, "holdout", logits=lg[:20])
        if temps is not None:
            w.set_temperature("res/a", temps[0], fit_on=fit_on)
            w.set_temperature("clip:b", temps[1], fit_on=fit_on)
    return Store.open(path)


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    return _make_store(tmp_path_factory.mktemp("planted") / "st", *_synthetic(planted=True))


def test_examples_follow_the_reference_arithmetic(planted_store):
    res = specialization(planted_store, "res/a", "clip:b", "test", n_boot=50)
    la = planted_store.array("res/a", "test", "logits")
    lb = planted_store.array("clip:b", "test", "logits")
    pa, pb = reference_probs(la, 1.05), reference_probs(lb, 0.95)
    ex = res.examples
    np.testing.assert_array_equal(ex["conf_a"], pa.max(axis=1))
    np.testing.assert_array_equal(ex["phi_deg"], np.degrees(np.arctan2(pa.max(axis=1), pb.max(axis=1))))
    labels = planted_store.split("test").labels
    only_a = (pa.argmax(1) == labels) & (pb.argmax(1) != labels)
    assert (ex["outcome"] == "only_a").sum() == only_a.sum()
    assert set(res.tables()) == {"examples", "histogram", "summary", "per_class", "groups", "group_test"}
    assert res.histogram.groupby("outcome", observed=True)["count"].sum()["only_a"] == only_a.sum()
    assert res.meta["temperature_a"] == 1.05 and res.meta["temperature_b"] == 0.95
    # each model is more confident where only it is right
    assert res.score > 5 and res["summary"].set_index("statistic").loc["auc", "value"] > 0.6


def test_planted_group_effect_is_detected(planted_store):
    res = specialization(planted_store, "res/a", "clip:b", "test", groups="builtin", n_boot=50)
    g = res.groups.set_index("group")
    assert list(g.index) == ["nature", "anthropogenic"]
    assert g.loc["nature", "lean_deg"] > 5 and g.loc["anthropogenic", "lean_deg"] < -5
    t = res.group_test.iloc[0]
    assert t["statistic"] == "lean_deg" and t["method"] == "exact" and t["n_perm"] == 210
    assert t["p_value"] <= 1 / 210 + 1e-12 and t["difference"] > 10
    pc = res.per_class.set_index("class_name")
    assert pc.loc["cat", "group"] == "nature" and pc.loc["truck", "group"] == "anthropogenic"


def test_null_group_effect_is_not_detected(tmp_path):
    st = _make_store(tmp_path / "st", *_synthetic(planted=False, seed=4))
    res = specialization(st, "res/a", "clip:b", "test", groups="builtin", n_boot=0)
    assert res.group_test.iloc[0]["p_value"] > 0.05


def test_invariant_to_example_order(tmp_path, planted_store):
    labels, la, lb = _synthetic(planted=True)
    perm = np.random.default_rng(9).permutation(len(labels))
    shuffled = _make_store(tmp_path / "st", labels, la, lb, order=perm)
    r1 = specialization(planted_store, "res/a", "clip:b", "test", groups="builtin", n_boot=100)
    r2 = specialization(shuffled, "res/a", "clip:b", "test", groups="builtin", n_boot=100)
    for name in ("summary", "histogram", "per_class", "groups", "group_test"):
        pd.testing.assert_frame_equal(r1[name], r2[name], check_exact=False, rtol=1e-12)
    e1 = r1.examples.sort_values("id").reset_index(drop=True)
    e2 = r2.examples.sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(e1, e2)


def test_needs_temperatures_unless_uncalibrated(tmp_path):
    st = _make_store(tmp_path / "st", *_synthetic(n=100), temps=None)
    with pytest.raises(DivergentError, match="divergent calibrate"):
        specialization(st, "res/a", "clip:b", "test")
    res = specialization(st, "res/a", "clip:b", "test", calibrated=False, n_boot=10)
    p = reference_probs(st.array("res/a", "test", "logits"), 1.0)
    np.testing.assert_array_equal(res.examples["conf_a"], p.max(axis=1))


def test_refuses_temperature_fitted_on_evaluated_split(tmp_path):
    st = _make_store(tmp_path / "st", *_synthetic(n=100), fit_on="test")
    with pytest.raises(DivergentError, match="fitted on 'test'"):
        specialization(st, "res/a", "clip:b", "test")


def test_bad_names_get_suggestions(planted_store):
    with pytest.raises(DivergentError, match="did you mean"):
        specialization(planted_store, "res/aa", "clip:b", "test")
    with pytest.raises(DivergentError):
        specialization(planted_store, "res/a", "res/a", "test")
    with pytest.raises(DivergentError):
        specialization(planted_store, "res/a", "clip:b", "tst")


def test_group_file_and_unknown_class(tmp_path, planted_store):
    f = tmp_path / "g.toml"
    f.write_text('[groups]\nfurry = ["cat", "dog", "horse", "deer"]\nother = ["frog", "bird", "ship"]\n')
    res = specialization(planted_store, "res/a", "clip:b", "test", groups=f, n_boot=0)
    assert res.groups["group"].tolist() == ["furry", "other"] and res.groups["n_classes"].tolist() == [4, 3]
    assert pd.isna(res.per_class.set_index("class_name").loc["truck", "group"])
    assert res.group_test.iloc[0]["n_classes"] == 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": ["cat", "dgo"], "y": ["truck"]}))
    with pytest.raises(DivergentError, match="dog"):
        specialization(planted_store, "res/a", "clip:b", "test", groups=bad, n_boot=0)


def test_scores_of_a_pairs_table(planted_store):
    res = specialization(planted_store, "res/a", "clip:b", "test", n_boot=0)
    pairs = pd.DataFrame({"model_a": ["res/a", "clip:b"], "model_b": ["clip:b", "res/a"]})
    sc = specialization_scores(planted_store, pairs, "test")
    assert sc["specialization_deg"].iloc[0] == pytest.approx(res.score)
    # swapping A and B mirrors the angles: the score is symmetric, the margins swap
    assert sc["specialization_deg"].iloc[1] == pytest.approx(res.score)
    assert sc["a_margin_deg"].iloc[1] == pytest.approx(sc["b_margin_deg"].iloc[0])


def test_write_tables(tmp_path, planted_store):
    res = specialization(planted_store, "res/a", "clip:b", "test", groups="builtin", n_boot=20)
    (p,) = write_tables(res, tmp_path / "spec.json")
    doc = json.loads(p.read_text())
    assert doc["score_deg"] == pytest.approx(res.score) and len(doc["tables"]["examples"]) == 800
    paths = write_tables(res, tmp_path / "spec.csv")
    assert sorted(q.name for q in paths) == sorted(f"spec.{t}.csv" for t in res.TABLES)
    assert len(pd.read_csv(tmp_path / "spec.per_class.csv")) == 10


def test_cli_smoke(tmp_path, planted_store):
    import typer
    from typer.testing import CliRunner

    from divergent.cli.specialize import register

    app = typer.Typer()

    @app.callback()
    def _main():  # a callback keeps `specialize` a subcommand
        pass

    register(app)
    out = tmp_path / "o.json"
    r = CliRunner().invoke(app, ["specialize", str(planted_store.root), "--a", "res/a", "--b", "clip:b",
                                 "--split", "test", "--groups", "builtin", "--n-boot", "20", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "specialization_deg" in r.output and "nature" in r.output and out.exists()
    r = CliRunner().invoke(app, ["specialize", str(planted_store.root), "--a", "nope", "--b", "clip:b"])
    assert isinstance(r.exception, DivergentError) and "unknown model" in str(r.exception)


def test_cli_through_divergent_main(planted_store, capsys):
    from divergent.cli import main

    rc = main(["specialize", str(planted_store.root), "--a", "res/a", "--b", "clip:b", "--n-boot", "10"])
    assert rc == 0 and "specialization_deg" in capsys.readouterr().out
    assert main(["specialize", str(planted_store.root), "--a", "res/a", "--b", "clip:bb"]) == 2
    assert "did you mean" in capsys.readouterr().err


# ---- class groups as data -------------------------------------------------------------------------

def test_builtin_groups_match_names_loosely():
    name, g = cg.builtin_for(["t-shirt_top", "TROUSER", "pullover", "dress", "coat", "sandal", "shirt",
                              "sneaker", "bag", "ankle-boot"])
    assert name == "fashion-mnist" and set(g) == {"garments", "footwear", "bags"} and g["bags"] == ["Bag"]
    groups = cg.BUILTIN_GROUPS["cifar10"]["groups"]
    assert sorted(groups["nature"] + groups["anthropogenic"]) == sorted(CIFAR)
    with pytest.raises(DivergentError, match="--groups"):
        cg.builtin_for(["a", "b"])


def test_group_files_in_every_form(tmp_path):
    classes = ["tench", "goldfish", "car", "plane", "rock"]
    (tmp_path / "m.json").write_text(json.dumps({"tench": "nature", "goldfish": "nature", "car": "made"}))
    assert cg.load_groups(tmp_path / "m.json") == {"nature": ["tench", "goldfish"], "made": ["car"]}
    (tmp_path / "m.csv").write_text("class,group\ncar,made\nplane,made\n")
    assert cg.load_groups(tmp_path / "m.csv") == {"made": ["car", "plane"]}
    anc = {"ancestors": {"tench": ["n01440764", "n00015388"], "car": ["n00021939"], "rock": ["n09287968"],
                         "plane": ["n99999999"]}}
    (tmp_path / "a.json").write_text(json.dumps(anc))
    g = cg.load_groups(tmp_path / "a.json")
    assert g == {"anthropogenic": ["car"], "nature": ["tench", "rock"]}
    names, idx = cg.group_index(g, classes)
    assert names == ["anthropogenic", "nature"] and idx.tolist() == [1, -1, 0, -1, 1]
    with pytest.raises(DivergentError, match="two groups"):
        cg.group_index({"x": ["car"], "y": ["Car"]}, classes)
    (tmp_path / "bad.toml").write_text("x = [1, 2")
    with pytest.raises(DivergentError, match="parse"):
        cg.load_groups(tmp_path / "bad.toml")


# ---- real data ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fashion_mnist_two_real_models(fmnist_dir, tmp_path):
    """Two models trained here on real Fashion-MNIST (a linear model and an MLP); built-in groups."""
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from divergent.analyses.calibration import calibrate
    from divergent.data.idx import FMNIST_CLASSES, read_idx
    from divergent.data.splits import stratified_halves
    from divergent.store import Store

    xtr = read_idx(fmnist_dir / "train-images-idx3-ubyte.gz")[:3000].reshape(3000, -1) / 255.0
    ytr = read_idx(fmnist_dir / "train-labels-idx1-ubyte.gz")[:3000].astype(np.int64)
    xte = read_idx(fmnist_dir / "t10k-images-idx3-ubyte.gz").reshape(10000, -1) / 255.0
    yte = read_idx(fmnist_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    lin = LogisticRegression(max_iter=100).fit(xtr, ytr)
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=25, random_state=0).fit(xtr, ytr)
    st = Store.create(tmp_path / "st")
    with st.writer() as w:
        for split, idx in zip(("holdout", "test"), stratified_halves(yte)):
            w.add_split(split, labels=yte[idx], class_names=list(FMNIST_CLASSES),
                        ids=[f"t10k/{i:05d}" for i in idx], dataset="fashion-mnist")
            w.put("fmnist/linear", split, logits=lin.decision_function(xte[idx]).astype(np.float32))
            w.put("fmnist/mlp", split, probs=mlp.predict_proba(xte[idx]).astype(np.float32), renormalize=True)
    calibrate(tmp_path / "st", fit_on="holdout")
    st = Store.open(tmp_path / "st")
    res = specialization(st, "fmnist/mlp", "fmnist/linear", "test", groups="builtin", n_boot=200)
    # independent recomputation of the angles (scipy softmax of the stored scores / T)
    test_idx = stratified_halves(yte)[1]
    # stored probabilities enter as float32(log(float32 p)) (the reference arithmetic's float32 logits)
    za = np.log(np.asarray(st.array("fmnist/mlp", "test", "probs"), np.float64)).astype(np.float32).astype(np.float64)
    zb = np.asarray(st.array("fmnist/linear", "test", "logits"), np.float64)
    ca = softmax(za / st.temperature("fmnist/mlp"), axis=1).max(1)
    cb = softmax(zb / st.temperature("fmnist/linear"), axis=1).max(1)
    np.testing.assert_allclose(res.examples["phi_deg"], np.degrees(np.arctan2(ca, cb)), rtol=1e-9)
    assert res.examples["id"].tolist() == [f"t10k/{i:05d}" for i in test_idx]
    s = res.summary.set_index("statistic")
    assert s.loc[["n_only_a", "n_only_b", "n_both", "n_neither"], "value"].sum() == 5000
    assert s.loc["n_only_a", "value"] > 50 and s.loc["n_only_b", "value"] > 50
    # calibrated models are each more confident where only they are right
    assert s.loc["specialization_deg", "ci_low"] > 0 and s.loc["auc", "value"] > 0.5
    assert res.groups["group"].tolist() == ["garments", "footwear", "bags"]
    t = res.group_test.iloc[0]
    assert t["method"] == "exact" and t["n_perm"] == 840 and 0 < t["p_value"] <= 1


def test_representative_angles_group_intervals_are_the_separation_bootstrap(planted_store):
    from divergent.analyses.specialization import representative_angles
    from divergent.metrics import specialization as sm

    t = representative_angles(planted_store, "res/a", {"dataset": "clip:b"}, "test", groups="builtin",
                              n_boot=80, seed=3)
    res = specialization(planted_store, "res/a", "clip:b", "test", groups="builtin", n_boot=0)
    ex = res.examples
    assert len(t["angles"]) == len(ex) and (t["angles"]["model_b"] == "clip:b").all()
    codes = sm.outcome_codes(ex["pred_a"] == ex["label"], ex["pred_b"] == ex["label"])
    g = t["group_specialization"].set_index("group")
    assert list(g.index) == ["anthropogenic", "nature"]
    for name in g.index:
        sel = (res.per_class.set_index("class_name").loc[ex["class_name"], "group"] == name).to_numpy()
        sep = sm.separation(ex["phi_deg"].to_numpy()[sel], codes[sel], n_boot=80, seed=3)["specialization_deg"]
        assert (g.loc[name, "specialization"], g.loc[name, "specialization_lo"], g.loc[name, "specialization_hi"]) == \
            (sep["value"], sep["ci_low"], sep["ci_high"])
        assert g.loc[name, "n_only_a"] == int((codes[sel] == sm.ONLY_A).sum())
    # the planted effect: A specialises on nature, B on vehicles; both groups separate
    assert (g["specialization_lo"] > 0).all()
    assert representative_angles(planted_store, "res/a", {}, "test") == {}
