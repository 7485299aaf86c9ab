"""The pairs table: equals the reference arithmetic, caches pairs, filters by band, handles decisions."""
import numpy as np
import pandas as pd
import pytest

import divergent as dv
from divergent.cards import ModelCard
from divergent.errors import DivergentError
from divergent.metrics.pairs import code_counts, metrics_from_counts, reference_pair_codes
from divergent.metrics.probs import reference_probs
from divergent.store import Store


def test_pairs_equal_reference(toy_store):
    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    st = Store.open(toy_store.root)
    df = dv.pairs(st, split="test", n_boot=200)
    assert len(df) == 3
    y = st.split("test").labels
    for _, r in df.iterrows():
        pa = reference_probs(st.array(r.model_a, "test", "logits"), st.temperature(r.model_a))
        pb = reference_probs(st.array(r.model_b, "test", "logits"), st.temperature(r.model_b))
        ref = metrics_from_counts(code_counts(reference_pair_codes(pa, pb, y)))
        for k, v in ref.items():
            assert r[k] == pytest.approx(float(v), nan_ok=True)
            if np.isfinite(v):
                assert r[f"{k}_lo"] <= r[k] + 1e-12 and r[k] <= r[f"{k}_hi"] + 1e-12


def test_requires_calibration_and_refuses_fit_on_eval(toy_store):
    with pytest.raises(DivergentError, match="calibrate"):
        dv.pairs(toy_store, split="test")
    df = dv.pairs(toy_store, split="test", calibrated=False, n_boot=0)
    assert len(df) == 3
    with pytest.raises(DivergentError, match="refusing"):
        dv.calibrate(toy_store, fit_on="test", progress=False)
    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    with pytest.raises(DivergentError, match="fitted on 'holdout'"):
        dv.pairs(toy_store, split="holdout")


def test_adding_a_model_computes_only_new_pairs(toy_store, monkeypatch):
    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    dv.pairs(toy_store, split="test", n_boot=0)
    calls = []
    import divergent.engine as eng

    real = eng.all_pair_codes

    def spy(prepared, pairs, **kw):
        calls.append(list(pairs))
        return real(prepared, pairs, **kw)

    monkeypatch.setattr(eng, "all_pair_codes", spy)
    with toy_store.writer() as w:
        w.put("m3", "test", logits=np.random.default_rng(5).normal(size=(600, 5)).astype(np.float32))
        w.put("m3", "holdout", logits=np.random.default_rng(6).normal(size=(600, 5)).astype(np.float32))
    dv.calibrate(toy_store, fit_on="holdout", models=["m3"], progress=False)
    df = dv.pairs(toy_store, split="test", n_boot=0)
    assert len(df) == 6
    assert len(calls) == 1 and len(calls[0]) == 3  # only the three pairs with m3


def test_base_band_categories_and_decision_only(toy_store):
    st = toy_store
    cards = {"m0": dict(family="cnn", seed=0), "m1": dict(family="cnn", seed=1), "m2": dict(family="mlp")}
    with st.writer() as w:
        for m, c in cards.items():
            w.set_card(m, ModelCard(name=m, train_data="toy", **c))
        pred = np.asarray(st.array("m1", "test", "logits")).argmax(1)
        w.put("dec", "test", pred=pred, card=ModelCard(name="dec", train_data="other"))
    dv.calibrate(st, fit_on="holdout", progress=False)
    df = dv.pairs(st, split="test", base="m0", n_boot=0).set_index("model_b")
    assert df.loc["m1", "category"] == "reinit" and df.loc["m2", "category"] == "architecture"
    assert df.loc["dec", "category"] == "dataset"
    assert np.isnan(df.loc["dec", "ensemble_acc"]) and "decision-only" in df.loc["dec", "missing_reason"]
    assert df.loc["dec", "error_inconsistency"] == pytest.approx(df.loc["m1", "error_inconsistency"])
    acc = dv.model_table(st, split="test").set_index("model")["accuracy"]
    band = (acc["m1"] - 1e-9, acc["m1"] + 1e-9)
    small = dv.pairs(st, split="test", base="m0", acc_band=band, n_boot=0)
    assert set(small["model_b"]) == {"m1", "dec"}
    with pytest.raises(DivergentError, match="did you mean"):
        dv.pairs(st, split="test", base="m00")


def test_timm_style_csv_import(tmp_path, toy_store):
    st = toy_store
    sd = st.split("test")
    pred = np.asarray(st.array("m2", "test", "logits")).argsort(1)[:, ::-1][:, :3]
    df = pd.DataFrame({"filename": sd.ids[::-1], "index": [str(list(map(int, r))) for r in pred[::-1]]})
    df.to_csv(tmp_path / "topk.csv", index=False)
    dv.import_predictions(st, tmp_path / "topk.csv", split="test", model="timm-csv")
    got = Store.open(st.root).array("timm-csv", "test", "pred")
    np.testing.assert_array_equal(got, pred)


def test_npz_import_creates_split_with_ids(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    np.savez(tmp_path / "a.npz", labels=y, probs=np.full((50, 3), 1 / 3), ids=np.array([f"x/{i}" for i in range(50)]),
             class_names=np.array(["a", "b", "c"]))
    dv.import_predictions(tmp_path / "s", tmp_path / "a.npz", split="test", model="a")
    st = Store.open(tmp_path / "s")
    assert st.split("test").class_names == ["a", "b", "c"] and st.split("test").ids[3] == "x/3"


def test_acc_band_string_and_percent_forms(toy_store):
    st = toy_store
    dv.calibrate(st, fit_on="holdout", progress=False)
    y = st.split("test").labels
    acc = {m: float(np.mean(np.asarray(st.array(m, "test", "logits")).argmax(1) == y)) for m in st.models}
    assert acc["m0"] < acc["m1"] < acc["m2"]
    lo = acc["m1"]                                       # inclusive lower end: m1 stays, m0 goes
    for band in ((lo, 1.0), f"{lo!r},1", f"{lo!r}, 1.0", (lo * 100, 100)):
        df = dv.pairs(st, split="test", acc_band=band, n_boot=0)
        assert list(zip(df.model_a, df.model_b)) == [("m1", "m2")], band
        df = dv.pairs(st, split="test", base="m0", acc_band=band, n_boot=0)
        assert list(df.model_b) == ["m1", "m2"], band     # the base is kept outside the band
    for bad in ("0.7", "0.7,0.8,0.9", "a,b", "0.8,0.7", "-1,0.5"):
        with pytest.raises(DivergentError, match="accuracy band"):
            dv.pairs(st, split="test", acc_band=bad, n_boot=0)


def test_percent_bounds_are_the_decimals_written():
    # every accuracy k / 500 written as a one-decimal percent must be that accuracy, bitwise, so that a
    # band (or --acc-max) that ends exactly at a model's accuracy keeps it; 1.4 / 100 != 0.014 in floats
    from divergent.analyses._select import fraction, parse_band

    for k in range(501):
        pct = f"{k / 5:.1f}"
        if k / 500 > 0.01:                                  # 1 % and below read as fractions
            assert fraction(float(pct)) == k / 500, pct
        assert parse_band(f"{pct},100") == (k / 500, 1.0), pct
    assert fraction(0.75) == 0.75 and fraction(75) == 0.75 and fraction(1) == 1.0
