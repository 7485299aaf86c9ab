"""Pieces of the study stages: greedy selection (the library's) with held-out discipline, representatives,
the accuracy band, and the CLI's error path."""
from __future__ import annotations

import numpy as np
import pandas as pd

from divergent.analyses.ensembles import lower_pool, representatives, run_greedy
from divergent.study.analysis_stages import band_of


def _onehot(pred, k=3, conf=0.9):
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def _prob_store(path, y, P_fit, P_ev):
    """A store with holdout (fit) and test (eval) probabilities, calibrated at T = 1 on the holdout."""
    from divergent.store import Store

    st = Store.create(path)
    with st.writer() as w:
        for s in ("holdout", "test"):
            w.add_split(s, labels=y, class_names=["a", "b", "c"], ids=np.array([f"{s}/{i}" for i in range(len(y))]))
        for m in P_fit:
            w.put(m, "holdout", probs=P_fit[m].astype(np.float32))
            w.put(m, "test", probs=P_ev[m].astype(np.float32))
            w.set_temperature(m, 1.0, fit_on="holdout")
    return Store.open(path)


def test_greedy_selects_on_fit_split_and_reports_eval(tmp_path):
    y = np.array([0, 1, 2, 0, 1, 2])
    # 'good-fit' helps on the fit split only; 'good-eval' helps on the eval split only
    base_fit = _onehot([0, 1, 2, 1, 2, 0], conf=0.5)
    base_ev = _onehot([0, 1, 2, 1, 2, 0], conf=0.5)
    P_fit = {"base": base_fit, "good-fit": _onehot([0, 1, 2, 0, 1, 2]), "good-eval": _onehot([2, 2, 2, 2, 2, 2])}
    P_ev = {"base": base_ev, "good-fit": _onehot([2, 2, 2, 2, 2, 2]), "good-eval": _onehot([0, 1, 2, 0, 1, 2])}
    st = _prob_store(tmp_path / "s", y, P_fit, P_ev)
    df, members = run_greedy(st, "base", ["good-fit", "good-eval"], 2, {"good-fit": "reinit"})
    assert list(df["added"]) == ["base", "good-fit"]  # never chosen by its eval accuracy
    assert list(df["holdout_acc"]) == [0.5, 1.0] and members == ["base", "good-fit"]
    assert list(df["category"]) == ["base", "reinit"] and list(df["selected"]) == [False, True]
    # the reported eval accuracy is the mean of the two members' probabilities on eval
    q = (base_ev + P_ev["good-fit"]) / 2
    assert df["test_acc"].iloc[1] == float((q.argmax(1) == y).mean())
    assert {"base", "size", "added", "category", "holdout_acc", "test_acc"} <= set(df.columns)


def test_greedy_tie_break_is_by_name_not_pool_order(tmp_path):
    y = np.array([0, 1, 2])
    P = {"base": _onehot([0, 1, 0]), "b": _onehot([0, 1, 2]), "a": _onehot([0, 1, 2])}
    st = _prob_store(tmp_path / "s", y, P, P)
    r1, _ = run_greedy(st, "base", ["b", "a"], 2, {})
    r2, _ = run_greedy(st, "base", ["a", "b"], 2, {})
    assert r1["added"].iloc[1] == r2["added"].iloc[1] == "a"


def test_greedy_empty_pool_is_the_base_alone(tmp_path):
    y = np.array([0, 1, 2])
    P = {"base": _onehot([0, 1, 0])}
    df, members = run_greedy(_prob_store(tmp_path / "s", y, P, P), "base", [], 3, {})
    assert members == ["base"] and list(df["size"]) == [1] and bool(df["selected"].iloc[0])
    assert lower_pool(_prob_store(tmp_path / "t", y, {**P, "w": _onehot([0, 0, 0]), "s": _onehot([0, 1, 2])},
                                  {**P, "w": _onehot([0, 0, 0]), "s": _onehot([0, 1, 2])}), "base", ["w", "s"]) == ["w"]


def test_representative_is_closest_in_accuracy():
    pairs = pd.DataFrame({"model_a": "B", "model_b": ["r1", "r2", "d1", "d2"],
                          "category": ["reinit", "reinit", "dataset", "dataset"]})
    acc = {"B": 0.80, "r1": 0.70, "r2": 0.79, "d1": 0.60, "d2": 0.95}
    assert representatives(pairs, "B", acc) == {"reinit": "r2", "dataset": "d2"}


def test_band_auto_and_fixed():
    # "auto": the base's accuracy +- the half-width (in float arithmetic), clipped to [0, 1]
    from dataclasses import replace

    from divergent.study.config import AnalysisSection

    cfg = AnalysisSection(acc_band="auto", band_halfwidth=0.03)
    assert band_of(cfg, 0.8) == (0.8 - 0.03, 0.8 + 0.03)
    assert band_of(cfg, 0.99) == (0.99 - 0.03, 1.0) and band_of(cfg, 0.02) == (0.0, 0.02 + 0.03)
    cfg = replace(cfg, band_halfwidth=0.05)
    assert band_of(cfg, 0.5) == (0.5 - 0.05, 0.5 + 0.05)
    cfg = replace(cfg, acc_band=[0.7, 0.9])
    assert band_of(cfg, 0.8) == (0.7, 0.9) and band_of(cfg, 0.2) == (0.7, 0.9)  # fixed: the base does not move it


def test_cli_bad_preset_exits_2(capsys):
    from divergent.cli import main

    assert main(["study", "run", "fashion-mnst", "--out", "/tmp/never-used-divergent"]) == 2
    err = capsys.readouterr().err
    assert "fashion-mnist" in err


def test_prune_removes_models_of_an_earlier_zoo(tmp_path):
    import logging

    from divergent.store import Store
    from divergent.study.plan import prune_store

    st = Store.create(tmp_path / "store")
    y = np.array([0, 1, 2, 1])
    with st.writer() as w:
        w.add_split("test", labels=y, class_names=["a", "b", "c"], ids=np.array(["t/0", "t/1", "t/2", "t/3"]))
        for m in ("keep", "old"):
            w.put(m, "test", logits=np.eye(3, dtype=np.float32)[y] * 3)
    assert prune_store(tmp_path / "store", ["keep"], logging.getLogger("t")) == ["old"]
    assert Store.open(tmp_path / "store").models == ["keep"]
    assert prune_store(tmp_path / "nostore", ["keep"], logging.getLogger("t")) == []
