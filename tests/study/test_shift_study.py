"""The study's shift and similarity stages: config, plan, and a tiny shift set end to end on
Fashion-MNIST at quick scale (real models, real corrupted pixels)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from divergent.errors import DivergentError
from divergent.study import config as C

SHIFTS = ["gaussian_noise:3", "contrast:2"]


def test_config_key_and_plan():
    from divergent.study.plan import plan

    assert C.load("fashion-mnist-quick").analysis.shifts == []
    with pytest.raises(DivergentError, match="analysis.shifts.*gausian_noise"):
        C.load("fashion-mnist-quick", {"analysis.shifts": ["gausian_noise:3"]})
    with pytest.raises(DivergentError, match="analysis.shifts"):
        C.load("fashion-mnist-quick", {"analysis.shifts": ["gaussian_noise:9"]})
    plain = plan(C.load("fashion-mnist-quick"))
    g = plan(C.load("fashion-mnist-quick", {"analysis.shifts": SHIFTS}))
    new = set(g.units) - set(plain.units)
    cfg = C.load("fashion-mnist-quick")
    n_recipes = len(cfg.zoo.only)
    assert {"shift-data", "shift-pairs", "lines", "cka"} <= new
    assert sum(u.startswith("shift-predict:") for u in new) == n_recipes
    assert sum(u.startswith("shift-extract:") for u in new) == len(cfg.zoo.backbones)
    assert {"shift-pairs", "lines", "cka"} <= set(g.units["report"].deps)
    for preset, n_min in (("cifar10", 10), ("fashion-mnist", 1)):
        from divergent.data.shift import parse_shifts

        sh = parse_shifts(C.load(preset).analysis.shifts)
        assert len(sh) >= n_min
        if preset == "cifar10":
            assert len({s.corruption for s in sh}) >= 5 and len({s.severity for s in sh}) >= 2


def _section(html: str, sid: str) -> str:
    return html.split(f'id="{sid}"')[1].split("</section>")[0]


@pytest.mark.slow
def test_tiny_shift_set_end_to_end(tmp_path, fmnist_dir):
    import divergent as dv
    from divergent.analyses.shift import shift_pairs
    from divergent.data import open_dataset
    from divergent.data.shift import Shift, shifted
    from divergent.store import Store
    from divergent.study import run_study
    from divergent.train import load_trained, predict

    out = tmp_path / "study"
    # the quick preset, cut to one model per category (Dataset: the NudeNet backbone), no feature,
    # transfer or gallery analyses: the shift stages on real models in a few minutes
    over = {"analysis.shifts": SHIFTS, "analysis.n_boot": 100, "analysis.gallery": 0, "analysis.features": False,
            "analysis.transfer": [], "zoo.only": ["cnn-base", "cnn-seed1", "cnn-dropout", "mlp", "cnn-autoencoder"],
            "zoo.backbones": ["detection/nudenet-320n"]}
    s = run_study("fashion-mnist-quick", out, overrides=over, progress=False, echo=None)
    assert s.ok, s.failed
    st = Store.open(out / "store")
    names = ["test~gaussian_noise-3", "test~contrast-2"]
    assert set(names) <= set(st.splits)
    models = sorted(st.models)
    for sp in names:
        assert np.array_equal(st.split(sp).ids, st.split("test").ids)
        assert st.split(sp).meta["shift"]["corruption"] == sp.split("~")[1].rsplit("-", 1)[0]
        assert [m for m in models if not st.has_scores(m, sp)] == []
    # a trained model's shifted logits are its predictions on the corrupted pixels
    base = "fmnist-quick/cnn-base"
    trained = load_trained(out / "models" / "fmnist-quick__cnn-base")
    ds = shifted(open_dataset("fashion-mnist", "test"), Shift("gaussian_noise", 3))
    logits, _ = predict(trained, np.asarray(ds.array()))
    assert np.array_equal(logits, np.asarray(st.array(base, "test~gaussian_noise-3", "logits")))
    acc_sh = float((logits.argmax(1) == st.split("test~gaussian_noise-3").labels).mean())
    acc_id = float((np.asarray(st.array(base, "test", "logits")).argmax(1) == st.split("test").labels).mean())
    assert acc_sh < acc_id - 0.01  # the corruption is there (measured: 79.8 % vs 83.4 %)
    # the study's tables equal the analyses run directly on its store
    tables = out / "tables"
    sp_t = pd.read_parquet(tables / "shift_pairs.parquet")
    direct = shift_pairs(st, base=base, split="test", shifted=names, n_boot=100, seed=0)
    pd.testing.assert_frame_equal(sp_t.reset_index(drop=True), direct.pairs.reset_index(drop=True), check_exact=True)
    f = pd.read_parquet(tables / "shift_findings.parquet")
    pd.testing.assert_frame_equal(f.reset_index(drop=True), direct.findings.reset_index(drop=True), check_exact=True)
    est = pd.read_parquet(tables / "lines_estimates.parquet")
    assert set(est["shifted_split"]) == set(names) and len(est) == 2 * len(models)
    assert np.isfinite(est[["acc_id", "acc_true", "aline_s", "aline_d", "atc"]].to_numpy(float)).all()
    ck = pd.read_parquet(tables / "cka.parquet")
    assert len(ck) == len(models) * (len(models) - 1) // 2
    direct_cka = dv.cka(st, split="test", models=list(dict.fromkeys([*ck["model_a"], *ck["model_b"]])), n_boot=0)
    got = {frozenset(ab): v for *ab, v in zip(ck["model_a"], ck["model_b"], ck["cka"])}
    want = {frozenset(ab): v for *ab, v in zip(direct_cka["model_a"], direct_cka["model_b"], direct_cka["cka"])}
    assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-12 for k in got)
    # the report's sections: rendered, with figures, no NaN; numbers from the tables
    html = (out / "report.html").read_text()
    for sid in ("shift", "similarity"):
        sec = _section(html, sid)
        assert "Not available" not in sec and "data:image/png;base64," in sec, sid
        text = re.sub(r'src="data:image/png;base64,[^"]*"', "", sec)
        assert not re.search(r"\bnan\b|n/a", text, flags=re.I), sid
    sec = _section(html, "shift")
    for r in f.itertuples():
        assert r.text.replace("'", "&#x27;") in sec
    rel = pd.read_parquet(tables / "cka_relation.parquet").iloc[0]
    assert f"{rel['estimate']:.3f}" in _section(html, "similarity")
    # a rerun does nothing
    s2 = run_study("fashion-mnist-quick", out, overrides=over, progress=False, echo=None)
    assert s2.ran == [] and s2.ok
