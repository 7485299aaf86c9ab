"""Fixtures for the probe tests: one torch thread, and a small store of real embeddings.

The store holds scikit-learn's digits (real images) as train/holdout/test splits, with two
"models": the raw 8x8 pixels and a fixed random-ReLU projection of them, and the same
images again as a downstream task ('digits/...') and as 2x2-tile multi-hot mosaics
('mosaic/...', with a few VOC "difficult" flags)."""
from __future__ import annotations

import numpy as np
import pytest
from probe_fixtures import digits_parts, mosaic, relu_projection


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py)."""


@pytest.fixture
def digits_store(tmp_path):
    from divergent.cards import ModelCard
    from divergent.store import Store

    X, y, parts = digits_parts()
    P = relu_projection(X)
    st = Store.create(tmp_path / "store")
    names = [str(c) for c in range(10)]
    with st.writer() as w:
        for prefix in ("", "digits/"):
            for s, idx in parts.items():
                w.add_split(prefix + s, labels=y[idx], class_names=names, ids=[f"digits/{i:04d}" for i in idx],
                            dataset="digits")
        for s, n, seed in (("train", 400, 0), ("holdout", 300, 1), ("test", 300, 2)):
            src = parts[s]
            feats, Y = mosaic(X[src], y[src], n, seed)
            feats_p, _ = mosaic(P[src], y[src], n, seed)
            diff = [[i, int(np.flatnonzero(Y[i])[0])] for i in range(0, n, 25)]
            w.add_split(f"mosaic/{s}", labels=Y, class_names=names, ids=[f"mosaic/{s}/{i:04d}" for i in range(n)],
                        dataset="digits-mosaic", meta={"difficult": diff})
            w.put("pixels", f"mosaic/{s}", features=feats)
            w.put("relu", f"mosaic/{s}", features=feats_p)
        for prefix in ("", "digits/"):
            for s, idx in parts.items():
                w.put("pixels", prefix + s, features=X[idx],
                      card=ModelCard(name="pixels", family="other", train_data="none", head="none"))
                w.put("relu", prefix + s, features=P[idx],
                      card=ModelCard(name="relu", family="other", train_data="none", head="none", seed=1))
    return Store.open(tmp_path / "store")
