"""ImageFolder directories and tar archives built from real CIFAR-10 JPEGs: layout, ids, splits, bad input."""
from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from divergent.data import ImageDecodeError, open_dataset
from divergent.data.folder import _fast_ustar, _tarfile_members
from divergent.errors import DivergentError

CLASSES3 = ("cat", "dog", "ship")


def _tree(tmp_path, cifar_members, layout="split", classes=CLASSES3):
    """Write a real-image tree: split layout train/ (files 0000-0003) + test/ (0004-0005) or flat."""
    root = tmp_path / "tree"
    for name, data in cifar_members.items():
        _, cls, fname = name.split("/")
        if cls not in classes:
            continue
        k = int(fname[:4])
        rel = (f"train/{cls}/{fname}" if k < 4 else f"test/{cls}/{fname}") if layout == "split" else f"{cls}/{fname}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_folder_split_layout(tmp_path, cifar_members):
    root = _tree(tmp_path, cifar_members)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.jpg").write_bytes(b"junk")
    tr = open_dataset(str(root), "train")
    assert tr.class_names == list(CLASSES3) and len(tr) == 12
    assert tr.ids[0] == "train/cat/0000.jpg" and list(tr.ids) == sorted(tr.ids)
    assert tr.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # pixels are the file that the id names, decoded by PIL directly (not through the reader)
    assert tr.ids[5] == "train/dog/0001.jpg"
    with Image.open(root / "train" / "dog" / "0001.jpg") as im:
        want = np.asarray(im.convert("RGB"))
    raw = tr.raw(5)
    assert raw.dtype == np.uint8 and raw.shape == (32, 32, 3) and np.array_equal(raw, want)
    assert np.array_equal(np.asarray(tr.image(5)), want)
    assert tr.encoded(0) == cifar_members["test/cat/0000.jpg"]
    off = open_dataset(f"folder:{root}", "official-test")
    assert off.ids.tolist() == [f"test/{c}/{k:04d}.jpg" for c in CLASSES3 for k in (4, 5)]
    ho, te = open_dataset(str(root), "holdout"), open_dataset(str(root), "test")
    assert len(ho) == len(te) == 3 and sorted(ho.ids.tolist() + te.ids.tolist()) == off.ids.tolist()
    assert np.bincount(ho.labels).tolist() == [1, 1, 1]
    assert len(open_dataset(str(root), "all")) == 18


def test_folder_flat_layout_uses_thirds(tmp_path, cifar_members):
    root = _tree(tmp_path, cifar_members, layout="flat")
    parts = {s: open_dataset(str(root), s) for s in ("train", "holdout", "test")}
    assert [len(parts[s]) for s in ("train", "holdout", "test")] == [6, 6, 6]
    ids = [i for p in parts.values() for i in p.ids.tolist()]
    assert len(set(ids)) == 18 and ids[0].count("/") == 1
    with pytest.raises(DivergentError, match="no official test"):
        open_dataset(str(root), "official-test")


def test_classes_file_and_missing_class(tmp_path, cifar_members):
    root = _tree(tmp_path, cifar_members)
    cf = tmp_path / "classes.txt"
    cf.write_text("ship\ncat\ndog\n")
    ds = open_dataset(str(root), "train", classes=str(cf))
    assert ds.class_names == ["ship", "cat", "dog"] and ds.labels[0] == 1
    with pytest.raises(DivergentError, match="not in the classes list"):
        open_dataset(str(root), "train", classes=["cat", "dog"])
    with pytest.raises(DivergentError, match="no images of class 'horse'"):
        open_dataset(str(root), "train", classes=["cat", "dog", "ship", "horse"])
    ok = open_dataset(str(root), "train", classes=["cat", "dog", "ship", "horse"], allow_missing_classes=True)
    assert ok.n_classes == 4


def test_empty_split_and_bad_sources(tmp_path, cifar_members):
    root = _tree(tmp_path, cifar_members)
    only_test = tmp_path / "only"
    (only_test / "test").mkdir(parents=True)
    (root / "test").rename(only_test / "test")
    with pytest.raises(DivergentError, match="split 'train'") as exc:
        open_dataset(str(only_test), "train")
    assert "fix:" in str(exc.value)
    with pytest.raises(DivergentError, match="did you mean 'fashion-mnist'"):
        open_dataset("fashion-mnst", "test")
    with pytest.raises(DivergentError, match="unknown split"):
        open_dataset(str(root), "validate")
    with pytest.raises(DivergentError, match="does not exist"):
        open_dataset(str(tmp_path / "nope" / "x"), "test")
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(DivergentError, match="no image files"):
        open_dataset(str(empty), "all")


def test_corrupt_image_policy(tmp_path, cifar_members):
    root = _tree(tmp_path, cifar_members)
    good = cifar_members["test/dog/0001.jpg"]
    (root / "train" / "dog" / "0001.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (root / "train" / "cat" / "0002.jpg").write_bytes(b"this is not an image")
    ds = open_dataset(str(root), "train")  # lazy: opening works
    k = int(np.flatnonzero(ds.ids == "train/cat/0002.jpg")[0])
    with pytest.raises(ImageDecodeError, match="train/cat/0002.jpg") as exc:
        ds.image(k)
    assert "on_error='skip'" in str(exc.value)
    with pytest.raises(ImageDecodeError):
        open_dataset(str(root), "train", verify=True)
    sk = open_dataset(str(root), "train", on_error="skip")
    assert len(sk) == 10 and {i for i, _ in sk.skipped} == {"train/cat/0002.jpg", "train/dog/0001.jpg"}
    assert "train/cat/0002.jpg" not in sk.ids
    assert all(sk.image(i).size == (32, 32) for i in range(len(sk)))
    with pytest.raises(DivergentError, match="unknown on_error"):
        open_dataset(str(root), "train", on_error="ignore")


def test_tar_with_wrapper_and_pax_fallback(tmp_path, cifar_members, write_tar):
    members = {f"mydata/{n}": b for n, b in cifar_members.items() if n.split("/")[1] in CLASSES3}
    members["mydata/README"] = b"text"
    p = write_tar(tmp_path / "mydata.tar.gz", members)
    ds = open_dataset(str(p), "official-test")
    assert ds.ids[0] == "test/cat/0000.jpg" and ds.class_names == list(CLASSES3) and len(ds) == 18
    assert ds.encoded(0) == cifar_members["test/cat/0000.jpg"]
    assert ds.name == "mydata"
    # a pax archive with a long member name goes through tarfile and gives the same result
    long = {f"mydata/test/cat/{'x' * 120}.jpg": cifar_members["test/cat/0000.jpg"], **members}
    pax = write_tar(tmp_path / "pax.tar", long, fmt=tarfile.PAX_FORMAT, mode="w")
    assert _fast_ustar(pax) is None
    names, blobs, _ = _tarfile_members(pax, "fail")
    assert len(names) == 19
    ds2 = open_dataset(f"tar:{pax}", "official-test")
    assert len(ds2) == 19 and f"test/cat/{'x' * 120}.jpg" in ds2.ids
    # fast path and tarfile agree on a ustar archive
    fast = _fast_ustar(p)
    slow = _tarfile_members(p, "fail")
    assert fast[0] == slow[0] and fast[1] == slow[1]


def test_truncated_archive(tmp_path, cifar_members, write_tar):
    p = write_tar(tmp_path / "t.tar.gz", cifar_members)
    data = p.read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DivergentError, match="cannot read archive"):
        open_dataset(str(bad), "official-test")
    part = open_dataset(str(bad), "official-test", on_error="skip", allow_missing_classes=True)
    assert 0 < len(part) < len(cifar_members) and part.skipped


def test_archive_directory_reads_only_needed_archive(tmp_path, cifar_members, write_tar):
    d = tmp_path / "pair"
    d.mkdir()
    test = {n: b for n, b in cifar_members.items()}
    train = {n.replace("test/", "train/", 1): b for n, b in cifar_members.items()}
    write_tar(d / "test.tar.gz", test)
    (d / "train.tar.gz").write_bytes(b"corrupt, never read for test splits")
    ds = open_dataset(str(d), "test")
    assert len(ds) == 30 and ds.meta["archives"] == [str(d / "test.tar.gz")]
    write_tar(d / "train.tar.gz", train)
    every = open_dataset(str(d), "all")
    assert len(every) == 120 and every.ids[0] == "test/airplane/0000.jpg" and every.ids[-1] == "train/truck/0005.jpg"


def test_pickle_round_trip(cifar_test_tar):
    ds = open_dataset(str(cifar_test_tar), "official-test").subset(np.arange(0, 10_000, 1250))
    # spawned DataLoader workers receive the dataset pickled: the view and its reader survive
    clone = pickle.loads(pickle.dumps(ds.mapped(pixels="raw")))
    assert np.array_equal(clone.dataset.ids, ds.ids) and np.array_equal(clone[3][0], ds.raw(3))


@pytest.mark.slow  # imports torch (10+ s cold on the shared machine)
def test_dataloader_workers(cifar_test_tar, one_torch_thread):
    ds = open_dataset(str(cifar_test_tar), "official-test").subset(np.arange(0, 10_000, 1250))
    torch = pytest.importorskip("torch")
    loader = torch.utils.data.DataLoader(ds.mapped(pixels="raw", with_index=True), batch_size=4, num_workers=2,
                                         multiprocessing_context="fork")
    xs, ys, idx = zip(*loader)
    assert torch.cat(ys).tolist() == ds.labels.tolist() and torch.cat(idx).tolist() == list(range(8))
    assert np.array_equal(torch.cat(xs).numpy()[3], ds.raw(3))


def test_stored_modes_normalized(tmp_path, cifar_members):
    """Palette/RGBA PNGs come back as RGB, 16-bit and grayscale as L; 8-bit pixels unchanged."""
    from PIL import Image

    from divergent.data.base import decode_bytes

    src = decode_bytes(cifar_members["test/cat/0000.jpg"])
    root = tmp_path / "modes"
    (root / "cat").mkdir(parents=True)
    src.convert("RGBA").save(root / "cat" / "rgba.png")
    src.convert("P").save(root / "cat" / "palette.png")
    gray = src.convert("L")
    gray.save(root / "cat" / "gray.png")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(root / "cat" / "gray16.png")
    ds = open_dataset(str(root), "all")
    by = {i.split("/")[-1]: ds.image(k) for k, i in enumerate(ds.ids)}
    assert by["rgba.png"].mode == "RGB" and np.array_equal(np.asarray(by["rgba.png"]), np.asarray(src))
    assert by["palette.png"].mode == "RGB"
    assert by["gray.png"].mode == "L" and np.array_equal(np.asarray(by["gray.png"]), np.asarray(gray))
    assert by["gray16.png"].mode == "L" and np.array_equal(np.asarray(by["gray16.png"]), np.asarray(gray))
