"""Pascal VOC layout: a small VOC tree built from real CIFAR-10 JPEGs; positives, negatives, difficult."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.data import describe, open_dataset
from divergent.errors import DivergentError

CLASSES = ("cat", "dog", "ship")


def _flags(k: int, own: int) -> list[int]:
    """Ground truth of fixture image k whose CIFAR class is CLASSES[own]: own class positive
    (difficult for every 5th image), 'ship' also present on every 2nd image, else negative."""
    f = [-1, -1, -1]
    f[own] = 0 if k % 5 == 0 else 1
    if k % 2 == 0 and own != 2:
        f[2] = 1
    return f


@pytest.fixture
def voc_root(tmp_path, cifar_members):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    images = [(n, b) for n, b in sorted(cifar_members.items()) if n.split("/")[1] in CLASSES]
    truth = {}
    for k, (name, data) in enumerate(images):
        vid = f"{k + 1:06d}"
        (root / "JPEGImages" / f"{vid}.jpg").write_bytes(data)
        truth[vid] = _flags(k, CLASSES.index(name.split("/")[1]))
    ids = sorted(truth)
    sets = {"train": ids[0::3], "val": ids[1::3], "test": ids[2::3]}
    sets["trainval"] = sorted(sets["train"] + sets["val"])
    main = root / "ImageSets" / "Main"
    for s, members in sets.items():
        (main / f"{s}.txt").write_text("".join(f"{i}\n" for i in members))
        for c_i, c in enumerate(CLASSES):
            (main / f"{c}_{s}.txt").write_text("".join(f"{i} {truth[i][c_i]:2d}\n" for i in members))
    return tmp_path / "VOCdevkit", truth, sets


def test_voc_parses_positives_negatives_difficult(voc_root):
    devkit, truth, sets = voc_root
    for split, image_set in (("train", "train"), ("holdout", "val"), ("test", "test"), ("trainval", "trainval")):
        ds = open_dataset(str(devkit), split)  # a VOCdevkit holding one VOC20xx folder is found
        assert ds.multilabel and ds.class_names == list(CLASSES)
        assert ds.ids.tolist() == sets[image_set]
        want = np.array([truth[i] for i in ds.ids])
        assert np.array_equal(ds.labels, (want == 1).astype(np.uint8))
        assert np.array_equal(ds.difficult, want == 0)
        assert ds.labels.dtype == np.uint8 and ds.labels.shape == (len(ds), 3)
    ds = open_dataset(f"voc:{devkit / 'VOC2007'}", "train")
    assert ds.name == "voc2007" and ds.source_dataset == "voc2007"
    assert ds.difficult.sum() > 0 and (ds.labels.sum(axis=1) >= 2).any()  # several objects per image
    assert ds.image(0).mode == "RGB" and ds.where(0).endswith("JPEGImages/000001.jpg")
    d = describe(ds)
    assert d["counts"]["ship"] == int(ds.labels[:, 2].sum()) and "difficult" in d
    sub = ds.subset([2, 0])
    assert sub.ids.tolist() == [ds.ids[2], ds.ids[0]] and np.array_equal(sub.difficult, ds.difficult[[2, 0]])
    every = open_dataset(str(devkit), "all")
    assert len(every) == sum(len(v) for k, v in sets.items() if k != "trainval")


def test_voc_bad_input(voc_root):
    devkit, truth, sets = voc_root
    root = devkit / "VOC2007"
    (root / "ImageSets" / "Main" / "dog_test.txt").unlink()
    with pytest.raises(DivergentError, match="dog_test.txt"):
        open_dataset(str(root), "test", classes=list(CLASSES))
    (root / "JPEGImages" / f"{sets['val'][0]}.jpg").unlink()
    with pytest.raises(DivergentError, match="has no file"):
        open_dataset(str(root), "holdout")
    bad = root / "ImageSets" / "Main" / "cat_train.txt"
    bad.write_text(bad.read_text() + "000099 2\n")
    with pytest.raises(DivergentError, match="1\\|-1\\|0"):
        open_dataset(str(root), "train")
