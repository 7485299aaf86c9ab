"""What CLI commands share: printing errors, saving result tables (CSV / Parquet / JSON, atomically), --wait."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._files import atomic_path
from ..errors import DivergentError


def print_error(problem: str, fix: str | None) -> None:
    """The one format of an error on stderr: `error: PROBLEM` then `  fix: FIX`."""
    lines = str(problem).splitlines() or [""]
    typer.secho(f"error: {lines[0]}", fg="red", err=True)
    for extra in lines[1:]:
        typer.secho(f"  {extra}", err=True)
    if fix:
        typer.secho(f"  fix: {fix}", err=True)


def wait_option(default: float, what: str):
    """The `--wait SECONDS` option of every command that writes a store (one rule, docs/conventions.md)."""
    return typer.Option(default, "--wait", metavar="SECONDS", min=0.0,
                        help=f"wait up to SECONDS for another process writing the store, then refuse "
                             f"(0: refuse at once; default {default:g}: {what})", show_default=False)


def claim_early(store, wait: float) -> None:
    """Before long work that ends in a write: wait for (or refuse) another writer now, not at the end."""
    from ..store import wait_for_writer

    root = Path(store)
    if (root / "manifest.json").is_file():
        wait_for_writer(root, wait)


def write_table(df, out: Path) -> None:
    """Save `df` by the file's suffix, atomically (divergent._files.atomic_path)."""
    if out.suffix not in (".parquet", ".pq", ".json", ".csv", ".txt", ""):
        raise DivergentError(f"cannot write {out.name!r}", "use a .csv, .json or .parquet file name")
    with atomic_path(out) as tmp:
        if out.suffix in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        elif out.suffix == ".json":
            df.to_json(tmp, orient="records", indent=1)
        else:
            df.to_csv(tmp, index=False)
    typer.echo(f"wrote {len(df)} rows to {out}")


def show_table(df, out: Optional[Path] = None, *, digits: int = 4) -> None:
    """Save to `out` when given, else print the whole table, each number written by the one rule of
    divergent.report.tables.format_frame (whole numbers as integers, blank when missing, small and
    large magnitudes in scientific notation, else `digits` decimals)."""
    if out is not None:
        write_table(df, out)
        return
    import pandas as pd

    from ..report.tables import format_frame

    with pd.option_context("display.max_rows", 300, "display.max_columns", 30, "display.width", 200):
        typer.echo(format_frame(df, digits).to_string(index=False))
