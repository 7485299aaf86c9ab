"""Array sources: digits, Fashion-MNIST mosaics, .npz files, torchvision folders; split rules."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from divergent.data import describe, open_dataset, stratified_thirds
from divergent.data.splitting import official_plan
from divergent.errors import DivergentError


def test_digits_thirds():
    parts = {s: open_dataset("digits", s) for s in ("train", "holdout", "test")}
    every = open_dataset("digits", "all")
    assert len(every) == 1797 and every.ids[0] == "digits/0000" and every.ids[-1] == "digits/1796"
    assert sum(len(p) for p in parts.values()) == 1797
    ids = np.concatenate([p.ids for p in parts.values()])
    assert len(set(ids.tolist())) == 1797
    assert len(parts["holdout"]) == len(parts["test"]) == 596 and len(parts["train"]) == 605
    # stratified: each class split floor(n/3) / floor(n/3) / rest
    n_c = np.bincount(every.labels)
    assert np.array_equal(np.bincount(parts["holdout"].labels), n_c // 3)
    assert np.array_equal(np.bincount(parts["train"].labels), n_c - 2 * (n_c // 3))
    raw = every.raw(0)
    assert raw.dtype == np.uint8 and raw.shape == (8, 8) and every.array().max() == 255 and every.image(0).mode == "L"
    from sklearn.datasets import load_digits

    d = load_digits()
    assert np.array_equal(every.array(), np.rint(d.images * 255 / 16).astype(np.uint8))
    assert np.array_equal(every.labels, d.target)
    tr, _, _ = stratified_thirds(every.labels, seed=0)
    assert np.array_equal(parts["train"].ids, every.ids[tr])
    assert not np.array_equal(open_dataset("digits", "train", seed=1).ids, parts["train"].ids)


def test_digit_mosaics_deterministic_multilabel():
    a = open_dataset("digits-mosaic", "test")
    b = open_dataset("digits-mosaic", "test")
    base = open_dataset("digits", "test")
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels) and np.array_equal(a.array(), b.array())
    assert len(a) == len(base) and a.multilabel and a.labels.shape == (len(a), 10)
    assert a.raw(0).shape == (16, 16) and a.ids[0] == "mosaic/test/00000"
    # the label is exactly the union of the four tiles' digits; tiles are the base images
    lookup = {i: k for k, i in enumerate(base.ids)}
    for k in (0, 7, len(a) - 1):
        tiles = [lookup[i] for i in a.parts[k]]
        want = np.zeros(10, np.uint8)
        want[base.labels[tiles]] = 1
        assert np.array_equal(a.labels[k], want)
        img = a.raw(k)
        assert np.array_equal(img[:8, :8], base.raw(tiles[0])) and np.array_equal(img[:8, 8:], base.raw(tiles[1]))
        assert np.array_equal(img[8:, :8], base.raw(tiles[2])) and np.array_equal(img[8:, 8:], base.raw(tiles[3]))
    # each base image appears once per tile position; several objects per image on average
    for t in range(4):
        assert sorted(a.parts[:, t].tolist()) == sorted(base.ids.tolist())
    assert describe(a)["labels_per_image"] > 3.0
    # train/holdout/test mosaics share no base image
    tr = open_dataset("digits-mosaic", "train")
    assert not set(tr.parts.ravel().tolist()) & set(a.parts.ravel().tolist())
    more = open_dataset("digits-mosaic", "test", n=1000, grid=3)
    assert len(more) == 1000 and more.raw(0).shape == (24, 24) and more.parts.shape == (1000, 9)


def test_fashion_mnist_mosaics(fmnist_dir):
    m = open_dataset("fashion-mnist-mosaic", "holdout")
    m2 = open_dataset(f"fashion-mnist-mosaic:{fmnist_dir}", "holdout")
    assert len(m) == 5000 and np.array_equal(m.labels, m2.labels) and np.array_equal(m.parts, m2.parts)
    assert m.class_names[9] == "Ankle boot" and m.source_dataset == "fashion-mnist"
    assert m.raw(0).shape == (56, 56) and m.array().shape == (5000, 56, 56)
    assert all(p.startswith("t10k/") for p in m.parts[:3].ravel())


def test_npz_source(tmp_path, fmnist_dir):
    off = open_dataset("fashion-mnist", "official-test").subset(np.arange(300))
    images, labels = off.array(), off.labels
    p = tmp_path / "small.npz"
    np.savez(p, images=images, labels=labels, class_names=np.array(off.class_names))
    parts = [open_dataset(str(p), s) for s in ("train", "holdout", "test")]
    assert sum(len(x) for x in parts) == 300 and parts[0].class_names == off.class_names
    assert parts[0].ids[0].startswith("small/")
    k = int(parts[1].ids[0].split("/")[1])
    assert np.array_equal(parts[1].raw(0), images[k]) and parts[1].labels[0] == labels[k]
    tags = np.where(np.arange(300) < 200, "train", "test")
    q = tmp_path / "tagged.npz"
    np.savez(q, images=images, labels=labels, ids=off.ids, splits=tags)
    tr, ho, te = (open_dataset(f"npz:{q}", s) for s in ("train", "holdout", "test"))
    assert len(tr) == 200 and len(ho) + len(te) == 100 and tr.ids[0] == "t10k/00000"
    ml = tmp_path / "ml.npz"
    np.savez(ml, images=images[:30], labels=(np.arange(30)[:, None] % np.array([2, 3]) == 0).astype(np.uint8))
    d = open_dataset(str(ml), "all")
    assert d.multilabel and d.labels.shape == (30, 2)
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=images)
    with pytest.raises(DivergentError, match="no 'images'"):
        open_dataset(str(bad), "all")


def test_torchvision_bad_names(tmp_path):
    with pytest.raises(DivergentError, match="did you mean 'CIFAR10'"):
        open_dataset(f"torchvision:CIFAR1O@{tmp_path}", "test")
    with pytest.raises(DivergentError, match="CIFAR10@"):
        open_dataset("torchvision:CIFAR10", "test")


@pytest.mark.slow  # importing torchvision alone takes 10-20 s on the shared 2-core machine
def test_torchvision_on_disk(tmp_path, fmnist_dir):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fmnist_dir.glob("*-ubyte.gz"):
        with gzip.open(f) as src, open(raw / f.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    tv = open_dataset(f"torchvision:FashionMNIST@{tmp_path}", "test")
    ref = open_dataset("fashion-mnist", "test")
    assert np.array_equal(tv.ids, ref.ids) and np.array_equal(tv.labels, ref.labels)
    assert np.array_equal(tv.raw(10), ref.raw(10)) and tv.class_names == ref.class_names and not tv.decodes
    with pytest.raises(DivergentError, match="download=True"):
        open_dataset(f"torchvision:CIFAR10@{tmp_path}", "test")


def test_official_plan():
    assert official_plan("holdout", ("train", "test")) == [("test", "holdout")]
    assert official_plan("test", ("train", "val", "test")) == [("test", None)]
    assert official_plan("holdout", ("train", "val", "test")) == [("val", None)]
    assert official_plan("holdout", ("train", "val")) == [("val", "holdout")]
    assert official_plan("all", ("test", "train")) == [("train", None), ("test", None)]
    assert official_plan("train", ("test",)) == []
