"""`divergent head`, `divergent features`, `divergent transfer`: linear evaluation (Sections 4.6-4.7)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..conventions import HOLDOUT, TEST, TRAIN, WAIT_INTERACTIVE
from ._output import claim_early, show_table, wait_option


def _grid(grid: str):
    """'default' | 'kornblith' | 'coarse' | comma-separated lam values."""
    if grid in ("default", "kornblith", "coarse"):
        return grid
    from ..errors import DivergentError

    try:
        return [float(v) for v in grid.split(",") if v.strip()]
    except ValueError:
        raise DivergentError(f"cannot read the lam grid {grid!r}",
                             "use default, kornblith, coarse or comma-separated numbers (1e-4,1e-3)") from None


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _torch_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def register(app: typer.Typer) -> None:
    """Add the `head`, `features` and `transfer` commands."""

    @app.command("head")
    def head_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        model: str = typer.Option(..., "--model", help="model whose stored features get a linear head"),
        fit_on: str = typer.Option(TRAIN, "--fit-on", help="split the head is trained on"),
        select_on: str = typer.Option(HOLDOUT, "--select-on", help="split lam is selected on"),
        grid: str = typer.Option("default", "--grid", help="default (decades + refinement), kornblith (45), coarse, or lam values"),
        name: Optional[str] = typer.Option(None, "--name", help="store the head as this model (default: the same model)"),
        max_train: Optional[int] = typer.Option(None, "--max-train", help="seeded stratified subset of the fit split"),
        seed: int = typer.Option(0, "--seed", help="seed of the --max-train subset"),
        force: bool = typer.Option(False, "--force", help="replace existing logits"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when present)"),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the lam sweep table (csv/parquet/json)"),
        wait: float = wait_option(WAIT_INTERACTIVE, "refuse at once"),
    ) -> None:
        """Fit an L-BFGS linear head on a model's embeddings; write its logits for every split."""
        from ..probes.heads import fit_head
        from ..store import Store, lock_wait

        _torch_threads(threads)
        claim_early(store, wait)
        with lock_wait(wait):
            res = fit_head(Store.open(store), model, fit_on, select_on, _grid(grid), name=name, max_train=max_train,
                           seed=seed, force=force, device=device)
        typer.echo(f"linear head for {model!r} stored as {res['name']!r}: lam={res['lam']:.3g} (C={res['C']:.3g}), "
                   f"fitted on {res['n_fit']} examples of {fit_on!r}, {select_on!r} accuracy {res['select_accuracy']:.4f}"
                   + ("" if res["converged"] else "  [NOT CONVERGED: see the sweep table]"))
        show_table(res["splits"], None)
        if out is not None:
            show_table(res["sweep"], out)

    @app.command("features")
    def features_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        a: str = typer.Option(..., "--a", help="model A (the base)"),
        b: str = typer.Option(..., "--b", help="model B"),
        mode: str = typer.Option("both", "--mode", help="random (inverse-rate subsets), ranked, or both"),
        fit_on: str = typer.Option(TRAIN, "--fit-on", help="split the probes are trained on"),
        select_on: str = typer.Option(HOLDOUT, "--select-on", help="split lam is selected on"),
        split: str = typer.Option(TEST, "--split", help="the split that is evaluated"),
        rates: str = typer.Option("0,0.25,0.5,0.75,1", "--rates", help="fractions of the budget taken from A"),
        seeds: int = typer.Option(3, "--seeds", help="random subsets per rate (seeds 0..n-1)"),
        rankings: str = typer.Option("variance,redundancy", "--rankings", help="variance, redundancy, random"),
        step: int = typer.Option(32, "--step", help="dimension step of the ranked curve (the paper: 256)"),
        max_dims: Optional[int] = typer.Option(None, "--max-dims", help="largest number of ranked dimensions"),
        target: Optional[float] = typer.Option(None, "--target", help="accuracy to reach (fraction or percent)"),
        grid: str = typer.Option("default", "--grid", help="lam grid (see divergent head)"),
        lam: Optional[float] = typer.Option(None, "--lam", help="fixed lam instead of selection"),
        max_train: Optional[int] = typer.Option(None, "--max-train", help="seeded stratified subset of the fit split"),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the table(s): X.csv -> X.random.csv, X.ranked.csv, X.target.csv"),
    ) -> None:
        """Feature combination of two models (Section 4.6): inverse-rate subsets and ranked selection."""
        from ..errors import DivergentError
        from ..probes.features import dims_to_target, feature_combination, ranked_features
        from ..store import Store

        if mode not in ("random", "ranked", "both"):
            raise DivergentError(f"unknown mode {mode!r}", "use random, ranked or both")
        _torch_threads(threads)
        st = Store.open(store)
        tables = {}
        if mode in ("random", "both"):
            tables["random"] = feature_combination(st, a, b, fit_on, select_on, split, rates=_floats(rates),
                                                   seeds=tuple(range(seeds)), grid=_grid(grid), lam=lam,
                                                   max_train=max_train)
        if mode in ("ranked", "both"):
            tables["ranked"] = ranked_features(st, a, b, fit_on, select_on, split,
                                               rankings=tuple(r.strip() for r in rankings.split(",") if r.strip()),
                                               step=step, max_dims=max_dims, grid=_grid(grid), lam=lam,
                                               max_train=max_train)
            if target is not None:
                tables["target"] = dims_to_target(tables["ranked"], target)
        for key, df in tables.items():
            typer.echo(f"== {key}")
            show_table(df, None if out is None else out.with_name(f"{out.stem}.{key}{out.suffix}"))
        if "target" in tables:
            for r in tables["target"].itertuples(index=False):
                if not r.reached:
                    typer.echo(f"{r.ranking}: the target accuracy {r.target:.4f} was never reached "
                               f"(best {r.best:.4f} with up to {r.max_dims_tested} dims)")

    @app.command("transfer")
    def transfer_cmd(
        store: Path = typer.Argument(..., help="the store directory"),
        models: str = typer.Option(..., "--models", help="comma-separated models with downstream embeddings"),
        task: Optional[str] = typer.Option(None, "--task", help="downstream dataset: splits TASK/train, TASK/holdout, TASK/test"),
        pairs: bool = typer.Option(True, "--pairs/--no-pairs", help="also evaluate every concatenated pair"),
        fit_on: str = typer.Option(TRAIN, "--fit-on", help="split the probes are trained on"),
        select_on: str = typer.Option(HOLDOUT, "--select-on", help="split lam is selected on"),
        split: str = typer.Option(TEST, "--split", help="the split that is evaluated"),
        grid: str = typer.Option("default", "--grid", help="lam grid (see divergent head)"),
        max_train: Optional[int] = typer.Option(None, "--max-train", help="subset of the fit split"),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the table (csv/parquet/json)"),
    ) -> None:
        """Downstream linear evaluation of single embeddings and stacked pairs (Section 4.7)."""
        from ..probes.transfer import transfer
        from ..store import Store

        _torch_threads(threads)
        df = transfer(Store.open(store), [m.strip() for m in models.split(",") if m.strip()], task, pairs,
                      fit_on=fit_on, select_on=select_on, split=split, grid=_grid(grid), max_train=max_train)
        show_table(df, out)
