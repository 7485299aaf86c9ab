"""`divergent ensemble`: greedy ensembles selected on the holdout, evaluated on test (Sections 3.3, 4.5)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..conventions import HOLDOUT, TEST
from ._output import write_table


def register(app: typer.Typer) -> None:
    """Add the `ensemble` and `base-plus-one` commands to the divergent CLI."""

    @app.command("ensemble")
    def ensemble_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        base: str = typer.Option(..., "--base", help="the model the ensemble starts from"),
        fit_on: str = typer.Option(HOLDOUT, "--fit-on", help="split members are selected (and weights fitted) on"),
        split: str = typer.Option(TEST, "--split", help="the split that is evaluated"),
        pool: Optional[str] = typer.Option(None, "--pool", help="candidate models: names or wildcard patterns, comma-separated"),
        max_size: int = typer.Option(10, "--max-size", help="largest ensemble (members, the base included)"),
        replacement: bool = typer.Option(False, "--replacement", help="allow a model to be added more than once"),
        acc_max: Optional[float] = typer.Option(None, "--acc-max", help="keep pool models with accuracy <= X on --split"),
        acc_band: Optional[str] = typer.Option(None, "--acc-band", help="keep pool models with accuracy in LO,HI on --split"),
        rule: str = typer.Option("mean-probs", "--rule", help="mean-probs | mean-logits | weighted"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the trajectory (.csv, .json or .parquet)"),
        allow_fit_on_eval: bool = typer.Option(False, "--allow-fit-on-eval", help="permit --fit-on == --split"),
        uncalibrated: bool = typer.Option(False, "--uncalibrated", help="use raw probabilities (T = 1)"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Greedy forward selection (Caruana et al. 2004): accuracy on --fit-on decides, --split is reported."""
        from ..analyses.ensembles import greedy_ensemble

        df = greedy_ensemble(store, base, pool=pool, fit_on=fit_on, split=split, max_size=max_size,
                             replacement=replacement, acc_max=acc_max, acc_band=acc_band, rule=rule,
                             allow_fit_on_eval=allow_fit_on_eval, calibrated=not uncalibrated, progress=progress)
        typer.echo(f"greedy ensemble from {base!r} ({rule}; selected on {fit_on!r}, evaluated on {split!r}):")
        for r in df.itertuples(index=False):
            mark = "  <- best on fit split" if r.best else ""
            typer.echo(f"  {r.step:2d} +{r.member:<32} {r.category:<16} fit_acc {r.fit_acc:.4f}  "
                       f"{split}_acc {r.eval_acc:.4f}{mark}")
        if out is not None:
            write_table(df.drop(columns=[c for c in ("weights",) if c in df and out.suffix == ".csv"]), out)

    @app.command("base-plus-one")
    def base_plus_one_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        base: str = typer.Option(..., "--base", help="the base model"),
        split: str = typer.Option(TEST, "--split", help="the split that is evaluated"),
        fit_on: str = typer.Option(HOLDOUT, "--fit-on", help="split weights are fitted on (rule weighted)"),
        pool: Optional[str] = typer.Option(None, "--pool", help="candidate models: names or wildcard patterns"),
        acc_max: Optional[float] = typer.Option(None, "--acc-max", help="keep candidates with accuracy <= X on --split"),
        acc_band: Optional[str] = typer.Option(None, "--acc-band", help="keep candidates with accuracy in LO,HI on --split"),
        all_acc: bool = typer.Option(False, "--all", help="also candidates more accurate than the base"),
        rule: str = typer.Option("mean-probs", "--rule", help="mean-probs | mean-logits | weighted"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the table (.csv, .json or .parquet)"),
        allow_fit_on_eval: bool = typer.Option(False, "--allow-fit-on-eval", help="permit --fit-on == --split"),
        uncalibrated: bool = typer.Option(False, "--uncalibrated", help="use raw probabilities (T = 1)"),
    ) -> None:
        """The base ensembled with each lower-accuracy model in turn (Section 4.5, experiment 1)."""
        from ..analyses.ensembles import base_plus_one

        df = base_plus_one(store, base, pool=pool, fit_on=fit_on, split=split, acc_max=acc_max, acc_band=acc_band,
                           lower_only=not all_acc, rule=rule, allow_fit_on_eval=allow_fit_on_eval,
                           calibrated=not uncalibrated)
        typer.echo(f"{base!r} + one model ({rule}) on {split!r}:")
        for r in df.itertuples(index=False):
            ci = f" [{r.ci_low:.4f}, {r.ci_high:.4f}]" if hasattr(r, "ci_low") else ""
            typer.echo(f"  +{r.member:<32} {r.category:<16} member {r.member_acc:.4f}  "
                       f"ensemble {r.ensemble_acc:.4f}{ci}  gain {r.gain_vs_base:+.4f}")
        if out is not None:
            write_table(df, out)
