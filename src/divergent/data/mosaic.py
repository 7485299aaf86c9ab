"""Deterministic multi-label mosaics: grid x grid tiles of base images (digits or Fashion-MNIST).

Rule (docs/datasets.md): a mosaic split is built from the SAME split of the base dataset, so
no base image is shared between train, holdout and test mosaics. With m base images in that
split and n mosaics (default n = m), rng = numpy.random.default_rng([seed, crc32(split)]);
for each tile t = 0..grid*grid-1 in row-major order, the tile sequence is the concatenation
of ceil(n / m) successive rng.permutation(m) draws, cut to n. Mosaic k's tile t is base image
seq_t[k]; with n = m every base image appears exactly once per tile position. The label is
multi-hot: class c is 1 when at least one tile shows class c.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..conventions import SPLIT_SEED
from ..errors import DivergentError
from .base import ImageDataset

BASES = ("digits", "fashion-mnist")


class MosaicReader:
    """Composes mosaics on access from a base reader's pixel array and the tile table."""

    kind = "mosaic"
    decodes = False

    def __init__(self, base: np.ndarray, tiles: np.ndarray, grid: int, origin: str):
        self.base = base  # (M, h, w) uint8
        self.tiles = np.asarray(tiles, dtype=np.int64)  # (N, grid*grid) positions into base
        self.grid = grid
        self.origin = origin

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    def _compose(self, tiles: np.ndarray) -> np.ndarray:
        g = self.grid
        t = self.base[tiles]  # (..., g*g, h, w)
        h, w = t.shape[-2:]
        t = t.reshape(*tiles.shape[:-1], g, g, h, w)
        t = np.moveaxis(t, -3, -2)  # (..., g_row, h, g_col, w)
        return np.ascontiguousarray(t).reshape(*tiles.shape[:-1], g * h, g * w)

    def raw(self, j: int) -> np.ndarray:
        return self._compose(self.tiles[j])

    def image(self, j: int):
        from PIL import Image

        return Image.fromarray(self.raw(j))

    def encoded(self, j: int) -> None:
        return None

    def where(self, j: int) -> str:
        return f"{self.origin} mosaic {j}"

    def array(self, index: np.ndarray) -> np.ndarray:
        return self._compose(self.tiles[index])


def mosaic_tiles(m: int, n: int, grid: int, split: str, seed: int) -> np.ndarray:
    """(n, grid*grid) base positions for the mosaics of one split (see the module docstring)."""
    if m <= 0:
        raise DivergentError(f"cannot build mosaics from an empty base split {split!r}", "choose a split that has images")
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    reps = -(-n // m)
    cols = [np.concatenate([rng.permutation(m) for _ in range(reps)])[:n] for _ in range(grid * grid)]
    return np.stack(cols, axis=1)


def open_mosaic(base: str, split: str, *, base_path: str | None = None, n: int | None = None, grid: int = 2,
                seed: int = SPLIT_SEED, name: str | None = None, on_error: str = "fail", **unused) -> ImageDataset:
    """'digits-mosaic' or 'fashion-mnist-mosaic[:DIR]' for split; n mosaics (default: as many as base images)."""
    if unused:
        raise DivergentError(f"mosaic sources take no option(s) {', '.join(sorted(unused))}", "use n=, grid=, seed=, name=")
    if base not in BASES:
        raise DivergentError(f"no mosaics of {base!r}", f"use one of {', '.join(b + '-mosaic' for b in BASES)}")
    if not isinstance(grid, int) or grid < 1:
        raise DivergentError(f"grid must be a positive integer, not {grid!r}", "use grid=2 for 2x2 mosaics")
    if split == "all":
        parts = [open_mosaic(base, s, base_path=base_path, n=n, grid=grid, seed=seed, name=name) for s in ("train", "holdout", "test")]
        return _concat(parts, split)
    if base == "digits":
        from .arrays import open_digits

        b = open_digits(split, seed=seed)
    else:
        from .idx import open_idx

        b = open_idx(base_path, split, fashion=True, seed=seed)
    pixels = b.array()
    m = len(b)
    count = m if n is None else int(n)
    if count <= 0:
        raise DivergentError(f"n must be positive, not {n!r}", "pass n=None (one mosaic per base image) or a positive count")
    tiles = mosaic_tiles(m, count, grid, split, seed)
    labels = np.zeros((count, b.n_classes), dtype=np.uint8)
    np.put_along_axis(labels, b.labels[tiles], 1, axis=1)
    width = max(5, len(str(count - 1)))
    ids = np.array([f"mosaic/{split}/{k:0{width}d}" for k in range(count)])
    return ImageDataset(
        name=name or f"{base}-mosaic", split=split, source_dataset=b.source_dataset, ids=ids, labels=labels,
        class_names=b.class_names, reader=MosaicReader(pixels, tiles, grid, origin=f"{b.name}/{split}"),
        multilabel=True, root=b.root, parts=b.ids[tiles],
        meta={"source": "mosaic", "base": base, "base_rule": b.meta.get("rule"), "grid": grid, "n": count, "seed": seed,
              "rule": "tiles = successive rng.permutation(m) per tile, rng = default_rng([seed, crc32(split)])"},
    )


def _concat(parts: list[ImageDataset], split: str) -> ImageDataset:
    from .base import ConcatReader

    offsets = np.cumsum([0] + [len(p) for p in parts])
    return ImageDataset(
        name=parts[0].name, split=split, source_dataset=parts[0].source_dataset,
        ids=np.concatenate([p.ids for p in parts]), labels=np.concatenate([p.labels for p in parts]),
        class_names=parts[0].class_names, reader=ConcatReader([p._reader for p in parts]),
        index=np.concatenate([p._index + o for p, o in zip(parts, offsets)]), multilabel=True, root=parts[0].root,
        parts=np.concatenate([p.parts for p in parts]), meta={**parts[0].meta, "parts": ["train", "holdout", "test"]},
    )
