"""The core CLI words end to end on a small store: import, calibrate, pairs, cards, verify, export, rm."""
import numpy as np
import pandas as pd

from divergent.cli import main
from divergent.store import Store


def test_cli_flow(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    for split in ("holdout", "test"):
        for i in range(3):
            z = rng.normal(size=(300, 4)).astype(np.float32)
            z[np.arange(300), y] += 1 + i
            np.savez(tmp_path / f"m{i}{split}.npz", labels=y, logits=z)
            assert main(["import", str(tmp_path / "s"), str(tmp_path / f"m{i}{split}.npz"), "--split", split,
                         "--model", f"m{i}"]) == 0
    assert main(["calibrate", str(tmp_path / "s"), "--fit-on", "holdout"]) == 0
    assert main(["pairs", str(tmp_path / "s"), "--split", "test", "--base", "m0", "--out", str(tmp_path / "p.csv")]) == 0
    df = pd.read_csv(tmp_path / "p.csv")
    assert len(df) == 2 and {"error_inconsistency_lo", "conversion_rate"} <= set(df.columns)
    assert main(["pairs", str(tmp_path / "s"), "--split", "holdout"]) == 2  # fitted there: refused
    assert "fitted on 'holdout'" in capsys.readouterr().err
    assert main(["cards", str(tmp_path / "s"), "--base", "m0"]) == 0
    assert main(["verify", str(tmp_path / "s")]) == 0
    assert main(["export", str(tmp_path / "s"), "--out", str(tmp_path / "e.parquet")]) == 0
    e = pd.read_parquet(tmp_path / "e.parquet")
    assert len(e) == 3 * 2 * 300 and e["correct"].dtype == bool
    assert main(["rm", str(tmp_path / "s"), "m2"]) == 0
    assert Store.open(tmp_path / "s").models == ["m0", "m1"]
    assert main(["pairs", str(tmp_path / "s"), "--base", "nope"]) == 2
    assert "unknown base model" in capsys.readouterr().err


def test_category_summary_shared_resamples(toy_store):
    import divergent as dv
    from divergent.cards import ModelCard

    with toy_store.writer() as w:
        w.set_card("m1", ModelCard(name="m1", seed=1))
        w.set_card("m2", ModelCard(name="m2", family="mlp"))
    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    cs = dv.category_summary(toy_store, base="m0", split="test", n_boot=50)
    pt = dv.pairs(toy_store, split="test", base="m0", n_boot=0).set_index("model_b")
    r = cs[(cs.category == "architecture") & (cs.metric == "error_inconsistency")].iloc[0]
    assert r["mean"] == pt.loc["m2", "error_inconsistency"] and r["lo"] <= r["mean"] <= r["hi"]
    assert list(dict.fromkeys(cs.category)) == ["reinit", "architecture"]


def test_unknown_command_is_a_usage_error_not_a_traceback(capsys):
    assert main(["study", "plan", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert "No such command 'plan'" in err and "Traceback" not in err
    assert main(["pairs"]) == 2   # missing argument
    assert "Missing argument" in capsys.readouterr().err
