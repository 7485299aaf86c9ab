"""Shifted splits: ImageNet-C corruptions of a split's native images, and pre-generated -C files.

A shifted split is named ``<split>~<corruption>-<severity>`` (``test~gaussian_noise-3``) and has
the same ids and labels as ``<split>``. Its pixels are

* generated (:func:`shifted`): the corruption functions of ``imagecorruptions-imaug`` applied to
  the native image, before any model's preprocessing, so every model sees the same pixels.
  Deterministic per (example id, corruption, severity, seed): numpy's global generator is seeded
  per image from a hash of the four (and restored afterwards), and the corruptions that take a
  ``seed=`` (impulse_noise, glass_blur) get the same number. Images under 32 px (Fashion-MNIST)
  go through the functions directly (``corrupt()`` refuses them); a grayscale image is stacked to
  3 channels, corrupted, and converted back to gray (PIL's ``L``: ITU-R 601-2 luma). A split is
  generated once and cached under ``~/.cache/divergent/shifted/`` (``$XDG_CACHE_HOME``), beside
  the decoded-pixel caches, keyed by the dataset, its ids, a few source pixels, the shift and the
  library version: every model and every later run reads the cached pixels.
* or read from pre-generated files (:func:`pregenerated`): CIFAR-10-C (``<corruption>.npy``,
  50,000 = 5 severities x 10,000 in the official test order, and ``labels.npy``) or ImageNet-C
  (``<corruption>/<severity>/<wnid>/<file>.JPEG``), matched to the base split's ids.

The shift's record (:func:`shift_meta`: corruption, severity, seed, generator and library
version) goes into the dataset's ``meta["shift"]`` and the store's split metadata; a later
extraction whose record differs is refused (:func:`check_split_meta`).
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DivergentError, suggest
from .base import ImageDataset

#: separates a split from its shift in a split name
SEP = "~"
#: every corruption of imagecorruptions, in its order: 15 ImageNet-C benchmark corruptions, then the 4 extra ones
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
#: named groups usable in a shift spec (imagecorruptions.get_corruption_names)
GROUPS = {
    "all": CORRUPTIONS, "common": CORRUPTIONS[:15], "validation": CORRUPTIONS[15:], "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7], "weather": CORRUPTIONS[7:11], "digital": CORRUPTIONS[11:15],
}
SEVERITIES = (1, 2, 3, 4, 5)
#: corruptions whose function takes a seed= argument (its own generator, not numpy's global one)
SEEDED = ("impulse_noise", "glass_blur")
PACKAGE = "imagecorruptions-imaug"
PACKAGE_VERSION = "1.1.5"
INSTALL = (f"pip install 'divergent[shift]' && pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} "
           "(--no-deps: it asks for opencv-python, which clashes with nudenet's opencv-python-headless; docs/shift.md)")
#: pre-generated formats
CIFAR_C, IMAGENET_C = "cifar10-c", "imagenet-c"


@dataclass(frozen=True)
class Shift:
    """One corruption at one severity (1-5), with the seed of its randomness."""

    corruption: str
    severity: int
    seed: int = 0

    def __post_init__(self):
        if self.corruption not in CORRUPTIONS:
            raise DivergentError(f"unknown corruption {self.corruption!r}", suggest(str(self.corruption), CORRUPTIONS, "corruption"))
        if isinstance(self.severity, bool) or not isinstance(self.severity, (int, np.integer)) or self.severity not in SEVERITIES:
            raise DivergentError(f"severity {self.severity!r} of {self.corruption} is not one of 1-5",
                                 "give a severity 1, 2, 3, 4 or 5 (e.g. gaussian_noise:3)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= int(self.seed) < 2**63:
            raise DivergentError(f"shift seed {self.seed!r} is not a non-negative integer", "pass e.g. seed=0")
        object.__setattr__(self, "severity", int(self.severity))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def name(self) -> str:
        return f"{self.corruption}-{self.severity}"

    def split_name(self, base: str) -> str:
        """The shifted split's name: ``<base>~<corruption>-<severity>``."""
        if SEP in base:
            raise DivergentError(f"split {base!r} is already shifted", f"shift an unshifted split (e.g. {base.split(SEP, 1)[0]!r})")
        return f"{base}{SEP}{self.corruption}-{self.severity}"


def _severities(text: str, where: str) -> list[int]:
    out: list[int] = []
    for tok in text.split(","):
        tok = tok.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", tok)
        if not m:
            raise DivergentError(f"severity {tok!r} in shift {where!r} is not a number or a range",
                                 "give severities 1-5 as numbers or ranges, e.g. gaussian_noise:3, '*noise*:1,5', all:1-5")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if not (lo in SEVERITIES and hi in SEVERITIES and lo <= hi):
            raise DivergentError(f"severity {tok!r} in shift {where!r} is outside 1-5", "severities run from 1 to 5")
        out += [s for s in range(lo, hi + 1) if s not in out]
    return out


def _corruptions(pattern: str, where: str) -> list[str]:
    pattern = pattern.strip()
    if pattern in GROUPS:
        return list(GROUPS[pattern])
    if pattern in CORRUPTIONS:
        return [pattern]
    if any(ch in pattern for ch in "*?["):
        hits = [c for c in CORRUPTIONS if fnmatch.fnmatchcase(c, pattern)]
        if hits:
            return hits
        raise DivergentError(f"no corruption matches {pattern!r} (in shift {where!r})",
                             f"corruptions: {', '.join(CORRUPTIONS)}; groups: {', '.join(GROUPS)}")
    raise DivergentError(f"unknown corruption {pattern!r} (in shift {where!r})",
                         suggest(pattern, (*CORRUPTIONS, *GROUPS), "corruption"))


def _split_items(spec: str) -> list[str]:
    """'a:1,b:2,5' -> ['a:1', 'b:2,5']: a comma followed by a severity continues the item before it."""
    items: list[str] = []
    for tok in re.split(r"[;\s]*,[;\s]*|[;\s]+", spec.strip()):
        if not tok:
            continue
        if items and re.fullmatch(r"\d+(-\d+)?", tok):
            items[-1] += "," + tok
        else:
            items.append(tok)
    return items


def parse_shifts(spec, *, seed: int = 0) -> list[Shift]:
    """Shifts from a spec: ``gaussian_noise:3``, ``'gaussian_noise:3,shot_noise:1-2'``, a list of
    such strings, patterns (``all:3``, ``'*noise*:1,5'``, groups common/noise/blur/weather/digital/
    validation), or Shift objects. Order kept, duplicates dropped; unknown names suggest the closest."""
    if isinstance(spec, Shift):
        return [spec]
    if isinstance(spec, str):
        items = _split_items(spec)
    elif isinstance(spec, (list, tuple)):
        items = []
        for s in spec:
            if isinstance(s, Shift):
                items.append(s)
            elif isinstance(s, str):
                items += _split_items(s)
            else:
                raise DivergentError(f"a shift must be a string like 'gaussian_noise:3', not {type(s).__name__}",
                                     "pass e.g. ['gaussian_noise:3', 'blur:1,5']")
    else:
        raise DivergentError(f"shifts must be a string or a list of strings, not {type(spec).__name__}",
                             "pass e.g. 'gaussian_noise:3' or ['all:3']")
    if not items:
        raise DivergentError("no shift given", "pass e.g. gaussian_noise:3, '*noise*:1,5' or all:3")
    out: list[Shift] = []
    for item in items:
        if isinstance(item, Shift):
            found = [item]
        else:
            if ":" not in item:
                name = item.rsplit("-", 1)
                if len(name) == 2 and name[0] in CORRUPTIONS and name[1].isdigit():  # gaussian_noise-3 (a split's suffix)
                    item = f"{name[0]}:{name[1]}"
                else:
                    _corruptions(item, item)  # a typo gets its did-you-mean first
                    raise DivergentError(f"shift {item!r} gives no severity",
                                         f"add severities after a colon, e.g. {item}:3 or {item}:1-5")
            pattern, sev = item.rsplit(":", 1)
            found = [Shift(c, s, seed) for c in _corruptions(pattern, item) for s in _severities(sev, item)]
        out += [s for s in found if s not in out]
    return out


def parse_split_name(name: str) -> tuple[str, Shift | None]:
    """``'test~gaussian_noise-3'`` -> ``('test', Shift('gaussian_noise', 3))``; ``'test'`` -> ``('test', None)``.

    The seed is not part of the name (it is in the split's metadata): the Shift has seed 0."""
    if SEP not in name:
        return name, None
    base, rest = name.split(SEP, 1)
    m = re.fullmatch(r"(.+)-(\d)", rest)
    if not base or not m or m[1] not in CORRUPTIONS:
        raise DivergentError(f"split {name!r} is not a shifted split name <split>~<corruption>-<severity>",
                             f"e.g. test~gaussian_noise-3; corruptions: {suggest(m[1] if m else rest, CORRUPTIONS, 'corruption')}")
    return base, Shift(m[1], int(m[2]))


# ----------------------------------------------------------------------------- the library
def library():
    """The imagecorruptions module (from imagecorruptions-imaug), or a DivergentError with the pip command."""
    try:
        import imagecorruptions
    except ImportError as exc:
        from ..errors import MissingDependencyError

        raise MissingDependencyError(f"the corruption package {PACKAGE} is not installed ({exc})", INSTALL) from exc
    return imagecorruptions


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        library()  # the module is missing: say how to install it
        return "unknown"


def shift_meta(shift: Shift, *, pregenerated: str | None = None) -> dict[str, Any]:
    """The record kept with a shifted split; two extractions into one split must have equal records."""
    if pregenerated is not None:
        return {"corruption": shift.corruption, "severity": shift.severity, "seed": None,
                "generator": "pregenerated", "format": pregenerated}
    return {"corruption": shift.corruption, "severity": shift.severity, "seed": shift.seed,
            "generator": PACKAGE, "version": library_version()}


#: the fields of the record that must agree for two extractions to share a split
_MATCH = ("corruption", "severity", "seed", "generator", "version", "format")


def check_split_meta(split: str, stored: dict | None, wanted: dict) -> None:
    """Refuse to add to a stored shifted split whose record (seed, library version, ...) differs."""
    stored = dict(stored or {})
    if not stored:
        raise DivergentError(f"split {split!r} of the store has no shift record (it was not made by a shifted extraction)",
                             "extract the shift into a new store, or remove that split")
    diff = [k for k in _MATCH if stored.get(k) != wanted.get(k)]
    if diff:
        shown = "; ".join(f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}" for k in diff)
        raise DivergentError(
            f"split {split!r} was made with another corruption record ({shown}); its pixels would differ",
            "extract with the stored seed and library version (e.g. --shift-seed "
            f"{stored.get('seed')}, {PACKAGE}=={stored.get('version')}), or into a new store")


# ----------------------------------------------------------------------------- one image
def image_seed(example_id: str, shift: Shift) -> int:
    """The 32-bit seed of one image's corruption: a hash of (id, corruption, severity, seed)."""
    from .._files import sha256_bytes

    key = json.dumps([str(example_id), shift.corruption, shift.severity, shift.seed]).encode()
    return int(sha256_bytes(key)[:8], 16)


def corrupt_image(image: np.ndarray, shift: Shift, example_id: str) -> np.ndarray:
    """The corrupted copy of one uint8 image (H, W) or (H, W, 3), same shape, deterministic per
    (example id, shift). numpy's global generator is restored afterwards."""
    from PIL import Image

    fn = library().corruption_dict[shift.corruption]
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise DivergentError(f"image {example_id!r} is {img.dtype} {img.shape}, not uint8 (H, W) or (H, W, 3)",
                             "shift images as read by divergent.data (mode L or RGB)")
    gray = img.ndim == 2 or img.shape[2] == 1
    x = np.stack((img.reshape(img.shape[:2]),) * 3, axis=-1) if gray else np.ascontiguousarray(img)
    seed = image_seed(example_id, shift)
    kw = {"seed": seed} if shift.corruption in SEEDED else {}
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        out = np.uint8(fn(Image.fromarray(x), shift.severity, **kw))  # as imagecorruptions.corrupt() converts
    finally:
        np.random.set_state(state)
    if out.shape != x.shape:
        raise DivergentError(f"{shift.corruption} turned image {example_id!r} of shape {x.shape} into {out.shape}",
                             "this corruption does not support images of this size; choose another")
    if gray:
        out = np.asarray(Image.fromarray(out).convert("L"))
    return out


# ----------------------------------------------------------------------------- readers
class ShiftedReader:
    """Cached corrupted pixels: one flat uint8 file (the images' bytes end to end) with each image's
    shape; memory-mapped on first access, viewed as one (N, H, W[, 3]) array when every image has
    the same size. Pickles as its folder (cheap for DataLoader workers)."""

    kind = "shifted"
    decodes = False

    def __init__(self, folder: str):
        self.folder = str(folder)
        self._flat = self._shapes = self._offsets = self._stack = None

    def __getstate__(self):
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.__init__(state["folder"])

    def _open(self):
        if self._shapes is None:
            f = Path(self.folder)
            self._shapes = np.load(f / "shapes.npy")
            self._offsets = np.load(f / "offsets.npy")
            self._flat = np.memmap(f / "pixels.u8", dtype=np.uint8, mode="r") if self._offsets[-1] else np.zeros(0, np.uint8)
            if len(self._shapes) and (self._shapes == self._shapes[0]).all():
                self._stack = self._flat.reshape(len(self._shapes), *self._shape(0))
        return self._flat

    def _shape(self, j: int) -> tuple[int, ...]:
        return tuple(int(s) for s in self._shapes[j] if s)

    def __len__(self) -> int:
        self._open()
        return len(self._shapes)

    def raw(self, j: int) -> np.ndarray:
        flat = self._open()
        return np.asarray(flat[self._offsets[j]:self._offsets[j + 1]]).reshape(self._shape(j))

    def image(self, j: int):
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.raw(j)))

    def encoded(self, j: int) -> None:
        return None

    def where(self, j: int) -> str:
        return f"{self.folder}[{j}]"

    def array(self, index: np.ndarray) -> np.ndarray | None:
        self._open()
        return None if self._stack is None else np.asarray(self._stack[np.asarray(index)])


class NpyRowsReader:
    """Rows of one large .npy file (CIFAR-10-C), memory-mapped on first access; pickles as its path."""

    kind = "npy"
    decodes = False

    def __init__(self, path: str):
        self.path = str(path)
        self._arr = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _open(self):
        if self._arr is None:
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def __len__(self) -> int:
        return int(self._open().shape[0])

    def raw(self, j: int) -> np.ndarray:
        return np.asarray(self._open()[j])

    def image(self, j: int):
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.raw(j)))

    def encoded(self, j: int) -> None:
        return None

    def where(self, j: int) -> str:
        return f"{self.path}[{j}]"

    def array(self, index: np.ndarray) -> np.ndarray | None:
        return np.asarray(self._open()[np.asarray(index)])


def _view(ds: ImageDataset, shift: Shift, reader, index, record: dict) -> ImageDataset:
    """The shifted copy of ds: same ids, labels and classes; pixels from reader; split renamed."""
    return ImageDataset(
        name=ds.name, split=shift.split_name(ds.split), source_dataset=ds.source_dataset, ids=ds.ids,
        labels=ds.labels, class_names=ds.class_names, reader=reader, index=index, multilabel=ds.multilabel,
        difficult=ds.difficult, root=ds.root, meta={**ds.meta, "shift": record}, skipped=ds.skipped, parts=ds.parts)


# ----------------------------------------------------------------------------- generated, cached
def cache_root() -> Path:
    """Where generated shifted splits are cached: ~/.cache/divergent/shifted (XDG_CACHE_HOME)."""
    from .locate import cache_home

    return cache_home() / "divergent" / "shifted"


#: hook for tests: one entry per image generated (not read from the cache)
GENERATED: list[tuple[str, str]] = []


def _cache_key(ds: ImageDataset, record: dict) -> str:
    """A hash of what the cached pixels depend on: the dataset and split, its ids, a few of its
    source pixels (a changed file makes a new entry), and the shift's record."""
    from .._files import canonical_json_sha256, sha256_bytes

    n = len(ds)
    probe = sorted({0, n // 2, n - 1}) if n else []
    pixels = [sha256_bytes(np.ascontiguousarray(ds.raw(i)).tobytes()) + str(np.asarray(ds.raw(i)).shape) for i in probe]
    ident = {"name": ds.name, "split": ds.split, "source_dataset": ds.source_dataset,
             "meta": json.loads(json.dumps(ds.meta, default=str)), "n": n,
             "ids": sha256_bytes("\n".join(map(str, ds.ids)).encode()), "pixels": pixels, "shift": record}
    return canonical_json_sha256(ident)[:20]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "_"


def shifted(ds: ImageDataset, shift: Shift | str, *, progress: bool = False) -> ImageDataset:
    """The corrupted copy of a split (see the module docstring): generated once, cached, then read."""
    if isinstance(shift, str):
        got = parse_shifts(shift)
        if len(got) != 1:
            raise DivergentError(f"{shift!r} names {len(got)} shifts; shifted() makes one", "loop over parse_shifts(spec)")
        shift = got[0]
    if "shift" in ds.meta:
        raise DivergentError(f"{ds.name}/{ds.split} is already shifted", "shift the unshifted split")
    record = shift_meta(shift)
    library()
    folder = cache_root() / _safe(ds.name) / f"{_safe(ds.split)}~{shift.name}-s{shift.seed}-{_cache_key(ds, record)}"
    if not _valid(folder, ds):
        _generate(folder, ds, shift, record, progress)
    return _view(ds, shift, ShiftedReader(str(folder)), None, record)


def _valid(folder: Path, ds: ImageDataset) -> bool:
    try:
        ids = np.load(folder / "ids.npy")
        return np.array_equal(ids, np.asarray(ds.ids, dtype=str)) and (folder / "pixels.u8").is_file()
    except (OSError, ValueError):
        return False


def _generate(folder: Path, ds: ImageDataset, shift: Shift, record: dict, progress: bool) -> None:
    """Corrupt every image of ds into a new cache entry, streamed to disk (memory: one image),
    written atomically (a killed run leaves no entry; a concurrent one's entry is used)."""
    from tqdm.auto import tqdm

    from .._files import atomic_dir, atomic_open, atomic_save_npy, atomic_write_json

    if folder.exists():
        import shutil

        shutil.rmtree(folder, ignore_errors=True)  # an entry whose ids no longer match
    folder.parent.mkdir(parents=True, exist_ok=True)
    shapes = np.zeros((len(ds), 3), dtype=np.int64)
    try:
        with atomic_dir(folder) as tmp:
            with atomic_open(tmp / "pixels.u8") as f:
                for i in tqdm(range(len(ds)), desc=f"{ds.name}/{shift.split_name(ds.split)}", unit="img",
                              disable=None if progress else True):
                    GENERATED.append((str(ds.ids[i]), shift.name))
                    img = corrupt_image(ds.raw(i), shift, str(ds.ids[i]))
                    shapes[i, :img.ndim] = img.shape
                    f.write(np.ascontiguousarray(img).tobytes())
            offsets = np.zeros(len(ds) + 1, dtype=np.int64)
            np.cumsum(np.prod(np.where(shapes > 0, shapes, 1), axis=1), out=offsets[1:])
            atomic_save_npy(tmp / "shapes.npy", shapes)
            atomic_save_npy(tmp / "offsets.npy", offsets)
            atomic_save_npy(tmp / "ids.npy", np.asarray(ds.ids, dtype=str))
            atomic_write_json(tmp / "meta.json", {"dataset": ds.name, "split": ds.split, "n": len(ds), "shift": record,
                                                  "layout": "pixels.u8: uint8 images end to end; shapes.npy; offsets.npy"})
    except OSError:
        if not _valid(folder, ds):  # another process wrote the same entry first: use it
            raise


# ----------------------------------------------------------------------------- pre-generated
def pregenerated_format(root) -> str:
    """'cifar10-c' (labels.npy + <corruption>.npy) or 'imagenet-c' (<corruption>/<severity>/ folders)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DivergentError(f"pre-generated corruption folder {str(root)!r} does not exist", "check the path (--shift-from)")
    if (root / "labels.npy").is_file() and any((root / f"{c}.npy").is_file() for c in CORRUPTIONS):
        return CIFAR_C
    if any((root / c / str(s)).is_dir() for c in CORRUPTIONS for s in SEVERITIES):
        return IMAGENET_C
    raise DivergentError(f"{root} is neither CIFAR-10-C (labels.npy + <corruption>.npy) nor ImageNet-C "
                         "(<corruption>/<severity>/<class>/<image>)", "pass the folder that holds the corruption files")


def pregenerated(ds: ImageDataset, shift: Shift | str, root) -> ImageDataset:
    """The shifted copy of ds read from pre-generated files under root (CIFAR-10-C or ImageNet-C),
    matched by id: CIFAR-10 ids 'test/NNNNN' (the cifar10 source) or the JPEG copy's
    'test/<class>/<NNNN>.jpg' (the NNNN-th image of that class in the official test order);
    ImageNet ids '[...]/<wnid>/<file>' -> <root>/<corruption>/<severity>/<wnid>/<file>."""
    if isinstance(shift, str):
        shift = parse_shifts(shift)[0]
    root = Path(root).expanduser()
    fmt = pregenerated_format(root)
    record = shift_meta(shift, pregenerated=fmt)
    if fmt == CIFAR_C:
        path = root / f"{shift.corruption}.npy"
        if not path.is_file():
            raise DivergentError(f"{root} has no {shift.corruption}.npy", "pick a corruption that the folder holds")
        arr = np.load(path, mmap_mode="r")
        labels_c = np.load(root / "labels.npy", mmap_mode="r")
        n = labels_c.shape[0] // len(SEVERITIES)  # 10,000 in CIFAR-10-C
        if (arr.ndim != 4 or arr.dtype != np.uint8 or labels_c.ndim != 1 or labels_c.shape[0] != arr.shape[0]
                or n * len(SEVERITIES) != arr.shape[0] or n == 0):
            raise DivergentError(f"{path} holds {arr.dtype} {arr.shape} with labels {labels_c.shape}, not 5 severities x N "
                                 "uint8 images (N, H, W, 3) and as many labels (CIFAR-10-C: 50,000)", "re-download CIFAR-10-C")
        official = np.asarray(labels_c[:n], dtype=np.int64)
        pos = _cifar_positions(ds, official)
        if pos.size and pos.max() >= n:
            k = int(np.argmax(pos))
            raise DivergentError(f"{path} holds {n} images per severity; {str(ds.ids[k])!r} is image {pos[k]}",
                                 "read the files made from the whole CIFAR-10 test set")
        rows = (shift.severity - 1) * n + pos
        got = np.asarray(labels_c[rows], dtype=np.int64)
        if not np.array_equal(got, np.asarray(ds.labels)):
            bad = int(np.flatnonzero(got != ds.labels)[0])
            raise DivergentError(f"{path}: the label of {str(ds.ids[bad])!r} is {got[bad]}, the split says {ds.labels[bad]}",
                                 "the files do not belong to this dataset (CIFAR-10 test set, official order)")
        return _view(ds, shift, NpyRowsReader(str(path)), rows, record)
    from .folder import FileReader

    sub = root / shift.corruption / str(shift.severity)
    rels = []
    for i, ex in enumerate(map(str, ds.ids)):
        parts = ex.split("/")
        if len(parts) < 2 or parts[-2] != str(ds.class_names[int(ds.labels[i])]):
            raise DivergentError(f"id {ex!r} does not end in <class folder>/<file> of its class",
                                 "read ImageNet-C against the ImageNet validation folder (<wnid>/<file> ids)")
        rels.append("/".join(parts[-2:]))
    missing = [r for r in rels if not (sub / r).is_file()]
    if missing:
        raise DivergentError(f"{sub} lacks {len(missing)} of the split's {len(rels)} images (e.g. {missing[0]})",
                             "use the ImageNet-C folder made from the same validation images")
    return _view(ds, shift, FileReader(str(sub), np.array(rels, dtype=str)), None, record)


def _cifar_positions(ds: ImageDataset, official: np.ndarray) -> np.ndarray:
    """Each id's position in CIFAR-10's official test order."""
    ids = [str(i) for i in ds.ids]
    m = [re.fullmatch(r"(?:.*/)?test/(\d{5})", i) for i in ids]
    if all(m):
        return np.array([int(x[1]) for x in m], dtype=np.int64)
    jm = [re.fullmatch(r"(?:.*/)?test/([^/]+)/(\d+)\.\w+", i) for i in ids]
    if all(jm):
        by_class = {c: np.flatnonzero(official == k) for k, c in enumerate(ds.class_names)}
        out = np.empty(len(ids), dtype=np.int64)
        for k, x in enumerate(jm):
            where = by_class.get(x[1])
            r = int(x[2])
            if where is None or r >= where.size:
                raise DivergentError(f"id {ids[k]!r} has no image in the CIFAR-10-C files", "check the class folder and number")
            out[k] = where[r]
        return out
    bad = next(i for i, (a, b) in enumerate(zip(m, jm)) if not (a or b))
    raise DivergentError(f"id {ids[bad]!r} is not a CIFAR-10 test id ('test/NNNNN' or 'test/<class>/<NNNN>.jpg')",
                         "read CIFAR-10-C against the cifar10 or cifar10-jpeg source's holdout/test split")


# ----------------------------------------------------------------------------- one entry point
def open_shifted(ds: ImageDataset, shift: Shift, *, shift_from=None, progress: bool = False) -> ImageDataset:
    """The shifted copy of an opened split: from pre-generated files when shift_from is given, else generated."""
    if shift_from is not None:
        return pregenerated(ds, shift, shift_from)
    return shifted(ds, shift, progress=progress)


def expected_meta(shift: Shift, shift_from=None) -> dict:
    """The record a shifted split will carry (checked against the store before any work)."""
    return shift_meta(shift, pregenerated=pregenerated_format(shift_from) if shift_from is not None else None)


__all__ = [
    "CORRUPTIONS", "GROUPS", "SEP", "SEVERITIES", "Shift", "ShiftedReader", "check_split_meta", "corrupt_image",
    "expected_meta", "image_seed", "open_shifted", "parse_shifts", "parse_split_name", "pregenerated", "shift_meta",
    "shifted",
]
