"""IDX readers: Fashion-MNIST (and MNIST-style IDX folders), gzipped or plain, into uint8 arrays."""
from __future__ import annotations

import gzip
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..conventions import SPLIT_SEED
from ..errors import DivergentError
from .base import ImageDataset, stack_plan
from .splitting import empty_split_error, official_plan

FMNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
#: IDX part name -> official part
PARTS = {"train": "train", "t10k": "test"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def is_idx_dir(path: Path) -> bool:
    return _find(path, "t10k-labels-idx1-ubyte") is not None or _find(path, "train-labels-idx1-ubyte") is not None


@lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime: float, size: int) -> np.ndarray:
    return read_idx(path)


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into a numpy array (read-only)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DivergentError(f"cannot read IDX file {path}: {exc}", "re-download or reinstall the dataset files") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DivergentError(f"{path} is not an IDX file (bad magic {raw[:4]!r})", "pass the folder of *-idx?-ubyte[.gz] files")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise DivergentError(
            f"IDX file {path} is truncated or padded: {len(body)} data bytes for shape {dims}, expected {need}",
            "re-download or reinstall the dataset files",
        )
    arr = np.frombuffer(body, dtype=dtype).reshape(dims)
    return arr


def _load(root: Path, part: str, what: str) -> np.ndarray:
    stem = f"{part}-{'images-idx3' if what == 'images' else 'labels-idx1'}-ubyte"
    path = _find(root, stem)
    if path is None:
        raise DivergentError(
            f"{root} has no {stem}[.gz]",
            "install Fashion-MNIST (apt-get install dataset-fashion-mnist) or pass 'fashion-mnist:/folder/with/idx/files'",
        )
    st = path.stat()
    return _read_idx_cached(str(path), st.st_mtime, st.st_size)


def open_idx(path: str | None, split: str, *, fashion: bool | None = True, seed: int = SPLIT_SEED,
             classes=None, name: str | None = None, source_dataset: str | None = None, on_error: str = "fail",
             **unused) -> ImageDataset:
    """An IDX folder (train-* and t10k-* files). fashion=True uses Fashion-MNIST class names and
    source_dataset; None guesses from the folder name ('fashion' -> Fashion-MNIST, else MNIST digits)."""
    _no_options("IDX", unused)
    root = Path(path or FMNIST_DEFAULT).expanduser()
    if not root.is_dir():
        raise DivergentError(
            f"IDX folder {root} does not exist",
            "install Fashion-MNIST (apt-get install dataset-fashion-mnist) or pass 'fashion-mnist:/folder/with/idx/files'",
        )
    if fashion is None:
        fashion = "fashion" in str(root).lower()
    default_classes = FMNIST_CLASSES if fashion else MNIST_CLASSES
    class_names = list(classes) if classes is not None else list(default_classes)
    present = tuple(p for p, official in PARTS.items() if _find(root, f"{p}-labels-idx1-ubyte"))
    plan = official_plan(split, tuple(PARTS[p] for p in present))
    if not plan:
        raise empty_split_error(str(root), split, f"the folder has only {', '.join(present) or 'no'} IDX files")
    inverse = {v: k for k, v in PARTS.items()}
    def load(part):
        ipart = inverse[part]
        imgs = _load(root, ipart, "images")
        labs = _load(root, ipart, "labels").astype(np.int64)
        if imgs.ndim != 3 or imgs.shape[0] != labs.shape[0]:
            raise DivergentError(f"{root}: {ipart} images {imgs.shape} and labels {labs.shape} do not match", "re-download the dataset files")
        if labs.size and (labs.min() < 0 or labs.max() >= len(class_names)):
            raise DivergentError(f"{root}: labels reach {labs.max()} but there are {len(class_names)} class names", "pass classes= with one name per label")
        return imgs, labs, ipart, f"{root}/{ipart}-images"

    f = stack_plan(plan, load, seed=seed)
    from ..cards import canonical_dataset

    return ImageDataset(
        name=name or ("fashion-mnist" if fashion else root.name),
        split=split,
        source_dataset=canonical_dataset(source_dataset or ("fashion-mnist" if fashion else "mnist")),
        ids=f["ids"],
        labels=f["labels"],
        class_names=class_names,
        reader=f["reader"],
        index=f["index"],
        root=str(root),
        meta={"source": "idx", "parts": [p for p, _ in plan], "rule": f["rule"], "seed": seed},
    )


def _no_options(what: str, unused: dict) -> None:
    if unused:
        raise DivergentError(f"{what} sources take no option(s) {', '.join(sorted(unused))}", "remove them (see docs/datasets.md for each source's options)")
