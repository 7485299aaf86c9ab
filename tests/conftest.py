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


@pytest.fixture
def one_torch_thread(monkeypatch):
    """Run a test with one torch intra-op thread (2-core CI machines), restoring the count after;
    child processes the test starts inherit OMP_NUM_THREADS=1 (the environment is restored too)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
