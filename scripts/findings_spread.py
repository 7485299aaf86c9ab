"""The spread of every finding over several runs of one study (e.g. zoo seeds), as Markdown.

    divergent study run --out runs/seed0 --set zoo.seed=0     # and seed1, seed2, ...
    python scripts/findings_spread.py runs/seed0 runs/seed1 runs/seed2

Reads OUT/tables/findings.csv (the paper's five claims, all models and band scopes) and, where the
runs have one, OUT/tables/shift_findings.csv (the ordering under each shift), and prints one row per
finding: its estimate in every run, their mean, standard deviation (n - 1) and range, and how
often each verdict came out. docs/study.md (Reproducibility) holds the default preset's table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from divergent.train.evaluate import markdown as markdown_table

#: table file -> the columns that name one finding in it
TABLES = {"findings.csv": ("claim", "scope"), "shift_findings.csv": ("split", "statistic")}


def spread(outs: list[str | Path]) -> dict[str, pd.DataFrame]:
    """{table: one row per finding} over the runs in `outs` (tables missing from a run are skipped)."""
    result = {}
    for name, key in TABLES.items():
        runs = [(Path(o).name, Path(o) / "tables" / name) for o in outs]
        runs = [(label, pd.read_csv(p)) for label, p in runs if p.is_file()]
        if len(runs) < 2:
            continue
        rows = {}
        for label, df in runs:
            for r in df.itertuples(index=False):
                k = tuple(getattr(r, c) for c in key)
                rows.setdefault(k, {})[label] = (float(r.estimate), str(r.verdict))
        out = []
        for k, by_run in rows.items():
            est = np.array([v[0] for v in by_run.values()], dtype=np.float64)
            ok = est[np.isfinite(est)]
            verdicts = pd.Series([v[1] for v in by_run.values()]).value_counts()
            out.append({**dict(zip(key, k)), **{f"estimate_{lab}": v[0] for lab, v in by_run.items()},
                        "mean": ok.mean() if ok.size else np.nan,
                        "sd": ok.std(ddof=1) if ok.size > 1 else np.nan,
                        "min": ok.min() if ok.size else np.nan, "max": ok.max() if ok.size else np.nan,
                        "verdicts": ", ".join(f"{v} {c}/{len(by_run)}" for v, c in verdicts.items()),
                        "runs": len(by_run)})
        result[name] = pd.DataFrame(out)
    return result


def main(argv=None) -> int:
    outs = sys.argv[1:] if argv is None else argv
    if len(outs) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    tables = spread(outs)
    if not tables:
        print("error: fewer than two of the runs have OUT/tables/findings.csv\n  fix: give finished study "
              "output directories", file=sys.stderr)
        return 2
    for name, df in tables.items():
        print(f"## {name}\n")
        print(markdown_table(df))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
