"""Store-level accuracy/agreement on the line and CKA: tables, CLI, and CKA on real features."""
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import divergent as dv
from divergent.analyses.cka import cka_error_inconsistency
from divergent.analyses.lines import LinesDoNotHoldWarning
from divergent.cards import ModelCard
from divergent.cli import main
from divergent.errors import DivergentError
from divergent.metrics import cka as cm
from divergent.metrics import lines as lm
from divergent.metrics.probs import reference_probs
from divergent.store import Store

N, C = 900, 5
CARDS = {"m0": dict(family="resnet", seed=0, train_data="cifar10"), "m1": dict(family="resnet", seed=1, train_data="cifar10"),
         "m2": dict(family="resnet", seed=2, train_data="cifar10"), "m3": dict(family="vgg", seed=0, train_data="cifar10"),
         "m4": dict(family="resnet", seed=0, train_data="imagenet")}
SKILL = {"m0": 2.2, "m1": 2.0, "m2": 1.6, "m3": 1.2, "m4": 0.9}


@pytest.fixture
def shift_store(tmp_path):
    """Synthetic models (property tests only) on holdout, test and a shifted test whose rows are
    stored in another order: shifted logits keep each model's noise and lose skill."""
    rng = np.random.default_rng(0)
    st = Store.create(tmp_path / "store")
    perm = rng.permutation(N)
    with st.writer() as w:
        for split in ("holdout", "test"):
            y = rng.integers(0, C, N)
            ids = np.array([f"{split}/{i:04d}" for i in range(N)])
            w.add_split(split, labels=y, class_names=[f"c{i}" for i in range(C)], ids=ids, dataset="toy")
            if split == "test":
                w.add_split("test~noise-3", labels=y[perm], class_names=[f"c{i}" for i in range(C)], ids=ids[perm],
                            dataset="toy")
            shared = rng.normal(size=(N, C))
            for m, k in SKILL.items():
                z = rng.normal(size=(N, C)) + 0.8 * shared
                zl = z.copy()
                zl[np.arange(N), y] += k
                w.put(m, split, logits=zl.astype(np.float32), card=ModelCard(name=m, **CARDS[m]))
                if split == "test":
                    zs = z + 0.9 * rng.normal(size=(N, C))
                    zs[np.arange(N), y] += 0.55 * k
                    w.put(m, "test~noise-3", logits=zs[perm].astype(np.float32))
    dv.calibrate(st.root, fit_on="holdout", progress=False)
    return Store.open(tmp_path / "store")


def _preds(st, m, split, order=None):
    z = np.asarray(st.array(m, split, "logits"))
    p = np.argmax(z, axis=1)
    return p if order is None else p[order]


def test_lines_tables_match_direct_computation(shift_store):
    st = shift_store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinesDoNotHoldWarning)  # noisy synthetic pairs: R^2 below 0.8
        res = dv.lines(st.root, split="test", shifted="test~*", n_boot=200)
    assert set(res.tables()) == {"estimates", "lines", "categories", "errors"}
    est = res.estimates.set_index("model")
    names = list(SKILL)
    assert list(est.index) == names
    y = st.split("test").labels
    order = np.argsort(st.split("test~noise-3").ids)  # ids are test/NNNN: sorting restores test order
    pid = np.stack([_preds(st, m, "test") for m in names])
    psh = np.stack([_preds(st, m, "test~noise-3", order) for m in names])
    acc_id, acc_sh = (pid == y).mean(1), (psh == y).mean(1)
    pr = lm.pair_index(len(names))
    agr_id = (pid[pr[:, 0]] == pid[pr[:, 1]]).mean(1)
    agr_sh = (psh[pr[:, 0]] == psh[pr[:, 1]]).mean(1)
    np.testing.assert_allclose(est["acc_id"], acc_id)
    np.testing.assert_allclose(est["acc_true"], acc_sh)
    np.testing.assert_allclose(est["aline_s"], lm.aline_s(acc_id, agr_id, agr_sh)["estimate"])
    np.testing.assert_allclose(est["aline_d"], lm.aline_d(acc_id, agr_id, agr_sh)["estimate"])
    # ATC by hand for one model: calibrated negative entropy, threshold on the holdout
    t = st.calibration("m2")["temperature"]
    yh = st.split("holdout").labels
    zh = np.asarray(st.array("m2", "holdout", "logits"))
    thr = lm.atc_threshold(lm.atc_score(reference_probs(zh, t)), zh.argmax(1) == yh)
    atc = lm.atc_estimate(lm.atc_score(reference_probs(np.asarray(st.array("m2", "test~noise-3", "logits")), t)), thr)
    assert est.loc["m2", "atc"] == pytest.approx(atc)
    err = res.errors.set_index("method")
    assert err.loc["id_accuracy", "mae"] == pytest.approx(np.abs(acc_id - acc_sh).mean())
    assert err.loc["aline_d", "mae"] == pytest.approx(np.abs(est["aline_d"] - acc_sh).mean())
    assert err.loc["aline_s", "mae"] < err.loc["id_accuracy", "mae"]
    ln = res.lines.set_index("line")
    fa = lm.fit_line(lm.probit(acc_id), lm.probit(acc_sh))
    assert ln.loc["accuracy", "slope"] == pytest.approx(float(fa["slope"]))
    assert ln.loc["agreement", "n_points"] == 10
    for k in ("slope", "bias", "r2"):
        assert (ln[f"{k}_lo"] <= ln[k]).all() and (ln[k] <= ln[f"{k}_hi"]).all()
    cat = res.categories.set_index("category")
    assert set(cat.index) == {"reinit", "architecture", "dataset"}
    assert cat["n_pairs"].sum() == 10
    # reinit pairs: (m0, m1), (m0, m2), (m1, m2); residuals from the all-pairs agreement line
    fg = lm.fit_line(lm.probit(agr_id), lm.probit(agr_sh))
    res_g = lm.probit(agr_sh) - (fg["slope"] * lm.probit(agr_id) + fg["bias"])
    reinit = [0, 1, 4]  # rows of those pairs in lm.pair_index(5)
    assert cat.loc["reinit", "n_pairs"] == 3
    assert cat.loc["reinit", "mean_residual"] == pytest.approx(res_g[reinit].mean())
    assert cat.loc["reinit", "rms_residual"] == pytest.approx(np.sqrt((res_g[reinit] ** 2).mean()))
    f_re = lm.fit_line(lm.probit(agr_id)[reinit], lm.probit(agr_sh)[reinit])
    assert cat.loc["reinit", "slope"] == pytest.approx(float(f_re["slope"]))


def test_lines_warn_when_they_do_not_hold(shift_store):
    with pytest.warns(LinesDoNotHoldWarning, match="R\\^2"):
        res = dv.lines(shift_store.root, r2_min=1.01, n_boot=50, atc=False)
    assert not res.estimates["lines_hold"].any()
    assert "R^2" in res.lines["why_not"].iloc[0]
    assert res.estimates["atc"].isna().all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinesDoNotHoldWarning)
        dv.lines(shift_store.root, r2_min=0.0, n_boot=0, atc=False)  # no R^2 rule, no intervals: holds


def test_lines_refusals(shift_store, tmp_path):
    st = shift_store
    with pytest.raises(DivergentError, match="no split matches"):
        dv.lines(st.root, shifted="test~blur*")
    with pytest.raises(DivergentError, match="not a shifted version"):
        dv.lines(st.root, shifted="holdout")
    with pytest.raises(DivergentError, match=">= 3"):
        dv.lines(st.root, models="m0,m1", n_boot=0)
    with pytest.raises(DivergentError, match="refusing to fit"):
        dv.lines(st.root, fit_on="test", n_boot=0)
    with st.writer() as w:  # a "shifted" split whose labels disagree with its source
        sd = st.split("test")
        w.add_split("test~relabelled", labels=(sd.labels + 1) % C, class_names=sd.class_names, ids=sd.ids, dataset="toy")
        for m in SKILL:
            w.put(m, "test~relabelled", logits=np.asarray(st.array(m, "test", "logits")))
    with pytest.raises(DivergentError, match="other labels"):
        dv.lines(st.root, shifted="test~relabelled", n_boot=0)


def test_lines_and_cka_cli(shift_store, tmp_path, capsys):
    out, lines_out = tmp_path / "est.csv", tmp_path / "lines.csv"
    rc = main(["lines", str(shift_store.root), "--split", "test", "--shifted", "test~*", "--out", str(out),
               "--lines-out", str(lines_out), "--n-boot", "50"])
    assert rc == 0, capsys.readouterr().err
    est = pd.read_csv(out)
    assert list(est.columns[:9]) == ["model", "split", "shifted_split", "acc_id", "acc_true", "aline_s", "aline_d",
                                    "atc", "lines_hold"]
    assert len(est) == 5 and set(pd.read_csv(lines_out)["line"]) == {"accuracy", "agreement"}
    assert "mean absolute error" in capsys.readouterr().out
    rc = main(["lines", str(shift_store.root), "--shifted", "nope~*"])
    assert rc == 2 and "no split matches" in capsys.readouterr().err
    rc = main(["cka", str(shift_store.root), "--split", "test"])
    assert rc == 2 and "features" in capsys.readouterr().err
    with pytest.raises(DivergentError, match="has no features"):
        dv.cka(shift_store.root, models="m0,m1")


# ---- CKA on real features ---------------------------------------------------------------------
REAL = ("cifar10/resnet20", "cifar10/resnet32")


def _cifar_folder():
    spec = importlib.util.spec_from_file_location("extract_fixtures", Path(__file__).parents[1] / "extract" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.cifar_folder


@pytest.fixture(scope="module")
def real_store(shared_dir, tmp_path_factory):
    """Real CIFAR-10 JPEGs through two real pretrained CIFAR ResNets (logits + 64-d embeddings),
    and 'r20-rotated': ResNet-20's embedding rotated and scaled (X Q * 2.5), with its logits
    (the same classifier: the head W Q' / 2.5 on the rotated embedding)."""
    pytest.importorskip("torch")
    from divergent.extract import extract

    tmp = tmp_path_factory.mktemp("cka_real")
    folder = _cifar_folder()(shared_dir, tmp / "imgs", 12)
    for m in REAL:
        extract(tmp / "st", m, str(folder), "all", batch_size=64, device="cpu", workers=0, progress=False)
    st = Store.open(tmp / "st")
    X = np.asarray(st.array(REAL[0], "all", "features"), dtype=np.float64)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(X.shape[1], X.shape[1])))
    with st.writer() as w:
        w.put("r20-rotated", "all", features=(X @ Q * 2.5).astype(np.float32),
              logits=np.asarray(st.array(REAL[0], "all", "logits")),
              card=ModelCard(name="r20-rotated", family="resnet", train_data="cifar10"))
    return Store.open(tmp / "st")


@pytest.mark.slow
@pytest.mark.needs_shared
def test_cka_on_real_features(real_store):
    st = real_store
    names = list(REAL)
    X = np.asarray(st.array(names[0], "all", "features"), dtype=np.float64)
    Y = np.asarray(st.array(names[1], "all", "features"), dtype=np.float64)
    assert X.shape == (120, 64)
    for unbiased in (False, True):
        df = dv.cka(st.root, split="all", unbiased=unbiased, n_boot=100)
        assert list(df.columns) == ["model_a", "model_b", "category", "cka", "cka_lo", "cka_hi"]
        t = {frozenset((a, b)): r for a, b, r in zip(df["model_a"], df["model_b"], df.itertuples())}
        same = t[frozenset((names[0], "r20-rotated"))]
        assert same.cka == pytest.approx(1.0, abs=1e-6) and same.cka_lo == pytest.approx(1.0, abs=1e-6)
        r = t[frozenset(names[:2])]
        assert r.cka == pytest.approx(cm.cka_gram(X, Y, unbiased=unbiased), abs=1e-9)
        assert t[frozenset((names[1], "r20-rotated"))].cka == pytest.approx(r.cka, abs=1e-6)
        assert 0.2 < r.cka < 0.999 and r.cka_lo < r.cka < r.cka_hi
    sub = dv.cka(st.root, split="all", models=names[:2], n_boot=0)
    assert len(sub) == 1 and np.isnan(sub["cka_lo"].iloc[0])


@pytest.mark.slow
@pytest.mark.needs_shared
def test_cka_against_error_inconsistency_on_real_models(real_store):
    names = [*REAL, "r20-rotated"]
    df = cka_error_inconsistency(real_store.root, split="all", models=names, n_boot=50)
    y = real_store.split("all").labels
    ok = {m: np.asarray(real_store.array(m, "all", "logits")).argmax(1) == y for m in names}
    for r in df.itertuples():
        assert r.error_inconsistency == pytest.approx(np.mean(ok[r.model_a] != ok[r.model_b]))
    from scipy.stats import spearmanr

    assert df.attrs["spearman"] == pytest.approx(spearmanr(df["cka"], df["error_inconsistency"])[0])
    assert df.attrs["spearman_lo"] <= df.attrs["spearman_hi"]
