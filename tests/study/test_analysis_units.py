"""The study's feature-combination and transfer units on small real data (scikit-learn digits):
they call divergent.probes (feature_combination, ranked_features, transfer) and keep the tables
the report reads; a multi-label task (digit mosaics) reports mAP."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from divergent.study import analysis_stages as A
from divergent.study.executors import UnitContext


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _proj(X, dim, seed=1):
    W = np.random.default_rng(seed).normal(size=(X.shape[1], dim)).astype(np.float32)
    return np.maximum(X @ W, 0.0).astype(np.float32) + 1e-3


def _ctx(tmp_path, models, acc):
    pairs = pd.DataFrame({"model_a": "base", "model_b": [m for m in models if m != "base"], "category": "reinit"})
    p = tmp_path / "pairs.parquet"
    pairs.to_parquet(p)
    work = tmp_path / "work"
    work.mkdir()
    return UnitContext(unit="u", out=tmp_path, store=tmp_path / "store", work=work,
                       deps={"pairs": {"pairs": str(p), "base": "base", "accuracy": acc}})


def test_features_unit_calls_the_probes(tmp_path):
    from sklearn.datasets import load_digits

    from divergent.probes.transfer import transfer
    from divergent.store import Store

    d = load_digits()
    X, y = d.data.astype(np.float32), d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))[:900]
    parts = {"train": idx[:400], "holdout": idx[400:650], "test": idx[650:]}
    st = Store.create(tmp_path / "store")
    with st.writer() as w:
        for s, i in parts.items():
            w.add_split(s, labels=y[i], class_names=[str(c) for c in range(10)], ids=[f"d/{j}" for j in i])
            w.put("base", s, features=X[i])
            w.put("other", s, features=_proj(X, 48)[i])
    ctx = _ctx(tmp_path, ["base", "other"], {"base": 0.9, "other": 0.9})
    out = A.features_unit(ctx, category="reinit", fractions=[0.0, 0.5, 1.0], seeds=[0], dims_steps=[16, 64],
                          grid=[1e-3])
    fc, dc = pd.read_parquet(out["feature_combination"]), pd.read_parquet(out["dims_curve"])
    assert {"model_a", "model_b", "category", "fraction_a", "accuracy", "holdout_accuracy"} <= set(fc.columns)
    assert fc["fraction_a"].tolist() == [0.0, 0.5, 1.0] and (fc["n_dims"] == 48).all()
    assert {"model_a", "model_b", "category", "n_dims", "accuracy"} <= set(dc.columns)
    assert dc["n_dims"].tolist() == [16, 64, 112] and fc["accuracy"].between(0.5, 1).all()
    # the best single / combined probes are the library's whole-embedding probes, selected on holdout
    tab = transfer(Store.open(tmp_path / "store"), ["base", "other"], task=None, grid=[1e-3])
    z = np.load(out["best"])
    single = tab[tab["models"] == out["single"]].iloc[0]
    assert float(z["single"].mean()) == single["value"]
    assert out["single_holdout"] == single["select_score"]
    assert z["combined"].shape == (len(parts["test"]),)


def test_transfer_unit_single_and_multilabel(tmp_path, monkeypatch):
    """Downstream embeddings stubbed (pixels and a ReLU projection of them); the probes are real."""
    from divergent.report.style import metric_label

    def fake(ctx, model, task, ds, split, kind):
        Xd = np.stack([np.asarray(ds.image(i).convert("L"), dtype=np.float32).ravel() for i in range(len(ds))])
        return Xd if model == "base" else _proj(Xd, 40)

    monkeypatch.setattr(A, "_downstream_embeddings", fake)
    ctx = _ctx(tmp_path, ["base", "other"], {"base": 0.9, "other": 0.8})
    kinds = {"base": {"kind": "recipe"}, "other": {"kind": "recipe"}}
    out = A.transfer_unit(ctx, tasks=["digits-mosaic", "digits"], grid=[1e-3], kinds=kinds)
    tr = pd.read_parquet(out["transfer"])
    assert set(tr["task"]) == {"digits", "digits-mosaic"}
    assert set(tr.loc[tr["task"] == "digits", "metric"]) == {"accuracy"}
    assert set(tr.loc[tr["task"] == "digits-mosaic", "metric"]) == {"map11"}
    assert tr.groupby("task")["kind"].apply(list).to_dict() == {"digits": ["single", "single", "stacked"],
                                                                "digits-mosaic": ["single", "single", "stacked"]}
    assert tr["score"].between(0.3, 1.0).all() and tr["upstream_acc"].notna().all()
    # claim 5 uses the first single-label task (per-example correctness; mAP has none)
    assert out["task"] == "digits"
    z = np.load(out["best"])
    assert z["single"].shape == z["combined"].shape == (596,)
    assert metric_label("map11").startswith("mAP")
