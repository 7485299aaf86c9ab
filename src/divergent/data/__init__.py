"""Dataset readers (ImageFolder, tar archives, IDX, npz, digits, VOC, mosaics) and split rules.

    from divergent.data import open_dataset, describe
    ds = open_dataset("cifar10-jpeg", "test")        # or a path, 'fashion-mnist', 'digits', ...
    ds.ids, ds.labels, ds.class_names, ds.image(0), ds.raw(0), ds.subset([0, 5])

See docs/datasets.md for sources, ids and split rules.
"""
from .base import ArrayReader, ConcatReader, ImageDataset, ImageDecodeError, Mapped, describe
from .open import NAMED_SOURCES, PREFIXES, check_images, images_by_id, open_dataset
from .splits import stratified_halves
from .splitting import SPLIT_NAMES, official_plan, stratified_thirds

__all__ = [
    "ArrayReader", "ConcatReader", "ImageDataset", "ImageDecodeError", "Mapped", "NAMED_SOURCES", "PREFIXES",
    "SPLIT_NAMES", "check_images", "describe", "images_by_id", "official_plan", "open_dataset", "stratified_halves",
    "stratified_thirds",
]
