"""Array-backed sources: scikit-learn digits, .npz files and torchvision datasets already on disk."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..cards import canonical_dataset
from ..conventions import SPLIT_SEED
from ..errors import DivergentError, require, unknown
from .base import ArrayReader, ConcatReader, ImageDataset
from .splitting import empty_split_error, halves_of, official_plan, thirds_of

DIGITS_CLASSES = tuple(str(d) for d in range(10))
_DIGITS: tuple[np.ndarray, np.ndarray] | None = None


def _no_options(what: str, unused: dict) -> None:
    if unused:
        raise DivergentError(f"{what} sources take no option(s) {', '.join(sorted(unused))}", "see docs/datasets.md for each source's options")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as uint8 (N, 8, 8) in 0-255 (round(v * 255 / 16)) and int64 labels."""
    global _DIGITS
    if _DIGITS is None:
        # the CSV scikit-learn ships (what load_digits reads), without importing all of sklearn
        spec = importlib.util.find_spec("sklearn")
        csv = Path(next(iter(spec.submodule_search_locations)), "datasets", "data", "digits.csv.gz") if spec else None
        if csv is not None and csv.is_file():
            table = np.loadtxt(csv, delimiter=",")
            pixels, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
        else:
            d = require("sklearn.datasets", "test").load_digits()
            pixels, target = d.images, d.target
        images = np.rint(np.asarray(pixels, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
        images.setflags(write=False)
        _DIGITS = images, np.asarray(target, dtype=np.int64)
    return _DIGITS


def open_digits(split: str, *, seed: int = SPLIT_SEED, name: str | None = None, on_error: str = "fail", **unused) -> ImageDataset:
    """scikit-learn digits; no official split, so stratified_thirds(labels, seed)."""
    _no_options("digits", unused)
    images, labels = digits_arrays()
    pos = thirds_of(labels, split, seed=seed)
    return ImageDataset(
        name=name or "digits", split=split, source_dataset="digits",
        ids=np.array([f"digits/{k:04d}" for k in pos]), labels=labels[pos], class_names=list(DIGITS_CLASSES),
        reader=ArrayReader(images, origin="sklearn.datasets.load_digits"), index=pos, root="sklearn:digits",
        meta={"source": "digits", "rule": f"stratified_thirds(all)[{split}]", "seed": seed},
    )


def open_npz(path: str, split: str, *, seed: int = SPLIT_SEED, name: str | None = None, source_dataset: str | None = None,
             classes=None, on_error: str = "fail", **unused) -> ImageDataset:
    """An .npz with images (N,H,W[,C]) uint8, labels (N,) or (N,C) multi-hot, optional ids,
    class_names and splits ((N,) str of train/val/test: then the official-split rule applies;
    otherwise stratified_thirds)."""
    _no_options("npz", unused)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DivergentError(f"npz file {path!r} does not exist", "check the path")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DivergentError(f"cannot read {p} as .npz: {exc}", "write it with numpy.savez(path, images=..., labels=...)") from exc
    for key in ("images", "labels"):
        if key not in data:
            raise DivergentError(f"{p} has no {key!r} array (it has {', '.join(sorted(data)) or 'none'})",
                                 "save it with numpy.savez(path, images=uint8 (N,H,W[,C]), labels=(N,) or (N,C))")
    images, labels = data["images"], data["labels"]
    n = images.shape[0]
    if labels.shape[0] != n:
        raise DivergentError(f"{p}: {n} images but {labels.shape[0]} labels", "give one label (row) per image")
    multilabel = labels.ndim == 2
    if not multilabel:
        if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
            raise DivergentError(f"{p}: labels must be non-negative integers", "store class indices 0..C-1 (or an (N, C) multi-hot array)")
        labels = labels.astype(np.int64)
    elif not np.isin(labels, (0, 1)).all():
        raise DivergentError(f"{p}: multi-label labels must be 0/1", "store an (N, C) multi-hot array")
    ids = data["ids"].astype(str) if "ids" in data else np.array([f"{p.stem}/{k:0{max(4, len(str(n - 1)))}d}" for k in range(n)])
    if len(set(ids.tolist())) != n:
        raise DivergentError(f"{p}: the ids array repeats an id", "give each image a unique id")
    if classes is not None:
        class_names = [str(c) for c in classes]
    elif "class_names" in data:
        class_names = [str(c) for c in data["class_names"]]
    else:
        k = labels.shape[1] if multilabel else (int(labels.max()) + 1 if n else 0)
        class_names = [str(c) for c in range(k)]
    if not multilabel and n and labels.max() >= len(class_names):
        raise DivergentError(f"{p}: label {labels.max()} but only {len(class_names)} class names", "give one class name per class")
    reader = ArrayReader(images, origin=str(p))
    if "splits" in data:
        tags = np.array([{"training": "train", "valid": "val", "validation": "val", "holdout": "val"}.get(t, t) for t in data["splits"].astype(str)])
        bad = sorted(set(tags.tolist()) - {"train", "val", "test"})
        if bad:
            raise DivergentError(f"{p}: unknown split tag {bad[0]!r}", "tag each image train, val or test")
        plan = official_plan(split, tuple(sorted(set(tags.tolist()))))
        if not plan:
            raise empty_split_error(str(p), split)
        pos_l = []
        for part, rule in plan:
            members = np.flatnonzero(tags == part)
            pos_l.append(members if rule is None else members[halves_of(labels[members], rule, seed=seed)])
        pos = np.concatenate(pos_l)
        rule_text = " + ".join(pt if r is None else f"stratified_halves({pt})[{r}]" for pt, r in plan)
    else:
        pos = thirds_of(labels, split, seed=seed)
        rule_text = f"stratified_thirds(all)[{split}]"
    default = name or p.stem
    return ImageDataset(
        name=default, split=split, source_dataset=canonical_dataset(source_dataset or default),
        ids=ids[pos], labels=labels[pos], class_names=class_names, reader=reader, index=pos,
        multilabel=multilabel, root=str(p), meta={"source": "npz", "rule": rule_text, "seed": seed},
    )


#: torchvision class name -> (canonical dataset, how to read it)
TORCHVISION = {"CIFAR10": "cifar10", "CIFAR100": "cifar100", "FashionMNIST": "fashion-mnist", "MNIST": "mnist", "KMNIST": "kmnist"}


def open_torchvision(spec: str, split: str, *, seed: int = SPLIT_SEED, name: str | None = None, on_error: str = "fail",
                     **unused) -> ImageDataset:
    """'NAME@ROOT' for a torchvision dataset already downloaded under ROOT (download=False).

    ids: 'train/00000' ... and 'test/00000' ... in torchvision's order (MNIST-style: 't10k/...')."""
    _no_options("torchvision", unused)
    if "@" not in spec:
        raise DivergentError(f"torchvision source {spec!r} has no root", "write it as 'torchvision:CIFAR10@/path/to/root'")
    cls_name, root = spec.split("@", 1)
    if cls_name not in TORCHVISION:
        raise unknown("torchvision dataset", cls_name, TORCHVISION)
    tvd = require("torchvision.datasets", "torch")
    cls = getattr(tvd, cls_name)
    mnist_like = cls_name in ("FashionMNIST", "MNIST", "KMNIST")
    test_tag = "t10k" if mnist_like else "test"
    plan = official_plan(split, ("train", "test"))
    readers, ids, labels, index, offset, class_names = [], [], [], [], 0, None
    for part, rule in plan:
        try:
            ds = cls(root=root, train=part == "train", download=False)
        except RuntimeError as exc:
            raise DivergentError(
                f"torchvision {cls_name} is not under {root!r} ({exc})",
                f"download it once with torchvision.datasets.{cls_name}(root={root!r}, download=True), or fix the root",
            ) from exc
        data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
        targets = np.asarray(ds.targets.numpy() if hasattr(ds.targets, "numpy") else ds.targets, dtype=np.int64)
        class_names = list(ds.classes)
        pos = np.arange(targets.size) if rule is None else halves_of(targets, rule, seed=seed)
        tag = "train" if part == "train" else test_tag
        readers.append(ArrayReader(np.asarray(data, dtype=np.uint8), origin=f"{root}:{cls_name}/{tag}"))
        ids.append(np.array([f"{tag}/{k:05d}" for k in pos]))
        labels.append(targets[pos])
        index.append(pos + offset)
        offset += targets.size
    return ImageDataset(
        name=name or canonical_dataset(TORCHVISION[cls_name]), split=split, source_dataset=TORCHVISION[cls_name],
        ids=np.concatenate(ids), labels=np.concatenate(labels), class_names=class_names or [],
        reader=readers[0] if len(readers) == 1 else ConcatReader(readers), index=np.concatenate(index), root=root,
        meta={"source": "torchvision", "dataset": cls_name, "rule": " + ".join(p if r is None else f"stratified_halves({p})[{r}]" for p, r in plan), "seed": seed},
    )
