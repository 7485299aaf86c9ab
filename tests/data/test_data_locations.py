"""Where named datasets are found (explicit path, DIVERGENT_DATA, system copy, caches), opt-in
downloads with checksums from a local HTTP server on 127.0.0.1 (Fashion-MNIST's files, a CIFAR-10
archive of real images), CIFAR-10's python and binary archive layouts, and the study's lookup
(`divergent study run --download`, exit 2 without it)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from divergent.data import locate, open_dataset
from divergent.errors import DivergentError

FILES = [r.name for r in locate.FASHION_MNIST_FILES]


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No DIVERGENT_DATA/DIVERGENT_MIRROR, a fresh home and cache, cwd in tmp; the system copy stays."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("DIVERGENT_DATA", raising=False)
    monkeypatch.delenv("DIVERGENT_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(locate, "FMNIST_SYSTEM", str(tmp_path / "not-installed"))


def _link_fmnist(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in FILES:
        (dest / f).symlink_to(src / f)
    return dest


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_lookup_order_data_env_then_system_then_cache(fmnist_dir, clean_env, tmp_path, monkeypatch):
    env_copy = _link_fmnist(fmnist_dir, tmp_path / "mydata" / "FashionMNIST" / "raw")
    cache_copy = _link_fmnist(fmnist_dir, clean_env / ".cache" / "fashion-mnist")
    # DIVERGENT_DATA (a second, empty root first) comes before the system copy
    monkeypatch.setenv("DIVERGENT_DATA", f"{tmp_path / 'empty'}:{tmp_path / 'mydata'}")
    assert open_dataset("fashion-mnist", "test").root == str(env_copy)
    # without it: Debian's system copy
    monkeypatch.delenv("DIVERGENT_DATA")
    assert open_dataset("fashion-mnist", "test").root == str(fmnist_dir)
    # without that too: the cache
    monkeypatch.setattr(locate, "FMNIST_SYSTEM", str(tmp_path / "not-installed"))
    ds = open_dataset("fashion-mnist", "holdout")
    assert ds.root == str(cache_copy) and len(ds) == 5000
    # an explicit path wins over everything
    assert open_dataset(f"fashion-mnist:{fmnist_dir}", "test").root == str(fmnist_dir)
    # the mosaic reads its base images from the same place
    assert open_dataset("fashion-mnist-mosaic", "test", n=8).n_classes == 10


def test_nothing_found_says_where_and_offers_download(clean_env, no_system_copy):
    with pytest.raises(DivergentError) as e:
        open_dataset("fashion-mnist", "test")
    assert "not found" in e.value.problem and "FashionMNIST/raw" in e.value.problem
    assert "--download" in e.value.fix and "DIVERGENT_DATA" in e.value.fix


def test_download_from_local_mirror_verified_and_atomic(fmnist_dir, clean_env, no_system_copy, server, monkeypatch):
    www, url = server
    for f in FILES:
        (www / f).write_bytes((fmnist_dir / f).read_bytes())
    monkeypatch.setenv("DIVERGENT_MIRROR", url)
    ds = open_dataset("fashion-mnist", "test", download=True)
    dest = clean_env / ".cache" / "divergent" / "fashion-mnist"
    assert ds.root == str(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)  # no temporary files left
    ref = open_dataset(f"fashion-mnist:{fmnist_dir}", "test")
    assert np.array_equal(ds.labels, ref.labels) and np.array_equal(ds.array(), ref.array())
    # a second open finds the downloaded copy without the network
    monkeypatch.setenv("DIVERGENT_MIRROR", "http://127.0.0.1:9/")
    assert open_dataset("fashion-mnist", "train").root == str(dest)


def test_download_goes_to_data_root_and_takes_base_url(fmnist_dir, clean_env, no_system_copy, server, tmp_path, monkeypatch):
    www, url = server
    for f in FILES:
        (www / f).write_bytes((fmnist_dir / f).read_bytes())
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "root"))
    out = locate.fetch("fashion-mnist", base_url=url)
    assert out == tmp_path / "root" / "fashion-mnist"
    assert locate.find("fashion-mnist") == out


def test_download_with_wrong_checksum_writes_nothing(fmnist_dir, clean_env, no_system_copy, server, monkeypatch):
    www, url = server
    for f in FILES:
        (www / f).write_bytes((fmnist_dir / f).read_bytes())
    raw = bytearray((fmnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    import gzip

    content = bytearray(gzip.decompress(bytes(raw)))
    content[-1] ^= 1  # one label changed: a valid gzip of the wrong data
    (www / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(content)))
    monkeypatch.setenv("DIVERGENT_MIRROR", url)
    with pytest.raises(DivergentError, match="checksum"):
        open_dataset("fashion-mnist", "test", download=True)
    dest = clean_env / ".cache" / "divergent" / "fashion-mnist"
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]


def test_no_download_without_opt_in(fmnist_dir, clean_env, no_system_copy, server, monkeypatch):
    www, url = server
    for f in FILES:
        (www / f).write_bytes((fmnist_dir / f).read_bytes())
    monkeypatch.setenv("DIVERGENT_MIRROR", url)
    with pytest.raises(DivergentError, match="not found"):
        open_dataset("fashion-mnist", "test")
    assert not (clean_env / ".cache").exists()


def test_known_files_match_torchvision():
    mnist = pytest.importorskip("torchvision.datasets.mnist")
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    fm = mnist.FashionMNIST
    assert [(r.name, r.md5) for r in locate.FASHION_MNIST_FILES] == [tuple(x) for x in fm.resources]
    assert all(r.url == fm.mirrors[0] + r.name for r in locate.FASHION_MNIST_FILES)
    (c,) = locate.CIFAR10_FILES
    assert (c.name, c.url, c.md5) == (cifar.CIFAR10.filename, cifar.CIFAR10.url, cifar.CIFAR10.tgz_md5)


def test_debian_copy_passes_the_content_checksums(fmnist_dir):
    for r in locate.FASHION_MNIST_FILES:
        assert locate._verify((fmnist_dir / r.name).read_bytes(), r)
    assert not locate._verify(b"\x1f\x8b" + b"not gzip", locate.FASHION_MNIST_FILES[0])


# --------------------------------------------------------------------------- CIFAR-10 archives
PER_BATCH = 4


@pytest.fixture(scope="module")
def cifar_real(shared_dir):
    """6 x PER_BATCH real CIFAR-10 images (decoded from the shared JPEG copy), labels, class names."""
    ds = open_dataset(str(shared_dir / "data" / "cifar10-jpeg" / "test.tar.gz"), "all")
    take = np.arange(6 * PER_BATCH) * 37
    x = np.stack([ds.raw(int(i)) for i in take]).astype(np.uint8)
    return x, ds.labels[take].astype(np.int64), list(ds.class_names)


def _write_python(dest: Path, x: np.ndarray, y: np.ndarray, names: list[str], per_batch: int = PER_BATCH) -> Path:
    """The cifar-10-batches-py layout: pickled dicts, 'data' (N, 3072) uint8 as R, G, B planes."""
    dest.mkdir(parents=True)
    for k, n in enumerate([*locate.CIFAR10_BATCHES, "test_batch"]):
        sl = slice(k * per_batch, (k + 1) * per_batch)
        flat = x[sl].transpose(0, 3, 1, 2).reshape(-1, 3072)
        batch = {"batch_label": n, "labels": [int(v) for v in y[sl]], "data": flat,
                 "filenames": [f"{n}_{i}.png" for i in range(len(flat))]}
        (dest / n).write_bytes(pickle.dumps(batch, protocol=2))
    (dest / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    return dest


def _write_binary(dest: Path, x: np.ndarray, y: np.ndarray, names: list[str], per_batch: int = PER_BATCH) -> Path:
    """The cifar-10-batches-bin layout: records of 1 label byte + 1024 red, 1024 green, 1024 blue bytes."""
    dest.mkdir(parents=True)
    for k, n in enumerate([*locate.CIFAR10_BATCHES, "test_batch"]):
        sl = slice(k * per_batch, (k + 1) * per_batch)
        recs = b"".join(bytes([int(lab)]) + img[:, :, 0].tobytes() + img[:, :, 1].tobytes() + img[:, :, 2].tobytes()
                        for img, lab in zip(x[sl], y[sl]))
        (dest / f"{n}.bin").write_bytes(recs)
    (dest / "batches.meta.txt").write_text("\n".join(names) + "\n\n")  # the published file ends in blank lines
    (dest / "readme.html").write_text("<html></html>")
    return dest


def _tgz(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return out


def test_cifar10_python_batches_found_and_read(cifar_real, clean_env, tmp_path, monkeypatch):
    x, y, names = cifar_real
    _write_python(tmp_path / "d" / "cifar-10-batches-py", x, y, names)
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "d"))
    ds = open_dataset("cifar10", "all")
    assert list(ds.ids[:2]) == ["train/00000", "train/00001"] and ds.ids[-1] == "test/00003"
    assert ds.class_names[0] == "airplane" and ds.source_dataset == "cifar10" and ds.meta["source"] == "cifar10-python"
    assert np.array_equal(ds.array(), x) and np.array_equal(ds.labels, y)
    assert ds.image(0).mode == "RGB" and ds.image(0).size == (32, 32)
    # the same layout inside cifar-10-python.tar.gz, read without unpacking, by explicit path
    tgz = _tgz(tmp_path / "d" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    dt = open_dataset(f"cifar10:{tgz}", "train")
    assert np.array_equal(dt.array(), x[:20]) and np.array_equal(dt.labels, y[:20])


def test_cifar10_binary_layout_reads_as_the_python_layout(cifar_real, clean_env, tmp_path, monkeypatch):
    x, y, names = cifar_real
    py = _write_python(tmp_path / "py" / "cifar-10-batches-py", x, y, names)
    _write_binary(tmp_path / "d" / "cifar-10-batches-bin", x, y, names)
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "d"))
    for split in ("all", "train", "holdout", "test"):
        b = open_dataset("cifar10", split)  # found under DIVERGENT_DATA in the binary layout
        p = open_dataset(f"cifar10:{py}", split)
        assert b.root == str(tmp_path / "d" / "cifar-10-batches-bin") and b.meta["source"] == "cifar10-binary"
        assert list(b.ids) == list(p.ids) and np.array_equal(b.labels, p.labels), split
        assert np.array_equal(b.array(), p.array()) and b.class_names == p.class_names == names, split
    b = open_dataset("cifar10", "all")
    assert np.array_equal(b.array(), x) and np.array_equal(b.labels, y)  # the real pixels, HWC, in batch order
    # cifar-10-binary.tar.gz: found in a root and read without unpacking
    (tmp_path / "d2").mkdir()
    _tgz(tmp_path / "d" / "cifar-10-batches-bin", tmp_path / "d2" / "cifar-10-binary.tar.gz")
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "d2"))
    t = open_dataset("cifar10", "official-test")
    assert t.root == str(tmp_path / "d2" / "cifar-10-binary.tar.gz")
    assert np.array_equal(t.array(), x[20:]) and list(t.ids) == [f"test/{i:05d}" for i in range(4)]
    # both layouts under one root: the python one is used
    _write_python(tmp_path / "d2" / "cifar-10-batches-py", x, y, names)
    assert open_dataset("cifar10", "test").root == str(tmp_path / "d2" / "cifar-10-batches-py")


def test_cifar10_binary_batch_checked(cifar_real, clean_env, tmp_path):
    x, y, names = cifar_real
    d = _write_binary(tmp_path / "cifar-10-batches-bin", x, y, names)
    data = (d / "test_batch.bin").read_bytes()
    (d / "test_batch.bin").write_bytes(data[:-1])  # a truncated record
    with pytest.raises(DivergentError, match="not a CIFAR-10 binary batch"):
        open_dataset(f"cifar10:{d}", "test")
    (d / "test_batch.bin").write_bytes(bytes([10]) + data[1:])  # label 10 of 10 classes
    with pytest.raises(DivergentError, match="label 10"):
        open_dataset(f"cifar10:{d}", "test")
    (d / "test_batch.bin").unlink()
    with pytest.raises(DivergentError, match="not a CIFAR-10 batches folder"):
        open_dataset(f"cifar10:{d}", "test")


def test_cifar10_batch_with_code_is_refused(cifar_real, clean_env, tmp_path):
    x, y, names = cifar_real
    d = _write_python(tmp_path / "cifar-10-batches-py", x, y, names, per_batch=1)

    marker = tmp_path / "pickled-code-ran"

    class Boom:
        def __reduce__(self):
            import os

            return (os.mkdir, (str(marker),))

    (d / "test_batch").write_bytes(pickle.dumps({"data": Boom(), "labels": [0]}, protocol=2))
    with pytest.raises(DivergentError, match="not a CIFAR-10 python batch"):
        open_dataset(f"cifar10:{d}", "test")
    assert not marker.exists()


def _serve_cifar(cifar_real, tmp_path, www, monkeypatch) -> bytes:
    """Put a cifar-10-python.tar.gz of real images on the local server and make its md5 the known one
    (the published md5 is that of the full archive; test_known_files_match_torchvision checks it)."""
    x, y, names = cifar_real
    tgz = _tgz(_write_python(tmp_path / "src" / "cifar-10-batches-py", x, y, names), www / "cifar-10-python.tar.gz")
    data = tgz.read_bytes()
    (real,) = locate.CIFAR10_FILES
    mine = locate.Remote(real.name, real.url, hashlib.md5(data).hexdigest())
    monkeypatch.setitem(locate.DOWNLOADS, "cifar10", ("", (mine,)))
    return data


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def test_cifar10_download_from_local_mirror(cifar_real, clean_env, server, tmp_path, monkeypatch):
    www, url = server
    x, y, _ = cifar_real
    data = _serve_cifar(cifar_real, tmp_path, www, monkeypatch)
    monkeypatch.setenv("DIVERGENT_MIRROR", url)
    with pytest.raises(DivergentError, match="not found"):  # nothing without the opt-in
        open_dataset("cifar10", "test")
    ds = open_dataset("cifar10", "official-test", download=True)
    dest = clean_env / ".cache" / "divergent"
    assert ds.root == str(dest / "cifar-10-python.tar.gz") and [p.name for p in dest.iterdir()] == ["cifar-10-python.tar.gz"]
    assert (dest / "cifar-10-python.tar.gz").read_bytes() == data
    assert list(ds.ids) == [f"test/{i:05d}" for i in range(PER_BATCH)] and ds.class_names[9] == "truck"
    assert np.array_equal(ds.array(), x[20:]) and np.array_equal(ds.labels, y[20:])
    # found again without the server
    monkeypatch.setenv("DIVERGENT_MIRROR", "http://127.0.0.1:9/")
    assert np.array_equal(open_dataset("cifar10", "train").labels, y[:20])


def test_cifar10_download_with_wrong_checksum_is_refused(cifar_real, clean_env, server, tmp_path, monkeypatch):
    www, url = server
    x, y, names = cifar_real
    _serve_cifar(cifar_real, tmp_path, www, monkeypatch)
    root = tmp_path / "root"
    (root / "other").mkdir(parents=True)
    (root / "other" / "notes.txt").write_text("kept")
    monkeypatch.setenv("DIVERGENT_DATA", str(root))
    monkeypatch.setenv("DIVERGENT_MIRROR", url)
    before = _tree(root)
    x2 = x.copy()
    x2[21, 5, 7, 1] ^= 1  # one pixel of one test image differs: a valid archive of the wrong data
    _tgz(_write_python(tmp_path / "bad" / "cifar-10-batches-py", x2, y, names), www / "cifar-10-python.tar.gz")
    with pytest.raises(DivergentError, match="checksum") as e:
        open_dataset("cifar10", "test", download=True)
    assert "nothing was written" in e.value.problem and "DIVERGENT_MIRROR" in e.value.fix
    www.joinpath("cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DivergentError, match="checksum"):
        open_dataset("cifar10", "test", download=True)
    assert _tree(root) == before  # the data root as it was: no archive, no temporary
    assert not (clean_env / ".cache").exists()


# --------------------------------------------------------------------------- the study's dataset lookup
def _stop_after_lookup(monkeypatch):
    import importlib

    plan_mod = importlib.import_module("divergent.study.plan")  # the module (the package exports a function of that name)

    def stop(cfg):
        raise DivergentError(f"planned {cfg.data.dataset}", "-")

    monkeypatch.setattr(plan_mod, "plan", stop)


def test_study_run_missing_dataset_exit_2(clean_env, no_system_copy, tmp_path, monkeypatch, capsys):
    from divergent.cli import main

    _stop_after_lookup(monkeypatch)
    monkeypatch.setenv("DIVERGENT_SHARED", str(tmp_path / "no-shared"))
    out = tmp_path / "out"
    assert main(["study", "run", "fashion-mnist-quick", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "fashion-mnist is not found" in err
    assert all(w in err for w in ("--download", "--data", "DIVERGENT_DATA")), err
    assert not out.exists()  # stopped before anything was written
    # the cifar10 preset reads the JPEG copy, which has no download: the fix names the archives' source
    assert main(["study", "run", "cifar10", "--out", str(out), "--download"]) == 2
    err = capsys.readouterr().err
    assert "cifar10-jpeg is not found" in err and "--set data.dataset=cifar10 --download" in err and not out.exists()


def test_study_run_download(cifar_real, fmnist_dir, clean_env, no_system_copy, server, tmp_path, monkeypatch, capsys):
    """--download fetches through the one lookup, from the local mirror, before the study plans."""
    from divergent.cli import main

    www, url = server
    _stop_after_lookup(monkeypatch)
    out = tmp_path / "out"
    for f in FILES:
        (www / f).write_bytes((fmnist_dir / f).read_bytes())
    _serve_cifar(cifar_real, tmp_path, www, monkeypatch)
    monkeypatch.setenv("DIVERGENT_MIRROR", url)
    assert main(["study", "run", "fashion-mnist-quick", "--out", str(out), "--download"]) == 2
    assert "planned fashion-mnist" in capsys.readouterr().err
    assert sorted(p.name for p in (clean_env / ".cache" / "divergent" / "fashion-mnist").iterdir()) == sorted(FILES)
    assert main(["study", "run", "fashion-mnist-quick", "--out", str(out), "--set", "data.dataset=cifar10", "--download"]) == 2
    assert "planned cifar10" in capsys.readouterr().err
    monkeypatch.setenv("DIVERGENT_MIRROR", "http://127.0.0.1:9/")  # resumed without --download: found in the cache
    assert main(["study", "run", "fashion-mnist-quick", "--out", str(out), "--set", "data.dataset=cifar10"]) == 2
    assert "planned cifar10" in capsys.readouterr().err
    assert open_dataset("cifar10", "test").root == str(clean_env / ".cache" / "divergent" / "cifar-10-python.tar.gz")


def test_cifar10_jpeg_found_through_data_root(shared_dir, clean_env, tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cifar10-jpeg").symlink_to(shared_dir / "data" / "cifar10-jpeg")
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("DIVERGENT_SHARED", str(tmp_path / "no-shared"))
    ds = open_dataset("cifar10-jpeg", "holdout")
    assert ds.root == str(tmp_path / "d" / "cifar10-jpeg") and len(ds) == 5000
