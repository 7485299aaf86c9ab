"""Readers on the real assets: the CIFAR-10 JPEG archives in ../shared and Fashion-MNIST IDX files."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from divergent.data import describe, open_dataset, stratified_halves
from divergent.errors import DivergentError

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar_test_archive_official(cifar_test_tar):
    ds = open_dataset(str(cifar_test_tar), "official-test")
    assert len(ds) == 10_000
    assert ds.class_names == CIFAR_CLASSES
    assert ds.source_dataset == "cifar10" and ds.name == "cifar10-jpeg"
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    assert len(set(ds.ids.tolist())) == 10_000
    assert list(ds.ids) == sorted(ds.ids)
    assert ds.ids[0] == "test/airplane/0000.jpg" and ds.ids[-1] == "test/truck/0999.jpg"
    # every id is a path test/<class>/<file> whose folder matches its label
    folders = np.array([i.split("/")[1] for i in ds.ids])
    assert (folders == np.array(CIFAR_CLASSES)[ds.labels]).all()
    # 1,000 images per class in sorted path order: position 1234 is the 235th automobile
    assert ds.ids[1234] == "test/automobile/0234.jpg" and ds.labels[1234] == 1
    im = ds.image(1234)
    assert im.mode == "RGB" and im.size == (32, 32)
    raw = ds.raw(1234)
    assert raw.dtype == np.uint8 and raw.shape == (32, 32, 3)
    # the pixels are that archive member decoded by PIL directly (tarfile, not the reader)
    with tarfile.open(cifar_test_tar) as tf:
        data = tf.extractfile("test/automobile/0234.jpg").read()
    with Image.open(io.BytesIO(data)) as direct:
        want = np.asarray(direct.convert("RGB"))
    assert np.array_equal(raw, want) and np.array_equal(np.asarray(im), want)
    assert ds.encoded(1234) == data
    assert ds.encoded(0)[:2] == b"\xff\xd8" and ds.decodes  # JPEG bytes for extraction-side decoding
    d = describe(ds)
    assert d["n"] == 10_000 and d["counts"]["truck"] == 1000


def test_cifar_holdout_test_halves(shared_dir):
    root = shared_dir / "data" / "cifar10-jpeg"
    full = open_dataset(str(root), "official-test")
    ho = open_dataset(str(root), "holdout")
    te = open_dataset(str(root), "test")
    assert len(ho) == len(te) == 5000
    assert not set(ho.ids.tolist()) & set(te.ids.tolist())
    assert set(ho.ids.tolist()) | set(te.ids.tolist()) == set(full.ids.tolist())
    assert np.bincount(ho.labels).tolist() == [500] * 10
    assert np.bincount(te.labels).tolist() == [500] * 10
    # exactly the conventions' rule on the official test labels in source (sorted path) order
    h, t = stratified_halves(full.labels, seed=0)
    assert np.array_equal(ho.ids, full.ids[h]) and np.array_equal(te.ids, full.ids[t])
    # pixels of a holdout image equal the same id in the full set
    k = int(np.flatnonzero(full.ids == ho.ids[17])[0])
    assert np.array_equal(ho.raw(17), full.raw(k))
    # the named shorthand resolves to the same archives
    assert np.array_equal(open_dataset("cifar10-jpeg", "test").ids, te.ids)


def test_cifar_single_test_archive_has_no_train(cifar_test_tar):
    with pytest.raises(DivergentError, match="train"):
        open_dataset(str(cifar_test_tar), "train")


def test_fashion_mnist_splits(fmnist_dir):
    tr = open_dataset(f"fashion-mnist:{fmnist_dir}", "train")
    off = open_dataset("fashion-mnist", "official-test")
    assert len(tr) == 60_000 and len(off) == 10_000
    assert tr.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                              "Sneaker", "Bag", "Ankle boot"]
    assert tr.source_dataset == "fashion-mnist"
    assert tr.ids[0] == "train/00000" and tr.ids[-1] == "train/59999"
    assert off.ids[0] == "t10k/00000" and off.ids[-1] == "t10k/09999"
    assert tr.labels[0] == 9 and tr.labels[:5].tolist() == [9, 0, 0, 3, 0]  # first example: an ankle boot
    assert off.labels[0] == 9
    assert np.bincount(tr.labels).tolist() == [6000] * 10
    raw = tr.raw(0)
    assert raw.shape == (28, 28) and raw.dtype == np.uint8 and tr.image(0).mode == "L"
    assert tr.array().shape == (60_000, 28, 28)
    ho, te = open_dataset("fashion-mnist", "holdout"), open_dataset("fashion-mnist", "test")
    assert len(ho) == len(te) == 5000 and not set(ho.ids.tolist()) & set(te.ids.tolist())
    h, t = stratified_halves(off.labels)
    assert np.array_equal(ho.ids, off.ids[h]) and np.array_equal(te.ids, off.ids[t])
    assert np.array_equal(te.array(), off.array()[t])
    every = open_dataset("fashion-mnist", "all")
    assert len(every) == 70_000 and every.ids[60_000] == "t10k/00000"
    assert np.array_equal(every.raw(60_000), off.raw(0))
