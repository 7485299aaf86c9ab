"""Shared pytest fixtures: locations of the real assets in ../shared and on the system."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIVERGENT_SHARED", ROOT.parent / "shared"))
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}); real-asset tests need it beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    if not (FMNIST / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is absent: apt-get install dataset-fashion-mnist (make test does)")
    return FMNIST
