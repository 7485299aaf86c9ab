"""The dataset interface every reader returns: ImageDataset (ids, labels, lazy images) and describe().

An ImageDataset is a *view* (an index array) over a reader that holds the pixels or the
encoded bytes. Readers are plain picklable objects, so a dataset can be handed to
DataLoader worker processes (fork or spawn) as it is.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import DivergentError

#: image file name endings that readers accept (case-insensitive)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
#: single-channel PIL modes that are returned as 'L'; every other mode becomes 'RGB'
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"}


class ImageDecodeError(DivergentError):
    """One image could not be read or decoded; the message names its id and file."""


class Reader(Protocol):
    """What a reader provides to ImageDataset (positions j index the reader's own items)."""

    def __len__(self) -> int: ...
    def image(self, j: int):  # -> PIL.Image.Image, raises any exception on bad data
        ...
    def raw(self, j: int) -> np.ndarray: ...
    def encoded(self, j: int) -> bytes | None: ...
    def where(self, j: int) -> str: ...
    def array(self, index: np.ndarray) -> np.ndarray | None: ...


def normalize_mode(img):
    """Return the image in mode 'L' (single-channel sources) or 'RGB' (everything else)."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in _GRAY_MODES:
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            a = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
            from PIL import Image

            return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return img.convert("L")
    return img.convert("RGB")


def decode_bytes(data: bytes):
    """Decode encoded image bytes to a loaded PIL image in mode 'L' or 'RGB'."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return normalize_mode(im)


def decode_file(path: str):
    """Decode an image file to a loaded PIL image in mode 'L' or 'RGB'."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return normalize_mode(im)


class ArrayReader:
    """Pixels held as one uint8 array (N, H, W) or (N, H, W, C); raw() is a slice, no decoding."""

    kind = "array"
    decodes = False

    def __init__(self, images: np.ndarray, origin: str = ""):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise DivergentError(
                f"images of {origin or 'the array source'} have dtype {images.dtype}, not uint8",
                "store pixels as uint8 0-255 (e.g. np.clip(x * 255, 0, 255).astype(np.uint8))",
            )
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3,)):
            raise DivergentError(
                f"images of {origin or 'the array source'} have shape {images.shape}",
                "pass images as (N, H, W) grayscale or (N, H, W, 3) RGB uint8",
            )
        self.images = images
        self.origin = origin

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def raw(self, j: int) -> np.ndarray:
        return self.images[j]

    def image(self, j: int):
        from PIL import Image

        a = self.images[j]
        return Image.fromarray(np.ascontiguousarray(a))

    def encoded(self, j: int) -> bytes | None:
        return None

    def where(self, j: int) -> str:
        return f"{self.origin}[{j}]"

    def array(self, index: np.ndarray) -> np.ndarray | None:
        if index.size == len(self) and np.array_equal(index, np.arange(len(self))):
            return self.images
        return self.images[index]


class ConcatReader:
    """Several readers end to end (e.g. the official train and test parts of one source)."""

    kind = "concat"

    def __init__(self, readers: Sequence[Reader]):
        self.readers = list(readers)
        self.decodes = any(getattr(r, "decodes", True) for r in self.readers)
        self.offsets = np.cumsum([0] + [len(r) for r in self.readers])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, j: int) -> tuple[Reader, int]:
        k = int(np.searchsorted(self.offsets, j, side="right")) - 1
        return self.readers[k], j - int(self.offsets[k])

    def raw(self, j: int) -> np.ndarray:
        r, jj = self._locate(j)
        return r.raw(jj)

    def image(self, j: int):
        r, jj = self._locate(j)
        return r.image(jj)

    def encoded(self, j: int) -> bytes | None:
        r, jj = self._locate(j)
        return r.encoded(jj)

    def where(self, j: int) -> str:
        r, jj = self._locate(j)
        return r.where(jj)

    def array(self, index: np.ndarray) -> np.ndarray | None:
        if not index.size:
            return None
        k = np.searchsorted(self.offsets, index, side="right") - 1
        if np.all(k == k[0]):
            return self.readers[int(k[0])].array(index - self.offsets[int(k[0])])
        arrays = [r.array(np.arange(len(r))) for r in self.readers]
        if any(a is None for a in arrays) or len({a.shape[1:] for a in arrays}) != 1:
            return None
        return np.concatenate(arrays)[index]


class ImageDataset:
    """A labelled image collection: aligned ids/labels plus lazy per-image access.

    Attributes: name, split, source_dataset (canonical training-data name), ids (str array,
    unique), labels ((N,) int64, or (N, C) uint8 multi-hot when multilabel), class_names,
    multilabel, difficult ((N, C) bool or None; VOC), root, meta (JSON-able dict describing
    the source and split rule), skipped (list of (id, reason) left out by on_error='skip'),
    parts ((N, k) str ids of the component images for mosaics, else None).
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        source_dataset: str,
        ids: Sequence[str] | np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        reader: Reader,
        index: np.ndarray | None = None,
        multilabel: bool = False,
        difficult: np.ndarray | None = None,
        root: str = "",
        meta: dict[str, Any] | None = None,
        skipped: list[tuple[str, str]] | None = None,
        parts: np.ndarray | None = None,
    ):
        self.name = name
        self.split = split
        self.source_dataset = source_dataset
        self.ids = np.asarray(ids, dtype=str)
        self.multilabel = bool(multilabel)
        self.labels = np.asarray(labels, dtype=np.uint8 if self.multilabel else np.int64)
        self.class_names = list(class_names)
        self.difficult = None if difficult is None else np.asarray(difficult, dtype=bool)
        self.root = str(root)
        self.meta = dict(meta or {})
        self.skipped = list(skipped or [])
        self.parts = None if parts is None else np.asarray(parts, dtype=str)
        self._reader = reader
        self._index = np.arange(len(self.ids), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        n = len(self.ids)
        want_ndim = 2 if self.multilabel else 1
        if self._index.shape != (n,) or self.labels.shape[0] != n or self.labels.ndim != want_ndim:
            raise DivergentError(
                f"dataset {name!r}: {n} ids, {self.labels.shape} labels and {self._index.shape} positions do not align",
                "this is a reader bug; report it with the source string",
            )
        if self.multilabel and self.labels.shape[1] != len(self.class_names):
            raise DivergentError(
                f"dataset {name!r}: {self.labels.shape[1]} label columns but {len(self.class_names)} class names",
                "give one class name per label column",
            )

    # --- size and access -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def decodes(self) -> bool:
        """True when image access decodes encoded files (JPEG/PNG); False for pixel-array sources,
        where raw(i) is a cheap slice and array() returns every pixel."""
        return bool(getattr(self._reader, "decodes", True))

    def _check(self, i: int) -> int:
        i = int(i)
        n = len(self.ids)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name}/{self.split} ({n} images)")
        return i % n if n else i

    def image(self, i: int):
        """The i-th image as a PIL image in mode 'L' or 'RGB' (decoded now)."""
        i = self._check(i)
        j = int(self._index[i])
        try:
            return self._reader.image(j)
        except DivergentError:
            raise
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
            raise self._decode_error(i, exc) from exc

    def raw(self, i: int) -> np.ndarray:
        """The i-th image as a uint8 array HxW (grayscale) or HxWx3 (RGB); a slice for array sources."""
        i = self._check(i)
        j = int(self._index[i])
        try:
            return self._reader.raw(j)
        except DivergentError:
            raise
        except Exception as exc:
            raise self._decode_error(i, exc) from exc

    def encoded(self, i: int) -> bytes | None:
        """The i-th image's encoded file bytes (JPEG/PNG...) for file and archive sources, else None."""
        return self._reader.encoded(int(self._index[self._check(i)]))

    def where(self, i: int) -> str:
        """Where the i-th image is stored (file, archive member or array slot), for messages."""
        return self._reader.where(int(self._index[self._check(i)]))

    def array(self) -> np.ndarray | None:
        """All pixels as one uint8 array (N, H, W[, 3]) for array-backed sources, else None."""
        return self._reader.array(self._index)

    def __getitem__(self, i: int):
        """(PIL image, label) — so the dataset works directly as a torch map-style Dataset."""
        if not isinstance(i, (int, np.integer)):
            raise TypeError("index an ImageDataset with an int; use subset(indices) for several")
        return self.image(i), self.labels[self._check(i)]

    def mapped(self, transform=None, pixels: str = "pil", with_index: bool = False) -> Mapped:
        """A DataLoader-ready view: item i -> (transform(image or raw array), label[, i])."""
        return Mapped(self, transform=transform, pixels=pixels, with_index=with_index)

    def _decode_error(self, i: int, exc: BaseException) -> ImageDecodeError:
        return ImageDecodeError(
            f"cannot read image {self.ids[i]!r} of {self.name}/{self.split} ({self.where(i)}): "
            f"{type(exc).__name__}: {exc}",
            "replace or delete the file, or open the dataset with on_error='skip' "
            "(skipped ids are listed in dataset.skipped)",
        )

    # --- views -----------------------------------------------------------------------
    def subset(self, indices, split: str | None = None) -> ImageDataset:
        """A view on the given positions (int array or boolean mask); ids/labels stay aligned."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DivergentError(f"boolean mask of shape {idx.shape} for {len(self)} images", "pass a mask of length len(dataset)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DivergentError(f"subset indices out of range for {len(self)} images", "pass positions 0..len(dataset)-1")
        return ImageDataset(
            name=self.name,
            split=self.split if split is None else split,
            source_dataset=self.source_dataset,
            ids=self.ids[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            reader=self._reader,
            index=self._index[idx],
            multilabel=self.multilabel,
            difficult=None if self.difficult is None else self.difficult[idx],
            root=self.root,
            meta=self.meta,
            skipped=self.skipped,
            parts=None if self.parts is None else self.parts[idx],
        )

    def __repr__(self) -> str:
        kind = "multi-label" if self.multilabel else "single-label"
        return (
            f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.n_classes}, {kind}, source_dataset={self.source_dataset!r})"
        )


class Mapped:
    """A torch map-style dataset over an ImageDataset: item i -> (transform(x), label[, i]).

    x is the PIL image (pixels='pil') or the uint8 array from raw() (pixels='raw'). Plain,
    picklable object (no torch import), so it works with DataLoader workers under fork and
    spawn as long as transform is picklable too (torchvision transforms are)."""

    def __init__(self, dataset: ImageDataset, transform=None, pixels: str = "pil", with_index: bool = False):
        if pixels not in ("pil", "raw"):
            raise DivergentError(f"pixels must be 'pil' or 'raw', not {pixels!r}", "pass pixels='pil' or pixels='raw'")
        self.dataset = dataset
        self.transform = transform
        self.pixels = pixels
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x = self.dataset.image(i) if self.pixels == "pil" else self.dataset.raw(i)
        if self.transform is not None:
            x = self.transform(x)
        y = self.dataset.labels[i]
        return (x, y, i) if self.with_index else (x, y)


def describe(dataset: ImageDataset) -> dict[str, Any]:
    """Summary: n, classes, images per class (positives per class for multi-label), skipped, meta."""
    if dataset.multilabel:
        counts = dataset.labels.astype(np.int64).sum(axis=0) if len(dataset) else np.zeros(dataset.n_classes, np.int64)
    else:
        counts = np.bincount(dataset.labels, minlength=dataset.n_classes) if len(dataset) else np.zeros(dataset.n_classes, np.int64)
    out: dict[str, Any] = {
        "name": dataset.name,
        "split": dataset.split,
        "source_dataset": dataset.source_dataset,
        "n": len(dataset),
        "n_classes": dataset.n_classes,
        "classes": list(dataset.class_names),
        "multilabel": dataset.multilabel,
        "counts": {c: int(k) for c, k in zip(dataset.class_names, counts)},
        "skipped": len(dataset.skipped),
        "root": dataset.root,
    }
    if dataset.multilabel:
        out["labels_per_image"] = float(dataset.labels.sum(axis=1).mean()) if len(dataset) else 0.0
    if dataset.difficult is not None:
        out["difficult"] = {c: int(k) for c, k in zip(dataset.class_names, dataset.difficult.sum(axis=0))}
    return out


def stack_plan(plan, load, *, seed: int) -> dict[str, Any]:
    """The fields of an ImageDataset made of the parts of an official split plan held as arrays.

    `plan` is `splitting.official_plan(...)`: (part, rule) pairs, rule None for the whole part or
    a stratified half; `load(part)` returns (images, labels, id prefix, origin). Ids are
    '<prefix>/<position in the part>' zero-padded to at least 5 digits; returns ids, labels,
    reader, index and the rule's text."""
    from .splitting import halves_of

    readers, ids, labels, index, offset = [], [], [], [], 0
    for part, rule in plan:
        imgs, labs, prefix, origin = load(part)
        pos = np.arange(labs.size) if rule is None else halves_of(labs, rule, seed=seed)
        width = max(5, len(str(labs.size - 1)))
        readers.append(ArrayReader(imgs, origin=origin))
        ids.append(np.array([f"{prefix}/{k:0{width}d}" for k in pos]))
        labels.append(labs[pos])
        index.append(pos + offset)
        offset += labs.size
    return dict(ids=np.concatenate(ids), labels=np.concatenate(labels),
                reader=readers[0] if len(readers) == 1 else ConcatReader(readers), index=np.concatenate(index),
                rule=" + ".join(p if r is None else f"stratified_halves({p})[{r}]" for p, r in plan))
