"""Fixtures for extraction tests: small ImageFolder trees of real CIFAR-10 JPEGs copied from ../shared."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_folder(shared: Path, out: Path, per_class: int) -> Path:
    """The first `per_class` test JPEGs of each class, as a flat ImageFolder (bytes copied unchanged)."""
    want = {f"{c}/{k:04d}.jpg" for c in CLASSES for k in range(per_class)}
    with tarfile.open(shared / "data" / "cifar10-jpeg" / "test.tar.gz") as tf:
        for m in tf:
            if not m.isfile():
                continue
            rel = m.name.split("test/", 1)[-1]
            if rel in want:
                p = out / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(tf.extractfile(m).read())
    return out


@pytest.fixture(scope="session")
def cifar_small(shared_dir, tmp_path_factory) -> Path:
    """30 real CIFAR-10 test JPEGs per class (split 'all' = 300 images, 'test' = a third)."""
    return cifar_folder(shared_dir, tmp_path_factory.mktemp("cifar_small"), 30)
