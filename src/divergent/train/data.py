"""Training images for the zoo: only the `train` split, as uint8 arrays in memory, plus subset rules.

Fashion-MNIST comes from the IDX files (`/usr/share/datasets/fashion-mnist`, Debian
`dataset-fashion-mnist`); CIFAR-10 from the JPEG ImageFolder tarball in `../shared/data/cifar10-jpeg`
(or an extracted ImageFolder tree). Only the official training files are ever opened here:
the holdout and test halves are cut from the official *test* set, which this module never reads.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import TRAIN
from ..errors import DivergentError

#: seed of the permutation of the train split that subsets and size limits are cut from
#: (fixed, independent of the model seed, so Reinit models see the same images)
DATA_SEED = 0
FMNIST_DIR = Path(os.environ.get("DIVERGENT_FMNIST", "/usr/share/datasets/fashion-mnist"))
CIFAR_DIRS = [Path(p) for p in os.environ.get("DIVERGENT_CIFAR10", "").split(os.pathsep) if p] + [
    Path(__file__).resolve().parents[3].parent / "shared" / "data" / "cifar10-jpeg",
]
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: per-dataset input geometry and normalisation
DATASETS = {
    "fashion-mnist": dict(channels=1, size=28, n_classes=10, mean=(0.2860,), std=(0.3530,)),
    "cifar10": dict(channels=3, size=32, n_classes=10, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2470, 0.2435, 0.2616)),
}


@dataclass
class TrainImages:
    """uint8 images (N, H, W) or (N, H, W, C), int64 labels, example ids; always the `train` split."""

    dataset: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


#: hook for tests: every split name requested through `load_split` is appended here
REQUESTED_SPLITS: list[tuple[str, str]] = []
_CACHE: dict[tuple[str, str], TrainImages] = {}


def load_split(dataset: str, split: str = TRAIN) -> TrainImages:
    """The training images of `dataset`; any split other than `train` is refused."""
    REQUESTED_SPLITS.append((dataset, split))
    if split != TRAIN:
        raise DivergentError(
            f"the zoo trainer only trains on the {TRAIN!r} split, not {split!r}",
            "holdout and test are for temperatures, selection and evaluation (docs/conventions.md)",
        )
    key = (dataset, split)
    if key not in _CACHE:
        if dataset == "fashion-mnist":
            _CACHE[key] = _fmnist_train()
        elif dataset == "cifar10":
            _CACHE[key] = _cifar_train()
        else:
            raise DivergentError(f"no training data reader for dataset {dataset!r}",
                                 f"use one of {', '.join(DATASETS)}")
    return _CACHE[key]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX (optionally gzipped) file into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DivergentError(f"{path} is not an unsigned-byte IDX file", "re-download the dataset")
    nd = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * nd)
    if arr.size != int(np.prod(shape)):
        raise DivergentError(f"{path} is truncated", "re-download the dataset")
    return arr.reshape(shape)


def _fmnist_train() -> TrainImages:
    img = FMNIST_DIR / "train-images-idx3-ubyte.gz"
    lab = FMNIST_DIR / "train-labels-idx1-ubyte.gz"
    if not img.exists() or not lab.exists():
        raise DivergentError(f"Fashion-MNIST training files not found under {FMNIST_DIR}",
                             "apt-get install dataset-fashion-mnist, or set DIVERGENT_FMNIST")
    x, y = read_idx(img), read_idx(lab).astype(np.int64)
    ids = np.array([f"train/{i:05d}" for i in range(len(y))])
    return TrainImages("fashion-mnist", TRAIN, np.ascontiguousarray(x), y, ids)


def _cifar_train() -> TrainImages:
    """Decode the 50,000 training JPEGs once; cached as .npz beside nothing shared (in ~/.cache)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "divergent" / "cifar10-jpeg-train.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return TrainImages("cifar10", TRAIN, z["images"], z["labels"], z["ids"])
    from PIL import Image
    import io
    import tarfile

    items: list[tuple[str, bytes]] = []
    for root in CIFAR_DIRS:
        if (root / "train").is_dir():
            items = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted((root / "train").rglob("*.jpg"))]
            break
        if (root / "train.tar.gz").exists():
            with tarfile.open(root / "train.tar.gz") as tf:
                for m in tf:
                    if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                        name = m.name.lstrip("./")
                        items.append((name, tf.extractfile(m).read()))
            break
    if not items:
        raise DivergentError("CIFAR-10 JPEG training set not found",
                             f"put train.tar.gz or train/<class>/*.jpg in one of {[str(p) for p in CIFAR_DIRS]} "
                             "or set DIVERGENT_CIFAR10")
    items.sort(key=lambda t: t[0])
    images = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for _, b in items])
    ids = np.array([n for n, _ in items])
    labels = np.array([CIFAR_CLASSES.index(n.split("/")[-2]) for n in ids], dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels, ids=ids)
    os.replace(tmp, cache)
    return TrainImages("cifar10", TRAIN, images, labels, ids)


def subset_indices(n: int, subset: tuple[int, int] | None, limit: int | None) -> np.ndarray:
    """Indices into the train split: part `subset[0]` of `subset[1]` disjoint parts of a seeded
    permutation (DATA_SEED), then the first `limit` of them; returned sorted (source order)."""
    perm = np.random.default_rng(DATA_SEED).permutation(n)
    if subset is not None:
        part, parts = subset
        if not (0 <= part < parts):
            raise DivergentError(f"subset part {part} is outside 0..{parts - 1}", "use 0 <= part < parts")
        perm = perm[part::parts]
    if limit is not None:
        if limit > perm.size:
            raise DivergentError(f"limit {limit} exceeds the {perm.size} images available",
                                 f"use a limit of at most {perm.size}")
        perm = perm[:limit]
    return np.sort(perm)
