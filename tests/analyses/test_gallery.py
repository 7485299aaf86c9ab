"""The gallery: which examples only one model gets right (hand-computed), the confusion difference,
and the study unit on a small real store (Fashion-MNIST; CIFAR-10 JPEGs with two shared ResNets)
whose thumbnails are the dataset's own pixels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from divergent.analyses.gallery import confusion_difference, select_gallery
from divergent.errors import DivergentError

NAMES = ["cat", "dog", "car", "ship"]
GROUPS = {"animals": ["cat", "dog"], "vehicles": ["car"]}   # 'ship' is in no group -> "all"


def _case():
    """Ten examples, by hand: outcome (A right / B right), the right model's confidence, group."""
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 0, 3, 1])
    pred_a = np.array([0, 1, 2, 3, 1, 1, 0, 0, 0, 2])
    pred_b = np.array([1, 0, 2, 0, 0, 2, 2, 3, 3, 1])
    conf_a = np.array([.9, .5, .8, .7, .6, .95, .4, .9, .3, .2])
    conf_b = np.array([.4, .6, .7, .2, .8, .3, .99, .6, .5, .7])
    # only A right: 0 (cat, .9), 1 (dog, .5), 3 (ship, .7), 5 (dog, .95), 7 (cat, .9)
    # only B right: 4 (cat, .8), 6 (car, .99), 8 (ship, .5), 9 (dog, .7); both right: 2
    return labels, pred_a, pred_b, conf_a, conf_b


def test_selection_matches_the_hand_computed_case():
    labels, pa, pb, ca, cb = _case()
    g = select_gallery(labels, pa, pb, ca, cb, NAMES, ids=[f"x{i}" for i in range(10)], groups=GROUPS, per_group=2)
    got = list(zip(g["side"], g["group"], g["rank"], g["position"]))
    assert got == [
        ("only_a", "animals", 0, 5), ("only_a", "animals", 1, 0),   # .95, then .9 (0 before 7: position breaks the tie)
        ("only_a", "all", 0, 3),
        ("only_b", "animals", 0, 4), ("only_b", "animals", 1, 9),
        ("only_b", "vehicles", 0, 6),
        ("only_b", "all", 0, 8),
    ]
    assert g["id"].tolist() == ["x5", "x0", "x3", "x4", "x9", "x6", "x8"]
    # the confidence shown is the right model's; names follow the labels and predictions
    assert g["confidence"].tolist() == [.95, .9, .7, .8, .7, .99, .5]
    assert g.loc[0, ["class_name", "pred_a_name", "pred_b_name"]].tolist() == ["dog", "dog", "car"]
    # a larger cap shows every example, still most confident first with ties by position
    g = select_gallery(labels, pa, pb, ca, cb, NAMES, groups=GROUPS, per_group=10)
    assert g.loc[(g.side == "only_a") & (g.group == "animals"), "position"].tolist() == [5, 0, 7, 1]
    # no groups: one group "all" per side
    g = select_gallery(labels, pa, pb, ca, cb, NAMES, per_group=3)
    assert list(zip(g["side"], g["group"], g["position"])) == [
        ("only_a", "all", 5), ("only_a", "all", 0), ("only_a", "all", 7),
        ("only_b", "all", 6), ("only_b", "all", 4), ("only_b", "all", 9)]


def test_selection_refuses_misaligned_inputs():
    labels, pa, pb, ca, cb = _case()
    with pytest.raises(DivergentError, match="length"):
        select_gallery(labels, pa[:-1], pb, ca, cb, NAMES)
    with pytest.raises(DivergentError, match="per_group"):
        select_gallery(labels, pa, pb, ca, cb, NAMES, per_group=0)


def test_confusion_difference_by_hand_and_most_different_classes():
    labels, pa, pb, _, _ = _case()
    c = confusion_difference(labels, pa, pb, NAMES)
    assert len(c) == 16 and (c["n_classes"] == 4).all()
    cell = c.set_index(["true_class", "pred_class"])
    # true cat: A says cat x2, dog x1; B says dog, cat, ship
    assert cell.loc[("cat", "cat"), ["count_a", "count_b", "diff"]].tolist() == [2, 1, 1]
    assert cell.loc[("cat", "ship"), "diff"] == -1 and cell.loc[("ship", "cat"), "diff"] == 1 - 1
    assert int(c["count_a"].sum()) == int(c["count_b"].sum()) == 10
    # 30 classes; B confuses class 17 with 3 (4 examples) and two of class 25 with 24: the scores
    # (|differences| over a class's row and column) are 17: 8, 3: 4, 25: 4, 24: 2, the rest 0
    k = 30
    y = np.repeat(np.arange(k), 4)
    a, b = y.copy(), y.copy()
    b[y == 17] = 3
    b[np.flatnonzero(y == 25)[:2]] = 24
    c = confusion_difference(y, a, b, [f"c{i}" for i in range(k)], max_classes=3)
    assert sorted(set(c["true_index"])) == sorted(set(c["pred_index"])) == [3, 17, 25]   # 3 before 25: tie by index
    assert len(c) == 9 and (c["n_classes"] == 30).all()
    assert c.set_index(["true_index", "pred_index"]).loc[(17, 3), "diff"] == -4
    assert len(confusion_difference(y, a, b, [f"c{i}" for i in range(k)])) == 400   # 20 of 30 by default


# ------------------------------------------------------------------ the unit on small real stores

def _centroid_logits(X_tr, y_tr, X, scale):
    """A nearest-class-mean classifier fitted on (X_tr, y_tr): logits -|x - mean_c|^2 / scale."""
    mu = np.stack([X_tr[y_tr == c].mean(0) for c in range(10)])
    d = (X ** 2).sum(1)[:, None] - 2 * X @ mu.T + (mu ** 2).sum(1)[None]
    return (-d / scale).astype(np.float32)


def _run_unit(tmp_path, dataset, test_ds, logits: dict, per_group=3, groups="builtin"):
    """A store with the test split (ids and labels of `test_ds`) and the given models' logits
    (temperature 1, fitted on holdout), a pairs table, and the gallery unit run on them."""
    from divergent.store import Store
    from divergent.study import gallery_stages as G
    from divergent.study.executors import UnitContext

    st = Store.create(tmp_path / "store")
    names = list(logits)
    with st.writer() as w:
        w.add_split("test", labels=test_ds.labels, class_names=list(test_ds.class_names), ids=test_ds.ids)
        for m, z in logits.items():
            w.put(m, "test", logits=z)
            w.set_temperature(m, 1.0, fit_on="holdout")
    acc = {m: float((z.argmax(1) == test_ds.labels).mean()) for m, z in logits.items()}
    pairs = pd.DataFrame({"model_a": names[0], "model_b": names[1:], "category": "architecture"})
    pairs.to_parquet(tmp_path / "pairs.parquet")
    work = tmp_path / "work"
    work.mkdir()
    ctx = UnitContext(unit="gallery", out=tmp_path, store=tmp_path / "store", work=work,
                      deps={"pairs": {"pairs": str(tmp_path / "pairs.parquet"), "base": names[0], "accuracy": acc}})
    return G.gallery_unit(ctx, dataset=dataset, options={}, split="test", groups=groups, per_group=per_group,
                          max_classes=20)


def _check_thumbnails(tmp_path, res, test_ds):
    from PIL import Image

    g = pd.read_parquet(res["gallery"])
    assert res["note"] == "" and len(g) and (g["thumbnail"] != "").all()
    where = {str(i): k for k, i in enumerate(test_ds.ids)}
    for r in g.itertuples():
        with Image.open(tmp_path / r.thumbnail) as im:
            assert im.format == "PNG"
            px = np.asarray(im)
        assert np.array_equal(px, test_ds.raw(where[r.id])), r.id     # the dataset's own pixels, for that id
    return g


def test_gallery_unit_on_fashion_mnist(tmp_path, fmnist_dir):
    from divergent.data import open_dataset

    train = open_dataset(f"fashion-mnist:{fmnist_dir}", "train").subset(np.arange(0, 60000, 60))
    test = open_dataset(f"fashion-mnist:{fmnist_dir}", "test").subset(np.arange(0, 5000, 10))
    Xtr = train.array().reshape(len(train), -1) / 255.0
    X = test.array().reshape(len(test), -1) / 255.0
    logits = {"means-pixels": _centroid_logits(Xtr, train.labels, X, 4.0),
              "means-coarse": _centroid_logits(Xtr[:, ::7], train.labels, X[:, ::7], 1.0)}
    res = _run_unit(tmp_path, f"fashion-mnist:{fmnist_dir}", test, logits)
    g = _check_thumbnails(tmp_path, res, test)
    # both sides, by the built-in groups (garments, footwear, bags), at most 3 per side and group
    assert set(g["side"]) == {"only_a", "only_b"} and set(g["group"]) <= {"garments", "footwear", "bags"}
    assert g.groupby(["side", "group"]).size().max() <= 3
    conf = pd.read_parquet(res["confusion_diff"])
    assert len(conf) == 100 and int(conf["count_a"].sum()) == len(test)


def test_gallery_unit_notes_a_dataset_it_cannot_read(tmp_path, fmnist_dir):
    from divergent.data import open_dataset

    test = open_dataset(f"fashion-mnist:{fmnist_dir}", "test").subset(np.arange(0, 5000, 25))
    rng = np.random.default_rng(0)
    logits = {m: rng.normal(size=(len(test), 10)).astype(np.float32) for m in ("a", "b")}
    res = _run_unit(tmp_path, f"npz:{tmp_path / 'gone.npz'}", test, logits)
    g = pd.read_parquet(res["gallery"])
    assert len(g) and (g["thumbnail"] == "").all() and "could not be read" in res["note"]
    assert not (tmp_path / "work" / "thumbs").exists()


@pytest.mark.slow
def test_gallery_unit_on_cifar10_jpeg_with_shared_resnets(tmp_path, shared_dir):
    """Two pretrained CIFAR-10 ResNets from ../shared on 400 JPEG test images; thumbnails equal the
    decoded JPEG pixels of those ids."""
    from divergent.data import open_dataset
    from divergent.extract import extract
    from divergent.store import Store

    tar = shared_dir / "data" / "cifar10-jpeg"
    if not tar.is_dir():
        pytest.skip("../shared/data/cifar10-jpeg is absent")
    test = open_dataset("cifar10-jpeg", "test").subset(np.arange(0, 5000, 12))
    priv = tmp_path / "priv"
    logits = {}
    for spec in ("cifar10/resnet20", "cifar10/resnet56"):
        res = extract(priv, spec, test, "test", head="logits", progress=False, workers=0)
        logits[res["model"]] = np.asarray(Store.open(priv).array(res["model"], "test", "logits"), dtype=np.float32)
    out = tmp_path / "study"
    out.mkdir()
    res = _run_unit(out, "cifar10-jpeg", test, logits)
    g = _check_thumbnails(out, res, test)
    assert set(g["group"]) <= {"nature", "anthropogenic"}


def test_images_by_id_reads_array_idx_and_folder_sources(tmp_path, fmnist_dir):
    """One function for every reader: the examples' own pixels, in the order asked; unknown ids refused."""
    from PIL import Image

    from divergent.data import images_by_id, open_dataset

    for d in ("cat", "dog"):
        (tmp_path / "imgs" / d).mkdir(parents=True)
        for k in range(3):
            px = np.full((5 + k, 7, 3), 40 * k + (d == "dog") * 100, np.uint8)
            Image.fromarray(px).save(tmp_path / "imgs" / d / f"{k}.png")
    for source in ("digits", f"fashion-mnist:{fmnist_dir}", f"folder:{tmp_path / 'imgs'}"):
        ds = open_dataset(source, "all")
        pick = [len(ds) - 1, 0, len(ds) // 2]
        got = images_by_id(source, [ds.ids[i] for i in pick])
        assert all(np.array_equal(g, ds.raw(i)) for g, i in zip(got, pick)), source
        with pytest.raises(DivergentError, match="not in"):
            images_by_id(source, [ds.ids[0], "no/such/id"])


def test_the_study_plans_one_gallery_unit_sized_by_the_config():
    from divergent.study import config as C
    from divergent.study import plan

    g = {u.id: u for u in plan(C.load("fashion-mnist-quick"))}
    assert g["gallery"].deps == ("pairs",) and g["gallery"].params["per_group"] == 6
    assert "gallery" in g["report"].deps and "gallery" in g["report"].optional
    g = {u.id: u for u in plan(C.load("fashion-mnist-quick", {"analysis.gallery": 0}))}
    assert "gallery" not in g and "gallery" not in g["report"].deps
    with pytest.raises(DivergentError, match="analysis.gallery"):
        C.load("fashion-mnist-quick", {"analysis.gallery": -1})
