"""Shifted splits (divergent.data.shift): shift specs, deterministic corruptions of real images,
the 28 px gray path, the per-split cache, and pre-generated CIFAR-10-C / ImageNet-C files."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from divergent.data import open_dataset
from divergent.data import shift as S
from divergent.errors import DivergentError

ic = pytest.importorskip("imagecorruptions", reason="imagecorruptions-imaug is not installed (make install adds it)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache home: generated splits go to <tmp>/divergent/shifted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    S.GENERATED.clear()
    return tmp_path / "cache" / "divergent" / "shifted"


@pytest.fixture(scope="module")
def cifar(shared_dir):
    """40 real CIFAR-10 JPEG test images (32 px RGB)."""
    p = shared_dir / "data" / "cifar10-jpeg"
    if not (p / "test.tar.gz").is_file():
        pytest.skip(f"{p}/test.tar.gz is absent")
    return open_dataset(str(p), "test").subset(np.arange(0, 4000, 100))


@pytest.fixture(scope="module")
def fmnist(fmnist_dir):
    """40 real Fashion-MNIST test images (28 px gray)."""
    return open_dataset(f"fashion-mnist:{fmnist_dir}", "test").subset(np.arange(40))


# ----------------------------------------------------------------------------- specs
def test_parse_shifts_names_lists_and_patterns():
    assert S.parse_shifts("gaussian_noise:3") == [S.Shift("gaussian_noise", 3)]
    assert S.parse_shifts("gaussian_noise:3", seed=7) == [S.Shift("gaussian_noise", 3, 7)]
    assert S.parse_shifts("gaussian_noise:3,shot_noise:1-2") == [
        S.Shift("gaussian_noise", 3), S.Shift("shot_noise", 1), S.Shift("shot_noise", 2)]
    assert S.parse_shifts(["contrast:1", "contrast:1", "fog:5"]) == [S.Shift("contrast", 1), S.Shift("fog", 5)]
    noise = S.parse_shifts("*noise*:1,5")
    assert {s.corruption for s in noise} == {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"}
    assert {s.severity for s in noise} == {1, 5} and len(noise) == 8
    assert [s.corruption for s in S.parse_shifts("all:3")] == list(S.CORRUPTIONS) and len(S.CORRUPTIONS) == 19
    assert len(S.parse_shifts("common:1-5")) == 75
    assert S.parse_shifts("blur:2") == [S.Shift(c, 2) for c in ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")]
    assert S.parse_shifts("gaussian_noise-3") == [S.Shift("gaussian_noise", 3)]  # a split's suffix
    assert set(S.CORRUPTIONS) == set(ic.get_corruption_names("all"))  # the library's own list


@pytest.mark.parametrize("spec, words", [
    ("gausian_noise:3", "did you mean 'gaussian_noise'"),
    ("gaussian_noise", "gives no severity"),
    ("gaussian_noise:6", "outside 1-5"),
    ("gaussian_noise:x", "not a number"),
    ("*xyz*:1", "no corruption matches"),
    ("", "no shift given"),
])
def test_parse_shifts_refuses_with_a_fix(spec, words):
    with pytest.raises(DivergentError) as e:
        S.parse_shifts(spec)
    assert words in str(e.value)


def test_split_names_round_trip():
    sh = S.Shift("glass_blur", 2, seed=4)
    assert sh.split_name("test") == "test~glass_blur-2"
    assert S.parse_split_name("test~glass_blur-2") == ("test", S.Shift("glass_blur", 2))
    assert S.parse_split_name("holdout") == ("holdout", None)
    with pytest.raises(DivergentError, match="not a shifted split name"):
        S.parse_split_name("test~blurry-2")
    with pytest.raises(DivergentError, match="already shifted"):
        sh.split_name("test~fog-1")
    with pytest.raises(DivergentError, match="1-5"):
        S.Shift("fog", 0)


# ----------------------------------------------------------------------------- one image
@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "motion_blur", "frost"])
def test_rgb_corruption_is_the_librarys_and_deterministic(cifar, name):
    """At >= 32 px our call is exactly imagecorruptions.corrupt() under the same seeding; it does
    not depend on numpy's global state, and leaves it as it was."""
    sh = S.Shift(name, 3, seed=1)
    img, eid = cifar.raw(0), str(cifar.ids[0])
    np.random.seed(123)
    state = np.random.get_state()
    a = S.corrupt_image(img, sh, eid)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global generator is restored
    np.random.random(1000)
    b = S.corrupt_image(img, sh, eid)
    assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, img)
    seed = S.image_seed(eid, sh)
    np.random.seed(seed)
    kw = {"seed": seed} if name in S.SEEDED else {}
    assert np.array_equal(a, ic.corrupt(img, severity=3, corruption_name=name, **kw))


def test_seed_id_and_severity_change_the_pixels(cifar):
    img, eid = cifar.raw(1), str(cifar.ids[1])
    base = S.corrupt_image(img, S.Shift("gaussian_noise", 2), eid)
    assert not np.array_equal(base, S.corrupt_image(img, S.Shift("gaussian_noise", 2, seed=1), eid))
    assert not np.array_equal(base, S.corrupt_image(img, S.Shift("gaussian_noise", 2), eid + "x"))
    assert not np.array_equal(base, S.corrupt_image(img, S.Shift("gaussian_noise", 3), eid))


@pytest.mark.slow
def test_glass_blur_seeds_numba(cifar):
    """glass_blur shuffles pixels in numba with its own generator: the seed= makes it repeatable.
    Slow: its first call compiles (numba JIT, 5-20 s)."""
    sh = S.Shift("glass_blur", 1)
    a = S.corrupt_image(cifar.raw(2), sh, str(cifar.ids[2]))
    b = S.corrupt_image(cifar.raw(2), sh, str(cifar.ids[2]))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, S.corrupt_image(cifar.raw(2), S.Shift("glass_blur", 1, seed=9), str(cifar.ids[2])))


def test_28px_gray_fashion_mnist(fmnist):
    """corrupt() refuses 28 px; the functions work on the 3-channel stack, turned back to gray."""
    from PIL import Image

    img, eid = fmnist.raw(0), str(fmnist.ids[0])
    assert img.shape == (28, 28)
    with pytest.raises(AttributeError, match="32"):
        ic.corrupt(img, severity=2, corruption_name="motion_blur")
    for name in ("motion_blur", "gaussian_noise", "frost", "zoom_blur"):
        sh = S.Shift(name, 2)
        out = S.corrupt_image(img, sh, eid)
        assert out.shape == (28, 28) and out.dtype == np.uint8 and not np.array_equal(out, img)
        np.random.seed(S.image_seed(eid, sh))
        rgb = np.uint8(ic.corruption_dict[name](Image.fromarray(np.stack([img] * 3, -1)), 2))
        assert np.array_equal(out, np.asarray(Image.fromarray(rgb).convert("L")))


_WORKER = """
import sys, numpy as np
from divergent.data import open_dataset
from divergent.data import shift as S
ds = open_dataset(sys.argv[1], "test").subset(np.arange(0, 4000, 100))
out = [S.corrupt_image(ds.raw(i), S.Shift(n, 4), str(ds.ids[i])) for n in ("shot_noise", "impulse_noise")
       for i in reversed(range(5))]
np.save(sys.argv[2], np.stack(out))
"""


def test_same_pixels_in_another_process_and_order(cifar, shared_dir, tmp_path):
    """Determinism across runs and workers: a fresh process corrupting the images in another
    order gives the same pixels."""
    out = tmp_path / "worker.npy"
    subprocess.run([sys.executable, "-c", _WORKER, str(shared_dir / "data" / "cifar10-jpeg"), str(out)], check=True)
    here = [S.corrupt_image(cifar.raw(i), S.Shift(n, 4), str(cifar.ids[i])) for n in ("shot_noise", "impulse_noise")
            for i in reversed(range(5))]
    assert np.array_equal(np.load(out), np.stack(here))


# ----------------------------------------------------------------------------- a split, cached
def test_shifted_split_is_generated_once_and_cached(cifar, cache):
    sh = S.Shift("gaussian_noise", 3)
    a = S.shifted(cifar, sh)
    assert len(S.GENERATED) == len(cifar)
    assert a.split == "test~gaussian_noise-3" and np.array_equal(a.ids, cifar.ids) and np.array_equal(a.labels, cifar.labels)
    assert a.meta["shift"] == {"corruption": "gaussian_noise", "severity": 3, "seed": 0,
                               "generator": "imagecorruptions-imaug", "version": S.library_version()}
    entries = list(cache.glob("*/*"))
    assert len(entries) == 1 and (entries[0] / "pixels.u8").is_file()
    b = S.shifted(cifar, sh)  # another model, another run: read from the cache
    assert len(S.GENERATED) == len(cifar)
    want = np.stack([S.corrupt_image(cifar.raw(i), sh, str(cifar.ids[i])) for i in range(len(cifar))])
    assert np.array_equal(a.array(), want) and np.array_equal(b.array(), want)
    assert np.array_equal(b.raw(7), want[7]) and np.array_equal(np.asarray(b.image(7)), want[7])
    import pickle

    c = pickle.loads(pickle.dumps(b))  # what a DataLoader worker gets: the cache's path, not its pixels
    assert len(pickle.dumps(b._reader)) < 1000 and np.array_equal(c.raw(3), want[3])
    S.shifted(cifar, S.Shift("gaussian_noise", 3, seed=1))  # another seed: another entry
    assert len(S.GENERATED) == 2 * len(cifar) and len(list(cache.glob("*/*"))) == 2
    sub = S.shifted(cifar.subset(np.arange(10)), sh)  # other ids: another entry, same pixels per id
    assert np.array_equal(sub.array(), want[:10])


def test_cache_of_images_of_several_sizes(cifar, cache, tmp_path):
    """Native sizes that differ (ImageNet): each image keeps its own shape through the cache."""
    from PIL import Image

    for k in range(6):
        im = Image.fromarray(cifar.raw(k))
        if k % 2:
            im = im.resize((48, 40))  # a real image at another size
        p = tmp_path / "tree" / cifar.class_names[int(cifar.labels[k])] / f"{k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p)
    ds = open_dataset(str(tmp_path / "tree"), "all")
    s = S.shifted(ds, "zoom_blur:2")
    assert s.array() is None and {s.raw(i).shape for i in range(6)} == {(32, 32, 3), (40, 48, 3)}
    for i in range(6):
        assert np.array_equal(s.raw(i), S.corrupt_image(ds.raw(i), S.Shift("zoom_blur", 2), str(ds.ids[i])))
    assert len(S.GENERATED) == 6


def test_cache_of_28px_gray_split(fmnist, cache):
    s = S.shifted(fmnist, "contrast:2")
    assert s.array().shape == (40, 28, 28) and s.array().dtype == np.uint8
    assert s.split == "test~contrast-2"
    S.shifted(fmnist, "contrast:2")
    assert len(S.GENERATED) == 40


def test_missing_library_says_how_to_install(monkeypatch, cifar):
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)
    with pytest.raises(DivergentError) as e:
        S.corrupt_image(cifar.raw(0), S.Shift("fog", 1), "x")
    assert "pip install --no-deps imagecorruptions-imaug==1.1.5" in e.value.fix


# ----------------------------------------------------------------------------- pre-generated files
def test_cifar10_c_files_read_as_a_shifted_split(cifar, tmp_path):
    """CIFAR-10-C's layout (<corruption>.npy = 5 severities x N in the official test order,
    labels.npy) written small from real images; read against JPEG-copy ids by class rank."""
    per = 4  # the first 4 test images of each class, in an interleaved "official" order
    classes = list(cifar.class_names)
    full = open_dataset(cifar.root, "all")
    pick = {f"test/{c}/{k:04d}.jpg": None for k in range(per) for c in classes}
    where = {str(i): j for j, i in enumerate(full.ids)}
    order = list(pick)  # k-major: airplane/0000, automobile/0000, ...
    imgs = np.stack([full.raw(where[i]) for i in order])
    labels = np.array([classes.index(i.split("/")[1]) for i in order])
    c = np.concatenate([np.clip(imgs.astype(int) + 10 * s, 0, 255).astype(np.uint8) for s in range(1, 6)])
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    np.save(root / "fog.npy", c)
    np.save(root / "labels.npy", np.tile(labels, 5))
    ds = full.subset([where[i] for i in sorted(order)], split="test")
    got = S.pregenerated(ds, S.Shift("fog", 3), root)
    assert got.split == "test~fog-3" and np.array_equal(got.ids, ds.ids) and np.array_equal(got.labels, ds.labels)
    for i in range(len(ds)):
        assert np.array_equal(got.raw(i), c[2 * len(order) + order.index(str(ds.ids[i]))])
    assert got.meta["shift"]["generator"] == "pregenerated" and got.meta["shift"]["format"] == "cifar10-c"
    with pytest.raises(DivergentError, match="has no gaussian_noise.npy"):
        S.pregenerated(ds, S.Shift("gaussian_noise", 3), root)
    far = full.subset([where["test/cat/0009.jpg"]], split="test")
    with pytest.raises(DivergentError, match="no image in the CIFAR-10-C files"):
        S.pregenerated(far, S.Shift("fog", 1), root)
    # the python archive's ids ('test/NNNNN', official positions), labels checked against labels.npy
    from divergent.data import ArrayReader, ImageDataset

    py = ImageDataset(name="cifar10", split="test", source_dataset="cifar10", ids=[f"test/{p:05d}" for p in (5, 0, 17)],
                      labels=labels[[5, 0, 17]], class_names=classes, reader=ArrayReader(imgs[[5, 0, 17]]))
    got = S.pregenerated(py, "fog:5", root)
    assert np.array_equal(got.array(), c[4 * len(order) + np.array([5, 0, 17])])
    np.save(root / "labels.npy", np.tile(np.roll(labels, 1), 5))
    with pytest.raises(DivergentError, match="the label of 'test/00005'"):
        S.pregenerated(py, S.Shift("fog", 1), root)


def test_imagenet_c_folders_read_as_a_shifted_split(cifar_members, tmp_path):
    """ImageNet-C's layout (<corruption>/<severity>/<wnid>/<file>.JPEG) beside a validation folder
    (<wnid>/<file>.JPEG), both written from real JPEG bytes; matched by id."""
    wnids = ["n01440764", "n01443537"]
    members = sorted(cifar_members)[:12]
    base, c_root = tmp_path / "val", tmp_path / "ImageNet-C"
    for k, name in enumerate(members):
        rel = f"{wnids[k % 2]}/ILSVRC2012_val_{k:08d}.JPEG"
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(cifar_members[name])
        other = cifar_members[members[(k + 1) % len(members)]]  # another real image stands for the corrupted one
        (c_root / "snow" / "2" / rel).parent.mkdir(parents=True, exist_ok=True)
        (c_root / "snow" / "2" / rel).write_bytes(other)
    ds = open_dataset(str(base), "all")
    got = S.pregenerated(ds, "snow:2", c_root)
    assert got.split == "all~snow-2" and np.array_equal(got.ids, ds.ids)
    from PIL import Image

    for i in range(len(ds)):
        want = np.asarray(Image.open(c_root / "snow" / "2" / str(ds.ids[i])).convert("RGB"))
        assert np.array_equal(got.raw(i), want)
    assert S.pregenerated_format(c_root) == "imagenet-c"
    (c_root / "snow" / "2" / str(ds.ids[3])).unlink()
    with pytest.raises(DivergentError, match="lacks 1 of the split's 12 images"):
        S.pregenerated(ds, "snow:2", c_root)
    with pytest.raises(DivergentError, match="neither CIFAR-10-C"):
        S.pregenerated(ds, "snow:2", base)
