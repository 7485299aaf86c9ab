"""open_dataset(source, split): parse a source string, pick its reader, apply the split and error policy."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..conventions import SPLIT_SEED
from ..errors import DivergentError, unknown
from .base import ImageDataset
from .splitting import check_split

#: source names that need no path
NAMED_SOURCES = ("fashion-mnist", "digits", "digits-mosaic", "fashion-mnist-mosaic", "cifar10-jpeg", "cifar10")
#: 'prefix:rest' source forms
PREFIXES = ("fashion-mnist", "fashion-mnist-mosaic", "digits-mosaic", "idx", "npz", "voc", "folder", "tar", "torchvision", "cifar10")
ON_ERROR = ("fail", "skip")


def _split_prefix(source: str) -> tuple[str | None, str]:
    if ":" in source:
        head, rest = source.split(":", 1)
        if head in PREFIXES:
            return head, rest
        if len(head) > 1 and "/" not in head and not Path(source).exists():
            raise unknown("source prefix", head, PREFIXES)
    return None, source


def open_dataset(source: str, split: str = "test", *, on_error: str = "fail", verify: bool = False,
                 seed: int = SPLIT_SEED, download: bool = False, **options) -> ImageDataset:
    """Open a labelled image source as an ImageDataset restricted to one split.

    source: 'fashion-mnist[:DIR]', 'digits', 'digits-mosaic', 'fashion-mnist-mosaic[:DIR]',
        'cifar10-jpeg' (the shared JPEG copy), 'cifar10[:PATH]' (the python archive),
        'torchvision:NAME@ROOT', 'npz:PATH' / PATH.npz,
        'voc:DIR' / a VOC directory, 'folder:DIR' / an ImageFolder directory,
        'tar:PATH' / PATH.tar[.gz] / a directory of train/test archives, 'idx:DIR'.
    split: 'train', 'holdout', 'test', 'official-test' or 'all' (VOC also 'val', 'trainval').
    on_error: 'fail' (default; a bad image raises ImageDecodeError naming its id when read) or
        'skip' (every encoded image is decoded once now; bad ones are left out and listed in
        dataset.skipped as (id, reason)). verify=True decodes every image now under 'fail'.
    seed: seed of the split rule (default divergent.conventions.SPLIT_SEED = 0).
    download: fetch a named source (fashion-mnist, cifar10) that is found nowhere on this machine,
        with checksums (divergent.data.locate; lookup order in docs/datasets.md). Off by default.
    options: reader-specific (classes=, name=, source_dataset=, n=, grid=, cache=, ...).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise DivergentError(f"source must be a string or path, not {type(source).__name__}", "pass e.g. 'fashion-mnist' or a directory path")
    source = os.fspath(source)
    if on_error not in ON_ERROR:
        raise unknown("on_error policy", on_error, ON_ERROR)
    from .voc import VOC_SPLITS

    check_split(split, extra=VOC_SPLITS)
    ds = _dispatch(source, split, seed=seed, on_error=on_error, download=download, **options)
    if on_error == "skip" or verify:
        ds = check_images(ds, on_error=on_error)
    if len(ds) == 0:
        from .splitting import empty_split_error

        raise empty_split_error(f"{source!r}", split)
    if np.unique(ds.ids).size != len(ds):
        raise DivergentError(f"{source!r} gives the same id to two images", "make ids unique (e.g. drop the ids array of an .npz)")
    return ds


def images_by_id(source: str, ids, split: str = "all", **options) -> list[np.ndarray]:
    """The native pixels (uint8 HxW or HxWx3, as ``ImageDataset.raw`` gives them) of the examples
    with the given ids, in the order given, from any source :func:`open_dataset` reads.

    split: the split the ids belong to ('all' finds an id in any split; naming the split reads
    less for sources whose splits are files of their own). options: as for open_dataset.
    Refuses ids the source does not hold, naming a few."""
    ds = open_dataset(source, split, **options)
    where = {str(i): k for k, i in enumerate(ds.ids)}
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in where]
    if missing:
        raise DivergentError(f"{len(missing)} example id(s) are not in {source!r} (split {split!r}), e.g. {missing[:3]}",
                             "open the dataset the ids came from (the same source, split and options)")
    return [np.asarray(ds.raw(where[i])) for i in ids]


def _dispatch(source: str, split: str, *, download: bool = False, **kw) -> ImageDataset:
    from . import arrays, folder, idx, locate, mosaic, voc

    def fmnist(rest: str | None) -> str:
        return rest or str(locate.find("fashion-mnist", download=download))

    prefix, rest = _split_prefix(source)
    if prefix == "torchvision":
        return arrays.open_torchvision(rest, split, **kw)
    if prefix == "fashion-mnist":
        return idx.open_idx(fmnist(rest), split, fashion=True, **kw)
    if prefix == "idx":
        return idx.open_idx(rest or None, split, fashion=False, **kw)
    if prefix == "cifar10" or source == "cifar10":
        return locate.open_cifar10(rest if prefix else None, split, download=download, **kw)
    if prefix == "fashion-mnist-mosaic":
        return mosaic.open_mosaic("fashion-mnist", split, base_path=fmnist(rest), **kw)
    if prefix == "digits-mosaic":
        return mosaic.open_mosaic("digits", split, base_path=rest or None, **kw)
    if prefix == "npz":
        return arrays.open_npz(rest, split, **kw)
    if prefix == "voc":
        return voc.open_voc(rest, split, **kw)
    if prefix == "folder":
        return folder.open_folder(rest, split, **kw)
    if prefix == "tar":
        return folder.open_tar(rest, split, **kw)
    if source == "fashion-mnist":
        return idx.open_idx(fmnist(None), split, fashion=True, **kw)
    if source == "digits":
        return arrays.open_digits(split, **kw)
    if source == "digits-mosaic":
        return mosaic.open_mosaic("digits", split, **kw)
    if source == "fashion-mnist-mosaic":
        return mosaic.open_mosaic("fashion-mnist", split, base_path=fmnist(None), **kw)
    if source == "cifar10-jpeg":
        kw.setdefault("name", "cifar10-jpeg")
        return folder.open_tar(str(locate.find("cifar10-jpeg")), split, **kw)
    path = Path(source).expanduser()
    if path.is_file():
        low = path.name.lower()
        if low.endswith(".npz"):
            return arrays.open_npz(str(path), split, **kw)
        if low.endswith(folder.TAR_SUFFIXES):
            return folder.open_tar(str(path), split, **kw)
        raise DivergentError(
            f"cannot tell what kind of dataset the file {source!r} is",
            "pass a .npz, a .tar/.tar.gz/.tgz archive, or a directory (or prefix the source: npz:, tar:)",
        )
    if path.is_dir():
        if voc.is_voc(path):
            return voc.open_voc(str(path), split, **kw)
        if idx.is_idx_dir(path):
            return idx.open_idx(str(path), split, fashion=None, **kw)
        if folder.archive_parts(path):
            return folder.open_tar(str(path), split, **kw)
        return folder.open_folder(str(path), split, **kw)
    if "/" in source or os.sep in source or source.startswith("."):
        raise DivergentError(f"dataset path {source!r} does not exist", "check the path (it is read relative to the current directory)")
    raise unknown("dataset source", source, (*NAMED_SOURCES, *(f"{p}:..." for p in PREFIXES)))


def check_images(ds: ImageDataset, on_error: str = "fail") -> ImageDataset:
    """Decode every image once; under 'skip' drop the bad ones (recorded in .skipped), else raise."""
    if not len(ds) or not ds.decodes:
        return ds  # pixel arrays cannot be corrupt
    keep = np.ones(len(ds), dtype=bool)
    skipped = list(ds.skipped)
    for i in range(len(ds)):
        try:
            ds.image(i)
        except DivergentError as exc:
            if on_error != "skip":
                raise
            keep[i] = False
            skipped.append((str(ds.ids[i]), exc.problem))
    if keep.all():
        return ds
    out = ds.subset(keep)
    out.skipped = skipped
    return out
