"""scripts/findings_spread.py: one row per finding over several runs, with its spread and verdicts."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_spec = importlib.util.spec_from_file_location("findings_spread",
                                               Path(__file__).parents[2] / "scripts" / "findings_spread.py")
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)


def _run(root, name, estimates, verdicts):
    (root / name / "tables").mkdir(parents=True)
    pd.DataFrame({"claim": [1, 1, 3], "scope": ["all", "band", "all"], "statistic": ["rho", "rho", "deg"],
                  "estimate": estimates, "lo": 0.0, "hi": 1.0, "verdict": verdicts}).to_csv(
        root / name / "tables" / "findings.csv", index=False)
    return root / name


def test_spread_per_finding_over_runs(tmp_path, capsys):
    runs = [_run(tmp_path, "seed0", [0.8, np.nan, 7.0], ["holds", "inconclusive", "holds"]),
            _run(tmp_path, "seed1", [0.6, np.nan, 6.0], ["holds", "inconclusive", "inconclusive"]),
            _run(tmp_path, "seed2", [0.7, 0.5, 8.0], ["holds", "holds", "holds"])]
    t = fs.spread(runs)["findings.csv"].set_index(["claim", "scope"])
    assert list(t.index) == [(1, "all"), (1, "band"), (3, "all")]
    r = t.loc[(1, "all")]
    assert (r["estimate_seed0"], r["estimate_seed1"], r["estimate_seed2"]) == (0.8, 0.6, 0.7)
    assert r["mean"] == pytest.approx(0.7) and r["sd"] == pytest.approx(0.1) and (r["min"], r["max"]) == (0.6, 0.8)
    assert r["verdicts"] == "holds 3/3"
    # a finding not computed in some runs: the spread of those that were, the verdicts of all
    b = t.loc[(1, "band")]
    assert b["mean"] == 0.5 and np.isnan(b["sd"]) and b["verdicts"] == "inconclusive 2/3, holds 1/3"
    assert t.loc[(3, "all"), "sd"] == pytest.approx(1.0) and t.loc[(3, "all"), "verdicts"] == "holds 2/3, inconclusive 1/3"
    assert "shift_findings.csv" not in fs.spread(runs)
    assert fs.main([str(p) for p in runs]) == 0
    out = capsys.readouterr().out
    assert "## findings.csv" in out and "| 1 | all | 0.8 | 0.6 | 0.7 | 0.7 | 0.1 | 0.6 | 0.8 | holds 3/3 | 3 |" in out
    assert fs.main([str(runs[0])]) == 2 and fs.main([str(tmp_path / "x"), str(tmp_path / "y")]) == 2
