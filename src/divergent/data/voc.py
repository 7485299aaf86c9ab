"""Pascal VOC layout reader: JPEGImages/ + ImageSets/Main/<class>_<split>.txt, multi-label with a difficult mask.

Each ImageSets/Main/<class>_<set>.txt line is '<image id> <flag>' with flag 1 (the image holds
the class), -1 (it does not) or 0 (only 'difficult' instances). labels[i, c] = 1 for flag 1;
difficult[i, c] = True for flag 0 (label 0): standard VOC evaluation ignores those entries.
Ids are VOC's own image ids ('000005').
Splits (as Kornblith et al. 2019 for VOC2007): train = 'train', holdout = 'val', test = 'test';
'trainval' and 'val' are also accepted, 'official-test' = 'test', 'all' = trainval + test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DivergentError, suggest
from .base import ImageDataset
from .folder import FileReader

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: extra split names VOC accepts
VOC_SPLITS = ("val", "trainval")
#: our split name -> VOC image sets
_SETS = {"train": ["train"], "holdout": ["val"], "val": ["val"], "test": ["test"], "official-test": ["test"],
         "trainval": ["trainval"], "all": ["trainval", "test"]}


def _find_root(path: Path) -> Path | None:
    if (path / "JPEGImages").is_dir() and (path / "ImageSets" / "Main").is_dir():
        return path
    subs = [p for p in sorted(path.iterdir()) if p.is_dir()] if path.is_dir() else []
    if len(subs) == 1:  # VOCdevkit/VOC2007
        return _find_root(subs[0])
    return None


def is_voc(path: Path) -> bool:
    try:
        return _find_root(path) is not None
    except OSError:
        return False


def _set_files(main: Path, image_set: str) -> dict[str, Path]:
    suffix = f"_{image_set}.txt"
    return {p.name[: -len(suffix)]: p for p in main.glob(f"*{suffix}")}


def _read_flags(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) != 2 or f[1] not in ("1", "-1", "0"):
            raise DivergentError(f"{path}:{ln}: expected '<image id> <1|-1|0>', got {line!r}", "fix or regenerate the ImageSets file")
        out[f[0]] = int(f[1])
    return out


def open_voc(path: str, split: str, *, classes=None, name: str | None = None, source_dataset: str | None = None,
             seed: int = 0, on_error: str = "fail", image_ext: str = ".jpg", **unused) -> ImageDataset:
    """A Pascal VOC directory (or a VOCdevkit holding one VOC20xx folder)."""
    if unused:
        raise DivergentError(f"VOC sources take no option(s) {', '.join(sorted(unused))}", "use classes=, name=, source_dataset=, image_ext=")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DivergentError(f"VOC directory {path!r} does not exist", "check the path")
    root = _find_root(p)
    if root is None:
        raise DivergentError(f"{p} is not a Pascal VOC directory", "it needs JPEGImages/ and ImageSets/Main/<class>_<split>.txt")
    main = root / "ImageSets" / "Main"
    sets = _SETS[split]
    ids: list[str] = []
    flags: dict[str, dict[str, int]] = {}
    class_names: list[str] | None = list(classes) if classes is not None else None
    for image_set in sets:
        files = _set_files(main, image_set)
        if not files:
            have = sorted({q.stem.rsplit("_", 1)[-1] for q in main.glob("*_*.txt")})
            raise DivergentError(
                f"{root} has no ImageSets/Main/<class>_{image_set}.txt files (split {split!r})",
                f"this VOC copy holds image sets {', '.join(have) or '(none)'}; download the {image_set} part or choose another split",
            )
        if class_names is None:
            class_names = list(VOC_CLASSES) if set(VOC_CLASSES) <= set(files) else sorted(files)
        missing = [c for c in class_names if c not in files]
        if missing:
            raise DivergentError(
                f"{main} has no {missing[0]}_{image_set}.txt" + (f" (and {len(missing) - 1} more classes)" if len(missing) > 1 else ""),
                f"restore the file, or pass classes= without it ({suggest(missing[0], files, 'class')})",
            )
        per_class = {c: _read_flags(files[c]) for c in class_names}
        listed = main / f"{image_set}.txt"
        set_ids = [ln.split()[0] for ln in listed.read_text().splitlines() if ln.strip()] if listed.is_file() else \
            sorted(set().union(*[set(v) for v in per_class.values()]))
        for c, fl in per_class.items():
            flags.setdefault(c, {}).update(fl)
        ids += set_ids
    if class_names is None or len(set(ids)) != len(ids):
        raise DivergentError(f"{root}: an image id is listed twice in split {split!r}", "fix the ImageSets files")
    if not ids:
        raise DivergentError(f"split {split!r} of {root} has no images", "check the ImageSets files")
    n, k = len(ids), len(class_names)
    labels = np.zeros((n, k), dtype=np.uint8)
    difficult = np.zeros((n, k), dtype=bool)
    for c_i, c in enumerate(class_names):
        fl = flags[c]
        absent = [i for i in ids if i not in fl]
        if absent:
            raise DivergentError(f"image {absent[0]!r} is missing from {c}_*.txt of {root}", "regenerate the ImageSets files")
        col = np.array([fl[i] for i in ids])
        labels[:, c_i] = col == 1
        difficult[:, c_i] = col == 0
    rels = np.array([f"JPEGImages/{i}{image_ext}" for i in ids], dtype=str)
    for i, r in zip(ids, rels):
        if not (root / r).is_file():
            raise DivergentError(f"image {i!r} listed in ImageSets has no file {root / r}", "restore JPEGImages/ or fix the ImageSets files")
    from ..cards import canonical_dataset

    default = root.name.lower() if root.name.lower().startswith("voc") else "voc"
    return ImageDataset(
        name=name or default, split=split, source_dataset=canonical_dataset(source_dataset or default),
        ids=np.array(ids, dtype=str), labels=labels, class_names=class_names, reader=FileReader(str(root), rels),
        multilabel=True, difficult=difficult, root=str(root),
        meta={"source": "voc", "image_sets": sets, "rule": "+".join(sets)},
    )
