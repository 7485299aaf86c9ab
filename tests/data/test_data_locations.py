"""Where named datasets are found (explicit path, DIVERGENT_DATA, system copy, caches), opt-in
downloads with checksums from a local HTTP server, and CIFAR-10's python archive layout."""
from __future__ import annotations

import functools
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


# --------------------------------------------------------------------------- CIFAR-10 python archive
def _cifar_batches(shared_dir: Path, dest: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Write the cifar-10-batches-py layout with real CIFAR-10 pixels (decoded from the shared JPEGs)."""
    ds = open_dataset(str(shared_dir / "data" / "cifar10-jpeg" / "test.tar.gz"), "all")
    take = np.arange(6 * per_batch) * 37
    x = np.stack([ds.raw(int(i)) for i in take]).astype(np.uint8)
    y = ds.labels[take]
    dest.mkdir(parents=True)
    names = [*locate.CIFAR10_BATCHES, "test_batch"]
    for k, n in enumerate(names):
        sl = slice(k * per_batch, (k + 1) * per_batch)
        flat = x[sl].transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        batch = {"batch_label": n, "labels": [int(v) for v in y[sl]], "data": flat, "filenames": [f"{n}_{i}.png" for i in range(per_batch)]}
        (dest / n).write_bytes(pickle.dumps(batch, protocol=2))
    (dest / "batches.meta").write_bytes(pickle.dumps({"label_names": list(ds.class_names), "num_vis": 3072}, protocol=2))
    return x, y


def test_cifar10_python_batches_found_and_read(shared_dir, clean_env, tmp_path, monkeypatch):
    x, y = _cifar_batches(shared_dir, tmp_path / "d" / "cifar-10-batches-py")
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "d"))
    ds = open_dataset("cifar10", "all")
    assert list(ds.ids[:2]) == ["train/00000", "train/00001"] and ds.ids[-1] == "test/00003"
    assert ds.class_names[0] == "airplane" and ds.source_dataset == "cifar10"
    assert np.array_equal(ds.array(), x) and np.array_equal(ds.labels, y)
    assert ds.image(0).mode == "RGB" and ds.image(0).size == (32, 32)
    # the same layout inside cifar-10-python.tar.gz, read without unpacking, by explicit path
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tmp_path / "d" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    dt = open_dataset(f"cifar10:{tgz}", "train")
    assert np.array_equal(dt.array(), x[:20]) and np.array_equal(dt.labels, y[:20])


def test_cifar10_batch_with_code_is_refused(shared_dir, clean_env, tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    _cifar_batches(shared_dir, d, per_batch=1)

    marker = tmp_path / "pickled-code-ran"

    class Boom:
        def __reduce__(self):
            import os

            return (os.mkdir, (str(marker),))

    (d / "test_batch").write_bytes(pickle.dumps({"data": Boom(), "labels": [0]}, protocol=2))
    with pytest.raises(DivergentError, match="not a CIFAR-10 python batch"):
        open_dataset(f"cifar10:{d}", "test")
    assert not marker.exists()


def test_cifar10_jpeg_found_through_data_root(shared_dir, clean_env, tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cifar10-jpeg").symlink_to(shared_dir / "data" / "cifar10-jpeg")
    monkeypatch.setenv("DIVERGENT_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("DIVERGENT_SHARED", str(tmp_path / "no-shared"))
    ds = open_dataset("cifar10-jpeg", "holdout")
    assert ds.root == str(tmp_path / "d" / "cifar10-jpeg") and len(ds) == 5000
