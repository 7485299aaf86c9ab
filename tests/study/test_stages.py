"""Pure pieces of the study stages: exact greedy selection with held-out discipline, representatives,
the accuracy band, and the CLI's error path."""
from __future__ import annotations

import numpy as np
import pandas as pd

from divergent.study.analysis_stages import band_of, greedy_exact, representatives


def _onehot(pred, k=3, conf=0.9):
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_greedy_selects_on_fit_split_and_reports_eval():
    y = np.array([0, 1, 2, 0, 1, 2])
    # 'good-fit' helps on the fit split only; 'good-eval' helps on the eval split only
    base_fit = _onehot([0, 1, 2, 1, 2, 0], conf=0.5)
    base_ev = _onehot([0, 1, 2, 1, 2, 0], conf=0.5)
    P_fit = {"base": base_fit, "good-fit": _onehot([0, 1, 2, 0, 1, 2]), "good-eval": _onehot([2, 2, 2, 2, 2, 2])}
    P_ev = {"base": base_ev, "good-fit": _onehot([2, 2, 2, 2, 2, 2]), "good-eval": _onehot([0, 1, 2, 0, 1, 2])}
    rows = greedy_exact(P_fit, y, P_ev, y, "base", ["good-fit", "good-eval"], max_size=2)
    assert [r["added"] for r in rows] == ["base", "good-fit"]  # never chosen by its eval accuracy
    assert rows[0]["holdout_acc"] == 0.5 and rows[1]["holdout_acc"] == 1.0
    # the reported eval accuracy is the mean of the two members' probabilities on eval
    q = (base_ev + P_ev["good-fit"]) / 2
    assert rows[1]["test_acc"] == float((q.argmax(1) == y).mean())


def test_greedy_tie_break_is_by_name_not_pool_order():
    y = np.array([0, 1, 2])
    P = {"base": _onehot([0, 1, 0]), "b": _onehot([0, 1, 2]), "a": _onehot([0, 1, 2])}
    r1 = greedy_exact(P, y, P, y, "base", ["b", "a"], 2)
    r2 = greedy_exact(P, y, P, y, "base", ["a", "b"], 2)
    assert r1[1]["added"] == r2[1]["added"] == "a"


def test_representative_is_closest_in_accuracy():
    pairs = pd.DataFrame({"model_a": "B", "model_b": ["r1", "r2", "d1", "d2"],
                          "category": ["reinit", "reinit", "dataset", "dataset"]})
    acc = {"B": 0.80, "r1": 0.70, "r2": 0.79, "d1": 0.60, "d2": 0.95}
    assert representatives(pairs, "B", acc) == {"reinit": "r2", "dataset": "d2"}


def test_band_auto_and_fixed():
    cfg = {"analysis": {"acc_band": "auto", "band_halfwidth": 0.03}}
    assert band_of(cfg, 0.8) == (0.77, 0.8300000000000001)
    cfg["analysis"]["acc_band"] = [0.7, 0.9]
    assert band_of(cfg, 0.8) == (0.7, 0.9)


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
