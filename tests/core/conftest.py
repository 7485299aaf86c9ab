"""Fixtures for core tests: small stores of correlated models (synthetic: property tests only)."""
import numpy as np
import pytest

from divergent.store import Store


def make_logits(rng, y, c, skill, shared):
    n = len(y)
    z = rng.normal(size=(n, c)) + 0.8 * shared
    z[np.arange(n), y] += skill
    return z.astype(np.float32)


def build_toy_store(root):
    """Three correlated models m0, m1, m2 (skills 1.0, 1.5, 2.0) on holdout and test, 600 x 5."""
    rng = np.random.default_rng(0)
    n, c = 600, 5
    st = Store.create(root)
    with st.writer() as w:
        for split in ("holdout", "test"):
            y = rng.integers(0, c, n)
            w.add_split(split, labels=y, class_names=[f"c{i}" for i in range(c)],
                        ids=[f"{split}/{i:04d}" for i in range(n)], dataset="toy")
            shared = rng.normal(size=(n, c))
            for i, skill in enumerate([1.0, 1.5, 2.0]):
                w.put(f"m{i}", split, logits=make_logits(rng, y, c, skill, shared))
    return st


@pytest.fixture
def toy_store(tmp_path):
    return build_toy_store(tmp_path / "store")
