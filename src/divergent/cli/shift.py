"""`divergent lines` and `divergent cka`: models under distribution shift, and in representation."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from ..conventions import HOLDOUT, N_BOOT, TEST


def register(app: typer.Typer) -> None:
    """Add the `lines` and `cka` commands to the divergent CLI."""

    @app.command("lines")
    def lines_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        split: str = typer.Option(TEST, "--split", help="the in-distribution split"),
        shifted: Optional[str] = typer.Option(
            None, "--shifted", help="shifted splits: names or wildcards, comma-separated (default '<split>~*')"),
        models: Optional[str] = typer.Option(None, "--models", help="models: names or wildcards, comma-separated (default all)"),
        fit_on: str = typer.Option(HOLDOUT, "--fit-on", help="the labelled split ATC fits its threshold on"),
        atc_score: str = typer.Option("negent", "--atc-score", help="ATC's score: negent (negative entropy) or maxconf"),
        no_atc: bool = typer.Option(False, "--no-atc", help="skip ATC (no --fit-on split needed)"),
        out: Optional[Path] = typer.Option(
            None, "--out", help="per-model estimates (.csv/.json/.parquet): true and ID accuracy, ALine-S, ALine-D, ATC"),
        lines_out: Optional[Path] = typer.Option(None, "--lines-out", help="the fitted lines with intervals"),
        categories_out: Optional[Path] = typer.Option(
            None, "--categories-out", help="the agreement line per pair category (fits and residuals)"),
        n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples of the examples for the intervals"),
        seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
        uncalibrated: bool = typer.Option(False, "--uncalibrated", help="ATC on raw probabilities (T = 1)"),
        allow_fit_on_eval: bool = typer.Option(False, "--allow-fit-on-eval", help="allow --fit-on equal to --split"),
    ) -> None:
        """Accuracy and agreement on the line; ALine-S, ALine-D and ATC estimates of shifted accuracy."""
        from ..analyses.lines import LinesDoNotHoldWarning, lines
        from ._output import show_table, write_table

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LinesDoNotHoldWarning)
            res = lines(store, split=split, shifted=shifted, models=models, fit_on=fit_on, calibrated=not uncalibrated,
                        atc=not no_atc, atc_score=atc_score, n_boot=n_boot, seed=seed,
                        allow_fit_on_eval=allow_fit_on_eval)
        for w in caught:
            if issubclass(w.category, LinesDoNotHoldWarning):
                typer.secho(f"warning: {w.message}", fg="yellow", err=True)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        cols = ["shifted_split", "line", "slope", "slope_lo", "slope_hi", "bias", "bias_lo", "bias_hi", "r2", "lines_hold"]
        typer.echo("lines (probit scale):")
        show_table(res.lines[cols])
        typer.echo("mean absolute error of each estimate of the shifted accuracy:")
        show_table(res.errors[["shifted_split", "method", "mae", "max_abs_error", "n_models"]])
        if out is not None:
            write_table(res.estimates, out)
        else:
            show_table(res.estimates)
        if lines_out is not None:
            write_table(res.lines, lines_out)
        if categories_out is not None:
            write_table(res.categories, categories_out)

    @app.command("cka")
    def cka_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        split: str = typer.Option(TEST, "--split", help="the split whose features are compared"),
        models: Optional[str] = typer.Option(None, "--models", help="models: names or wildcards, comma-separated (default all with features)"),
        unbiased: bool = typer.Option(False, "--unbiased", help="the unbiased HSIC estimator (Song et al. 2012)"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the table (.csv/.json/.parquet)"),
        n_boot: int = typer.Option(200, "--n-boot", help="bootstrap resamples of the examples for the intervals"),
        seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    ) -> None:
        """Linear CKA between the embeddings of every model pair (exact, streamed), with intervals."""
        from ..analyses.cka import cka
        from ._output import show_table

        show_table(cka(store, split=split, models=models, unbiased=unbiased, n_boot=n_boot, seed=seed), out)
