"""How CLI commands print or save a result table (CSV / Parquet / JSON, written atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import DivergentError


def write_table(df, out: Path) -> None:
    """Save `df` by the file's suffix, atomically (temp file + rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix in (".parquet", ".pq"):
        df.to_parquet(tmp, index=False)
    elif out.suffix == ".json":
        df.to_json(tmp, orient="records", indent=1)
    elif out.suffix in (".csv", ".txt", ""):
        df.to_csv(tmp, index=False)
    else:
        raise DivergentError(f"cannot write {out.name!r}", "use a .csv, .json or .parquet file name")
    tmp.replace(out)
    typer.echo(f"wrote {len(df)} rows to {out}")


def show_table(df, out: Optional[Path] = None, *, floatfmt: str = "{:.4f}") -> None:
    """Save to `out` when given, else print the whole table."""
    if out is not None:
        write_table(df, out)
        return
    import pandas as pd

    with pd.option_context("display.max_rows", 300, "display.max_columns", 30, "display.width", 200):
        typer.echo(df.to_string(index=False, float_format=lambda v: floatfmt.format(v)))
