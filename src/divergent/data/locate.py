"""Where a named dataset is on this machine, opt-in downloads with checksums, and CIFAR-10's
published archives, python (``cifar-10-python.tar.gz`` / ``cifar-10-batches-py``) and binary
(``cifar-10-binary.tar.gz`` / ``cifar-10-batches-bin``), read to the same ids, order and labels.

Lookup order for ``fashion-mnist``, ``cifar10`` (either archive) and ``cifar10-jpeg``:

1. an explicit path (``fashion-mnist:DIR``, ``cifar10:PATH``, or the directory itself as the source);
2. ``DIVERGENT_DATA``: one or more roots (separated by ``os.pathsep``);
3. the system copy: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
   the shared assets folder for ``cifar10-jpeg`` (``DIVERGENT_SHARED``, else ``../shared``);
4. the usual caches: ``$XDG_CACHE_HOME/divergent`` (``~/.cache/divergent``, where downloads go),
   ``~/.cache``, ``~/.keras/datasets``, ``./data``.

Under each root the layouts looked for are ``fashion-mnist/``, ``fashion_mnist/`` and torchvision's
``FashionMNIST/raw/`` (``*-ubyte`` or ``*-ubyte.gz``); ``cifar-10-batches-py/``,
``cifar-10-python.tar.gz``, ``cifar-10-batches-bin/`` and ``cifar-10-binary.tar.gz``;
``cifar10-jpeg/`` (``train.tar.gz`` + ``test.tar.gz``).

Nothing is downloaded unless asked (``download=True``, ``--download`` of ``divergent extract`` and
``divergent study run``): the files are fetched from the upstream URLs torchvision lists (or the
base URL in ``DIVERGENT_MIRROR``), checked against known checksums, and written atomically under the
first ``DIVERGENT_DATA`` root, else ``~/.cache/divergent``. :func:`find_sources` looks up (and
downloads) the datasets a list of sources needs before a long job starts.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import atomic_write_bytes, sha256_bytes
from ..conventions import SPLIT_SEED
from ..errors import DivergentError
from .safe_pickle import restricted_loads

FMNIST_SYSTEM = "/usr/share/datasets/fashion-mnist"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Remote:
    """A file a dataset is made of: where it is fetched from and the checksums it must have.

    ``md5`` is the checksum of the file as published (torchvision's list); ``sha256_content`` that of
    its gunzipped content, so a mirror that recompressed the same data (Debian's copy) passes too."""

    name: str
    url: str
    md5: str
    sha256_content: str | None = None


# URLs and md5s as listed by torchvision.datasets.FashionMNIST / CIFAR10 (torchvision 0.29);
# content sha256s of the gunzipped IDX files (the bytes every copy of Fashion-MNIST holds)
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = (
    Remote("train-images-idx3-ubyte.gz", _FMNIST_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
           "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    Remote("train-labels-idx1-ubyte.gz", _FMNIST_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
           "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    Remote("t10k-images-idx3-ubyte.gz", _FMNIST_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
           "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    Remote("t10k-labels-idx1-ubyte.gz", _FMNIST_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
           "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)
CIFAR10_FILES = (
    Remote("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
)
#: name -> (folder it is downloaded into under the data root, its files)
DOWNLOADS = {"fashion-mnist": ("fashion-mnist", FASHION_MNIST_FILES), "cifar10": ("", CIFAR10_FILES)}
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")


@dataclass(frozen=True)
class CifarLayout:
    """One of CIFAR-10's published archive layouts: the same 60,000 images in the same order."""

    kind: str                 # 'python' (pickled batches) or 'binary' (label byte + CHW pixel records)
    folder: str               # the folder the archive unpacks to
    archive: str              # the published archive
    train: tuple[str, ...]    # the five training batches, in order
    test: str
    meta: str                 # the class names


CIFAR10_LAYOUTS = (
    CifarLayout("python", "cifar-10-batches-py", "cifar-10-python.tar.gz", CIFAR10_BATCHES, "test_batch", "batches.meta"),
    CifarLayout("binary", "cifar-10-batches-bin", "cifar-10-binary.tar.gz", tuple(f"{b}.bin" for b in CIFAR10_BATCHES),
                "test_batch.bin", "batches.meta.txt"),
)


# ----------------------------------------------------------------------------- roots
def env_roots() -> list[Path]:
    """The roots named in DIVERGENT_DATA (os.pathsep-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get("DIVERGENT_DATA", "").split(os.pathsep) if p.strip()]


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def cache_roots() -> list[Path]:
    """The usual caches: ~/.cache/divergent (downloads), ~/.cache, ~/.keras/datasets, ./data."""
    return [cache_home() / "divergent", cache_home(), Path.home() / ".keras" / "datasets", Path.cwd() / "data"]


def download_root() -> Path:
    """Where downloads go: the first DIVERGENT_DATA root, else ~/.cache/divergent."""
    roots = env_roots()
    return roots[0] if roots else cache_home() / "divergent"


def _system_roots(name: str) -> list[tuple[str, Path]]:
    if name == "fashion-mnist":
        return [("system", Path(FMNIST_SYSTEM))]
    if name == "cifar10-jpeg":
        from .._files import shared_root

        root = shared_root()
        return [("shared", root / "data" / "cifar10-jpeg")] if root is not None else []
    return []


def _fmnist_at(path: Path) -> Path | None:
    from .idx import _find

    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return path if path.is_dir() and all(_find(path, s) is not None for s in stems) else None


def _cifar_at(path: Path) -> Path | None:
    if path.is_dir() and any(all((path / b).is_file() for b in (*lay.train, lay.test)) for lay in CIFAR10_LAYOUTS):
        return path
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return path
    return None


def _jpeg_at(path: Path) -> Path | None:
    from .folder import archive_parts

    return path if path.is_dir() and archive_parts(path) else None


#: name -> (layouts under a root, the check that a candidate holds the dataset)
LAYOUTS = {
    "fashion-mnist": (("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"), _fmnist_at),
    "cifar10": (tuple(n for lay in CIFAR10_LAYOUTS for n in (lay.folder, lay.archive)), _cifar_at),
    "cifar10-jpeg": (("cifar10-jpeg",), _jpeg_at),
}


def candidates(name: str) -> list[tuple[str, Path]]:
    """Every place looked at for a named dataset, in lookup order: (where, path)."""
    layouts, _ = LAYOUTS[name]
    out = [("DIVERGENT_DATA", r / lay) for r in env_roots() for lay in layouts]
    out += _system_roots(name)
    out += [("cache", r / lay) for r in cache_roots() for lay in layouts]
    return out


def find(name: str, *, download: bool = False, base_url: str | None = None) -> Path:
    """The folder (or archive) holding a named dataset ('fashion-mnist', 'cifar10', 'cifar10-jpeg').

    Looks in the order of the module docstring; when nothing is found, downloads it if
    download=True (where a download exists), else raises a DivergentError listing where it looked."""
    if name not in LAYOUTS:
        from ..errors import unknown

        raise unknown("dataset to locate", name, LAYOUTS)
    _, check = LAYOUTS[name]
    looked = candidates(name)
    for _, path in looked:
        hit = check(path)
        if hit is not None:
            return hit
    if download and name in DOWNLOADS:
        fetch(name, base_url=base_url)
        folder, files = DOWNLOADS[name]
        return check(download_root() / (folder or files[0].name)) or download_root() / folder
    shown = ", ".join(str(p) for _, p in looked[:6]) + (" ..." if len(looked) > 6 else "")
    how = {
        "fashion-mnist": "download it with --download (checksummed), set DIVERGENT_DATA to a folder holding fashion-mnist/ "
                         "or FashionMNIST/raw/, pass the folder as the source (--data fashion-mnist:/folder; in a study "
                         "--set data.dataset=fashion-mnist:/folder), or apt-get install dataset-fashion-mnist",
        "cifar10": "download it with --download (checksummed), set DIVERGENT_DATA to a folder holding cifar-10-batches-py/, "
                   "cifar-10-batches-bin/ or their .tar.gz, or pass the path as the source (--data cifar10:/path; in a "
                   "study --set data.dataset=cifar10:/path)",
        "cifar10-jpeg": "set DIVERGENT_DATA to a folder holding cifar10-jpeg/ (train.tar.gz, test.tar.gz) or DIVERGENT_SHARED "
                        "to the shared folder, or pass the folder as the source (--data /folder); the JPEG copy has no "
                        "download: for the original images use the source cifar10 with --download "
                        "(in a study --set data.dataset=cifar10 --download)",
    }[name]
    raise DivergentError(f"{name} is not found on this machine (looked in {shown})", how)


#: sources of :func:`divergent.data.open_dataset` that name a dataset looked up here -> that dataset
NAMED_SOURCES = {"fashion-mnist": "fashion-mnist", "fashion-mnist-mosaic": "fashion-mnist",
                 "cifar10": "cifar10", "cifar10-jpeg": "cifar10-jpeg"}


def find_sources(sources, *, download: bool = False) -> dict[str, Path]:
    """Find, with :func:`find` (downloading when asked), the dataset behind every source in
    `sources` that names one ('fashion-mnist', 'fashion-mnist-mosaic', 'cifar10', 'cifar10-jpeg');
    other sources (paths, 'digits', ...) are left to open_dataset. A long job calls this first, so
    that a missing dataset stops it before anything is written. Returns {dataset: path}."""
    out: dict[str, Path] = {}
    for src in sources:
        name = NAMED_SOURCES.get(str(src))
        if name is not None and name not in out:
            out[name] = find(name, download=download)
    return out


# ----------------------------------------------------------------------------- downloads
def _verify(data: bytes, remote: Remote) -> bool:
    if hashlib.md5(data, usedforsecurity=False).hexdigest() == remote.md5:
        return True
    if remote.sha256_content is None:
        return False
    try:
        content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error):
        return False
    return sha256_bytes(content) == remote.sha256_content


def fetch(name: str, *, base_url: str | None = None, dest: Path | None = None, timeout: float = 60.0) -> Path:
    """Download a dataset's files (only when asked), verify their checksums, write them atomically.

    base_url (else the environment's DIVERGENT_MIRROR) replaces the upstream location: files are
    fetched as base_url + file name. Files already present with the right checksum are kept.
    Returns the folder written to."""
    import urllib.error
    import urllib.request

    if name not in DOWNLOADS:
        from ..errors import unknown

        raise unknown("downloadable dataset", name, DOWNLOADS)
    folder, files = DOWNLOADS[name]
    target = (dest or download_root()) / folder if folder else (dest or download_root())
    base = base_url or os.environ.get("DIVERGENT_MIRROR")
    for remote in files:
        out = target / remote.name
        if out.is_file() and _verify(out.read_bytes(), remote):
            continue
        url = (base.rstrip("/") + "/" + remote.name) if base else remote.url
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                data = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DivergentError(f"cannot download {url}: {exc}",
                                 "check the network (or DIVERGENT_MIRROR), or put the files in place and set DIVERGENT_DATA") from exc
        if not _verify(data, remote):
            raise DivergentError(f"{url} does not have the known checksum of {remote.name} (md5 {remote.md5}); nothing was written",
                                 "retry, or use another mirror (DIVERGENT_MIRROR=<base URL>)")
        atomic_write_bytes(out, data)  # durable, mode 0o666 less the umask
    return target


# ----------------------------------------------------------------------------- CIFAR-10 archives
def _cifar_layout(members) -> CifarLayout | None:
    """The first layout whose batches are all among `members` (names)."""
    have = set(members)
    return next((lay for lay in CIFAR10_LAYOUTS if {*lay.train, lay.test} <= have), None)


def _cifar_members(path: Path, part: str) -> tuple[CifarLayout, dict[str, bytes]]:
    """(layout, member name -> bytes) of one part's batches and the class-name file, from a
    cifar-10-batches-py / cifar-10-batches-bin folder or an archive holding one (read without unpacking)."""
    wanted = {n for lay in CIFAR10_LAYOUTS for n in (*lay.train, lay.test, lay.meta)}
    if path.is_dir():
        lay = _cifar_layout(n for n in wanted if (path / n).is_file())
        if lay is None:
            raise DivergentError(f"{path} holds neither CIFAR-10 layout", "pass a cifar-10-batches-py or cifar-10-batches-bin folder")
        names = (*(lay.train if part == "train" else (lay.test,)), lay.meta)
        return lay, {n: (path / n).read_bytes() for n in names if (path / n).is_file()}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted:
                    fh = tf.extractfile(m)
                    out[base] = fh.read() if fh is not None else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DivergentError(f"cannot read CIFAR-10 archive {path}: {exc}", f"re-download {path.name}") from exc
    lay = _cifar_layout(out)
    if lay is None:
        some = next((n for n in (*CIFAR10_LAYOUTS[0].train, CIFAR10_LAYOUTS[0].test) if n not in out), "test_batch")
        raise DivergentError(f"{path} has no {some} (nor the binary layout's {some}.bin)",
                             "pass cifar-10-python.tar.gz or cifar-10-binary.tar.gz, or a folder holding either's batches")
    return lay, out


def _load_batch(data: bytes, where: str) -> dict:
    try:
        d = restricted_loads(data, what="a CIFAR-10 batch", encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - any malformed pickle
        raise DivergentError(f"{where} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})",
                             "re-download cifar-10-python.tar.gz") from exc
    if not isinstance(d, dict) or ("data" not in d and "labels" not in d and "label_names" not in d):
        raise DivergentError(f"{where} is not a CIFAR-10 python batch", "re-download cifar-10-python.tar.gz")
    return d


def _python_batch(data: bytes, where: str) -> tuple[object, object]:
    d = _load_batch(data, where)
    return d.get("data"), d.get("labels")


def _binary_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A binary batch: records of 1 label byte + 3072 pixel bytes (1024 red, green, blue, row-major)."""
    if not data or len(data) % 3073:
        raise DivergentError(f"{where} is not a CIFAR-10 binary batch ({len(data)} bytes, not a whole number of "
                             "3073-byte records: 1 label byte + 3072 pixel bytes)", "re-download cifar-10-binary.tar.gz")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)
    return rec[:, 1:], rec[:, 0]


def _class_names(lay: CifarLayout, data: bytes | None, where: str) -> list[str]:
    if data is None:
        return list(CIFAR10_CLASSES)
    if lay.kind == "python":
        return [str(c) for c in _load_batch(data, where).get("label_names", CIFAR10_CLASSES)]
    try:
        return [ln.strip() for ln in data.decode("utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise DivergentError(f"{where} is not a list of class names ({exc})", f"re-download {lay.archive}") from exc


def cifar10_arrays(path: Path, part: str) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64, class names, layout kind 'python' or
    'binary') of 'train' (data_batch_1 ... 5 in order) or 'test' (test_batch)."""
    lay, members = _cifar_members(path, part)
    names = list(lay.train) if part == "train" else [lay.test]
    classes = _class_names(lay, members.get(lay.meta), f"{path}:{lay.meta}")
    read = _python_batch if lay.kind == "python" else _binary_batch
    imgs, labs = [], []
    for n in names:
        x, y = read(members[n], f"{path}:{n}")
        x, y = np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DivergentError(f"{path}:{n} holds data {x.shape} and labels {y.shape}, not (N, 3072) and (N,)",
                                 f"re-download {lay.archive}")
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise DivergentError(f"{path}:{n} has label {int(y.max() if y.max() >= len(classes) else y.min())}, "
                                 f"outside the {len(classes)} classes of {lay.meta}", f"re-download {lay.archive}")
        imgs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # CHW planes -> HWC
        labs.append(y)
    return np.ascontiguousarray(np.concatenate(imgs)), np.concatenate(labs), classes, lay.kind


def open_cifar10(path: str | None, split: str, *, seed: int = SPLIT_SEED, name: str | None = None,
                 download: bool = False, on_error: str = "fail", **unused):
    """CIFAR-10 from one of its published archives, python or binary (a cifar-10-batches-py or
    cifar-10-batches-bin folder, or cifar-10-python.tar.gz / cifar-10-binary.tar.gz read without
    unpacking), found by the lookup order when path is None.

    ids: 'train/00000' ... 'train/49999' (data_batch_1 to 5 in order), 'test/00000' ... 'test/09999'
    (the same ids and order as torchvision:CIFAR10@ROOT, whichever layout is read)."""
    from .base import ImageDataset, stack_plan
    from .splitting import official_plan

    if unused:
        raise DivergentError(f"cifar10 sources take no option(s) {', '.join(sorted(unused))}", "use name=, seed=, download=")
    root = Path(path).expanduser() if path else find("cifar10", download=download)
    if _cifar_at(root) is None:
        raise DivergentError(f"{root} is not a CIFAR-10 batches folder or archive",
                             "pass the folder holding data_batch_1 ... test_batch (or the .bin batches), "
                             "or cifar-10-python.tar.gz / cifar-10-binary.tar.gz")
    plan = official_plan(split, ("train", "test"))
    classes, kind = list(CIFAR10_CLASSES), ["python"]

    def load(part):
        imgs, labs, classes[:], kind[0] = cifar10_arrays(root, part)
        return imgs, labs, part, f"{root}:{part}"

    f = stack_plan(plan, load, seed=seed)
    return ImageDataset(
        name=name or "cifar10", split=split, source_dataset="cifar10", ids=f["ids"], labels=f["labels"],
        class_names=classes, reader=f["reader"], index=f["index"], root=str(root),
        meta={"source": f"cifar10-{kind[0]}", "rule": f["rule"], "seed": seed},
    )
