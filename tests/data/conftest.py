"""Fixtures for the dataset-reader tests: real CIFAR-10 JPEG bytes and small trees built from them."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from divergent.data.folder import read_archive

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def cifar_test_tar(shared_dir) -> Path:
    p = shared_dir / "data" / "cifar10-jpeg" / "test.tar.gz"
    if not p.is_file():
        pytest.skip(f"{p} is absent")
    return p


@pytest.fixture(scope="session")
def cifar_members(cifar_test_tar) -> dict[str, bytes]:
    """A few real JPEGs per class from the CIFAR-10 test archive: {'test/cat/0000.jpg': bytes}."""
    names, buf, off, _ = read_archive(cifar_test_tar)
    out = {}
    for k, name in enumerate(names):
        if int(name.rsplit("/", 1)[1][:4]) < 6:
            out[name] = buf[off[k] : off[k + 1]]
    return out


def _write_tar(path: Path, members: dict[str, bytes], fmt=tarfile.USTAR_FORMAT, mode="w:gz") -> Path:
    with tarfile.open(path, mode, format=fmt) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def write_tar():
    """write_tar(path, {member name: bytes}, fmt=tarfile.USTAR_FORMAT, mode='w:gz') -> path"""
    return _write_tar


@pytest.fixture(scope="session")
def cifar_classes() -> list[str]:
    return list(CIFAR_CLASSES)
