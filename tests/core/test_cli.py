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


def _npz_store(tmp_path, skills=(1.0, 1.5, 2.0), n=500):
    """A store built through `divergent import`: models m0, m1, ... on holdout and test (real CLI path)."""
    rng = np.random.default_rng(1)
    y = {s: rng.integers(0, 4, n) for s in ("holdout", "test")}
    acc = {}
    for i, skill in enumerate(skills):
        for split in ("holdout", "test"):
            z = rng.normal(size=(n, 4)).astype(np.float32)
            z[np.arange(n), y[split]] += skill
            np.savez(tmp_path / f"m{i}{split}.npz", labels=y[split], logits=z)
            assert main(["import", str(tmp_path / "s"), str(tmp_path / f"m{i}{split}.npz"), "--split", split,
                         "--model", f"m{i}"]) == 0
            if split == "test":
                acc[f"m{i}"] = float(np.mean(z.argmax(1) == y[split]))
    return tmp_path / "s", acc


def test_cli_pairs_acc_band(tmp_path, capsys):
    st, acc = _npz_store(tmp_path)
    assert acc["m0"] < acc["m1"] < acc["m2"]
    assert main(["calibrate", str(st), "--fit-on", "holdout"]) == 0

    def pairs(*args):
        out = tmp_path / "p.csv"
        assert main(["pairs", str(st), "--split", "test", "--n-boot", "0", "--out", str(out), *args]) == 0
        return sorted(zip(*pd.read_csv(out)[["model_a", "model_b"]].to_numpy().T))

    assert pairs("--all") == [("m0", "m1"), ("m0", "m2"), ("m1", "m2")]
    # the band's lower end is m1's accuracy (500 examples: a percent with one decimal); inclusive
    lo = acc["m1"]
    for band in (f"{lo!r},1", f"{lo * 100:.1f},100", f"{lo * 100:.1f},{acc['m2'] * 100:.1f}"):
        assert pairs("--all", "--acc-band", band) == [("m1", "m2")], band
        assert pairs("--base", "m0", "--acc-band", band) == [("m0", "m1"), ("m0", "m2")], band  # the base stays
    capsys.readouterr()
    assert main(["pairs", str(st), "--all", "--acc-band", f"{acc['m2'] * 100:.1f},100"]) == 2  # m2 alone
    assert "fewer than two models" in capsys.readouterr().err
    assert main(["pairs", str(st), "--all", "--acc-band", "0.7;0.8"]) == 2
    assert "cannot read accuracy band" in capsys.readouterr().err
    assert main(["pairs", str(st), "--all", "--base", "m0"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_cli_calibrate_warns_at_the_bound(tmp_path):
    import os
    import subprocess
    import sys

    n = 400
    y = np.random.default_rng(2).integers(0, 5, n)
    sure = np.zeros((n, 5), np.float32)
    sure[np.arange(n), y] = 1e-4   # always right with tiny margins: NLL falls as T -> 0
    np.savez(tmp_path / "sure.npz", labels=y, logits=sure)
    assert main(["import", str(tmp_path / "s"), str(tmp_path / "sure.npz"), "--split", "holdout",
                 "--model", "sure"]) == 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    cli = "import sys; from divergent.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", cli, "calibrate", str(tmp_path / "s"), "--fit-on", "holdout"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "sure: temperature fit ended at a bound (T = 0.001)" in proc.stderr
    assert "Traceback" not in proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.split()[:1] == ["sure"])
    assert "True" in row.split()   # the at_bound column
