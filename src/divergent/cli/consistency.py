"""`divergent consistency`: how human-like each model's decisions are (model-vs-human's table)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the `consistency` command to the divergent CLI."""

    @app.command("consistency")
    def consistency_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        humans: str = typer.Option("subject-*", "--humans",
                                   help="human observers: names or wildcard patterns, comma-separated "
                                        "(matched against the whole name or its last '/' part)"),
        models: Optional[str] = typer.Option(None, "--models", help="models to compare (default: every other model)"),
        splits: Optional[str] = typer.Option(None, "--splits",
                                             help="splits (datasets) to use (default: model-vs-human's default "
                                                  "datasets the store holds, else every split)"),
        aggregate: str = typer.Option("model-vs-human", "--aggregate",
                                      help="model-vs-human: one row per model (+ humans), averaged over conditions, "
                                           "humans, datasets; none: one row per model, human, dataset, condition"),
        all_conditions: bool = typer.Option(False, "--all-conditions",
                                            help="keep the conditions model-vs-human excludes"),
        out: Optional[Path] = typer.Option(None, "--out", help="CSV / Parquet / JSON file"),
    ) -> None:
        """Accuracy difference, observed consistency and error consistency of models vs human observers."""
        from ..analyses.consistency import consistency
        from ._output import show_table

        show_table(consistency(store, humans=humans, models=models, splits=splits, aggregate=aggregate,
                               exclude=not all_conditions), out)
