"""ImageNet label spaces: ImageNet-1k's WordNet id <-> index <-> name table, the 200-class
ImageNet-R and ImageNet-A subsets, and the label space a split's class names are in.

The tables are package data (``divergent/data/labels/``, from timm, Apache-2.0). ImageNet-1k's
index order is the sorted order of its WordNet ids, so a folder of WordNet-id class folders
(validation, ImageNet-R, ImageNet-A) lists its classes in index order; ImageNet-V2's class
folders ``0`` ... ``999`` are class numbers (ordered by number, docs/datasets.md).
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from ..errors import DivergentError

#: ImageNet subsets shipped with the package: name -> synset file
SUBSETS = {"imagenet-r": "imagenet_r_synsets.txt", "imagenet-a": "imagenet_a_synsets.txt"}
_WNID = re.compile(r"n\d{8}")


def _lines(name: str) -> list[str]:
    text = resources.files("divergent.data").joinpath("labels", name).read_text(encoding="utf-8")
    return [ln for ln in text.splitlines() if ln.strip()]


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 WordNet ids of ImageNet-1k; position = output index."""
    return tuple(_lines("imagenet_synsets.txt"))


@lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in index order ('tench, Tinca tinca', ...)."""
    table = dict(ln.split("\t", 1) for ln in _lines("imagenet_synset_to_lemma.txt"))
    return tuple(table[w] for w in imagenet_wnids())


@lru_cache(maxsize=1)
def _index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def imagenet_index(wnid: str) -> int:
    """The ImageNet-1k output index of a WordNet id (a DivergentError when it is not one of the 1,000)."""
    try:
        return _index()[wnid]
    except KeyError:
        raise DivergentError(f"{wnid!r} is not one of ImageNet-1k's 1,000 WordNet ids",
                             "check the folder name (e.g. n01440764 = tench), or pass a class-mapping file") from None


@lru_cache(maxsize=None)
def subset_wnids(name: str) -> tuple[str, ...]:
    """The WordNet ids of an ImageNet subset ('imagenet-r', 'imagenet-a'), in ImageNet-1k index order."""
    if name not in SUBSETS:
        from ..errors import unknown

        raise unknown("ImageNet subset", name, SUBSETS)
    return tuple(_lines(SUBSETS[name]))


def is_wnid(name: str) -> bool:
    return bool(_WNID.fullmatch(str(name)))


def split_label_space(class_names) -> tuple[str, list[int], list[str]] | None:
    """The ImageNet label space a split's classes are in: (name, ImageNet-1k column of each class,
    WordNet ids that are not ImageNet-1k's), or None when the classes are not ImageNet's.

    WordNet-id classes map by id (ImageNet-1k validation folders, ImageNet-R, ImageNet-A, any
    subset); exactly the classes '0' ... '999' (ImageNet-V2's folders) map by number."""
    names = [str(c) for c in class_names]
    if not names:
        return None
    if all(is_wnid(c) for c in names):
        idx = _index()
        unknown_ids = [c for c in names if c not in idx]
        cols = [idx.get(c, -1) for c in names]
        found = set(names)
        space = next((s for s in SUBSETS if found == set(subset_wnids(s))), None)
        if space is None:
            space = "imagenet-1k" if len(found) == 1000 and not unknown_ids else f"imagenet-1k ({len(names)} of its classes)"
        return space, cols, unknown_ids
    if set(names) == {str(i) for i in range(1000)}:
        return "imagenet-1k (class numbers, ImageNet-V2 layout)", [int(c) for c in names], []
    return None


def names_match_imagenet(labels, min_share: float = 0.9) -> bool:
    """Whether 1,000 display names are ImageNet-1k's in index order (any of a class's synonyms, or its
    WordNet id, counts: torchvision's 'tench' and the full 'tench, Tinca tinca' both match)."""
    labels = [str(s).strip().lower() for s in labels]
    if len(labels) != 1000:
        return False
    hits = 0
    for lab, wnid, full in zip(labels, imagenet_wnids(), imagenet_names()):
        syn = {s.strip().lower() for s in full.split(",")}
        hits += lab == wnid or lab == full.lower() or lab in syn or lab.replace("_", " ") in syn
    return hits >= min_share * 1000


#: label_space values of model specs that name ImageNet-1k
IMAGENET_SPACES = ("imagenet", "imagenet-1k", "imagenet1k", "in1k")


def imagenet_head(n_out: int, background_class: int | None, label_space: str | None, labels,
                  class_names: list[str]) -> tuple[int | None, list[int], dict] | None:
    """The built-in ImageNet mapping: when the split's classes are an ImageNet label space
    (WordNet-id folders, a 200-class ImageNet-R/-A subset, ImageNet-V2's '0'...'999') and the head
    is ImageNet-1k's, return (background column to drop, the head column of each split class, info).

    The head is recognised by its size and label space, not by display names: 1,000 outputs
    (1,001 with a background class first, as in the TF-slim/TFLite MobileNets) and a spec label
    space of ImageNet, or no label space and display names that are ImageNet's (in any spelling)
    or none at all. None when the split is not in an ImageNet label space or the head is not
    ImageNet-1k's; a DivergentError when the split names WordNet ids outside ImageNet-1k."""
    space = split_label_space(class_names)
    if space is None:
        return None
    split_space, cols, unknown_ids = space
    bg = background_class
    own = list(labels) if labels else None
    if bg is None and n_out == 1001 and (
            (label_space or "").lower() in IMAGENET_SPACES or (own and own[0].strip().lower() in ("background", "unused background"))
            or (own is None and label_space is None)):
        bg = 0  # TF-slim convention: 1,001 outputs with the background class first
    if n_out - (1 if bg is not None else 0) != 1000:
        return None
    if own is not None and len(own) == n_out and bg is not None:
        own = own[:bg] + own[bg + 1:]
    if label_space is not None:
        if label_space.lower() not in IMAGENET_SPACES:
            return None
        how = f"label space {label_space!r}"
    elif own is None:
        how = "1000 unnamed outputs, taken as ImageNet-1k"
    elif names_match_imagenet(own):
        how = "its class names are ImageNet-1k's"
    else:
        return None
    if unknown_ids:
        raise DivergentError(
            f"the split's classes are WordNet ids but {len(unknown_ids)} of them are not among ImageNet-1k's 1,000 "
            f"({', '.join(unknown_ids[:5])}{' ...' if len(unknown_ids) > 5 else ''}), so the ImageNet head cannot score them",
            "remove those class folders, pass a class-mapping file (--mapping), or store features only (--head features)")
    info = {"label_space": split_space, "imagenet_head": how, "columns": len(cols)}
    return bg, cols, info
