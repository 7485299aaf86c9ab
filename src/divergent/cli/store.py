"""CLI commands of the core: import, verify, rm, export, cards, calibrate, pairs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..conventions import N_BOOT, WAIT_INTERACTIVE
from ..errors import DivergentError
from ._output import claim_early, show_table, wait_option


def _read_categories(path: Path) -> dict:
    import pandas as pd

    from ..cards import CATEGORY_ORDER

    df = pd.read_csv(path)
    need = {"model_a", "model_b", "category"}
    if not need <= set(df.columns):
        raise DivergentError(f"{path} needs columns {sorted(need)}", f"it has {list(df.columns)}")
    bad = sorted(set(df["category"]) - set(CATEGORY_ORDER))
    if bad:
        raise DivergentError(f"unknown categories {bad} in {path}", f"use {', '.join(CATEGORY_ORDER)}")
    return {(a, b): c for a, b, c in zip(df["model_a"], df["model_b"], df["category"])}


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_cmd(
        store: Path = typer.Argument(..., help="store directory (created if absent)"),
        file: Path = typer.Argument(..., help=".npz (labels + logits/probs/pred/features [+ ids, class_names]) or CSV/Parquet of decisions"),
        split: Optional[str] = typer.Option(None, "--split", help="split the predictions belong to (train, holdout, test, ...)"),
        model: Optional[str] = typer.Option(None, "--model", help="model name in the store"),
        card: Optional[Path] = typer.Option(None, "--card", help="model card (JSON or TOML)"),
        renormalize: bool = typer.Option(False, "--renormalize", help="accept probabilities not summing to 1 by renormalising (recorded)"),
        force: bool = typer.Option(False, "--force", help="replace existing arrays of this model and split"),
        dataset: str = typer.Option("", "--dataset", help="dataset name recorded on a newly created split"),
        id_col: Optional[str] = typer.Option(None, "--id-col", help="CSV/Parquet: id column (default: id, filename, file, path or image)"),
        pred_col: str = typer.Option("index", "--pred-col", help="CSV/Parquet: class-id column or prefix (timm: index)"),
        score_col: str = typer.Option("prob", "--score-col", help="CSV/Parquet: score column or prefix (timm: prob)"),
        label_col: Optional[str] = typer.Option(None, "--label-col", help="CSV/Parquet: label column, if any"),
        strip_id_prefix: Optional[str] = typer.Option(None, "--strip-id-prefix", help="remove this prefix from ids (e.g. an absolute dataset root)"),
        class_names: Optional[str] = typer.Option(None, "--class-names", help="comma-separated class names, in class-index order (for labels given as names, or a new split)"),
        format: Optional[str] = typer.Option(None, "--format", help="another project's files: model-vs-human (raw-data DIR), imagenet-testbed (log DIR), timm (inference.py results) -- docs/interop.md"),
        shift: Optional[str] = typer.Option(None, "--shift", help="imagenet-testbed: the evaluation setting (default: from task.cmd)"),
        wait: float = wait_option(WAIT_INTERACTIVE, "refuse at once"),
    ):
        """Import one model's predictions on one split into a store (nothing is written unless all of it is valid)."""
        from ..store import lock_wait
        from ..store.formats import import_predictions

        names = [c.strip() for c in class_names.split(",")] if class_names else None
        with lock_wait(wait):
            res = import_predictions(store, file, split=split, model=model, card=card, renormalize=renormalize,
                                     force=force, dataset=dataset, id_col=id_col, pred_col=pred_col,
                                     score_col=score_col, label_col=label_col, strip_id_prefix=strip_id_prefix,
                                     class_names=names, format=format, shift=shift)
        for r in (res if isinstance(res, list) else [res]):
            typer.echo(f"imported {', '.join(r['kinds'])} of {r['model']!r} on {r['split']!r} into {store}")

    @app.command("verify")
    def verify_cmd(store: Path = typer.Argument(..., help="store directory")):
        """Re-check the manifest's checksum, every array and cached result; list leftovers and pending entries."""
        from ..store import verify_store

        rep = verify_store(store)
        for title, items in (("leftovers of killed processes (the next write removes them)",
                              [f"{p.relative_to(store)}: {why}" for p, why in rep.leftovers]),
                             ("staged entries waiting for a writer to commit them", [str(p.relative_to(store)) for p in rep.pending]),
                             ("notes", rep.notes)):
            if items:
                typer.echo(f"{title}:")
                for line in items:
                    typer.echo(f"  {line}")
        if rep.problems:
            first, *rest = rep.problems
            raise DivergentError(f"{len(rep.problems)} problem(s) in {store}: {first}"
                                 + "".join(f"\n{p}" for p in rest),
                                 "re-import or re-extract the affected models (divergent rm, then import/extract); "
                                 "a damaged cached result can be deleted (it is recomputed)")
        typer.echo(f"{store}: the manifest, all arrays and cached results match their checksums")

    @app.command("rm")
    def rm_cmd(store: Path = typer.Argument(...), model: str = typer.Argument(..., help="model to remove"),
               wait: float = wait_option(WAIT_INTERACTIVE, "refuse at once")):
        """Remove a model (all splits) from a store."""
        from ..store import Store

        st = Store.open(store)
        with st.writer(command=f"rm {model}", wait=wait) as w:
            w.remove(model)
        typer.echo(f"removed {model!r} from {store}")

    @app.command("export")
    def export_cmd(store: Path = typer.Argument(...), out: Path = typer.Option(None, "--out", help="Parquet file (default STORE/export.parquet), or a folder with --format model-vs-human"),
                   uncalibrated: bool = typer.Option(False, "--uncalibrated", help="probabilities at T = 1"),
                   format: str = typer.Option("parquet", "--format", help="parquet (one long table) or model-vs-human (raw-data CSVs per dataset and model)")):
        """Export predictions as one long Parquet table (model, split, id, label, pred, correct, confidence, p_pred, p_label)."""
        from ..store import Store
        from ..store.export import export_long, export_model_vs_human

        st = Store.open(store)
        if format == "model-vs-human":
            files = export_model_vs_human(st, out or st.root / "export-model-vs-human")
            typer.echo(f"wrote {len(files)} model-vs-human CSV files under {out or st.root / 'export-model-vs-human'}")
            return
        if format != "parquet":
            raise DivergentError(f"unknown export format {format!r}", "use --format parquet or --format model-vs-human")
        path = export_long(st, out or st.root / "export.parquet", calibrated=not uncalibrated)
        typer.echo(f"wrote {path}")

    @app.command("cards")
    def cards_cmd(store: Path = typer.Argument(...), base: Optional[str] = typer.Option(None, "--base", help="show each model's category relative to this model"),
                  out: Optional[Path] = typer.Option(None, "--out")):
        """Show the model cards (and categories relative to a base)."""
        from ..api import cards_table

        show_table(cards_table(store, base=base), out)

    @app.command("calibrate")
    def calibrate_cmd(store: Path = typer.Argument(...), fit_on: str = typer.Option("holdout", "--fit-on", help="split the temperatures are fitted on"),
                      models: Optional[str] = typer.Option(None, "--models", help="comma list or pattern (default all)"),
                      report_on: Optional[str] = typer.Option(None, "--split", help="also report NLL/ECE on this split"),
                      allow_fit_on_eval: bool = typer.Option(False, "--allow-fit-on-eval", help="permit fitting on the evaluated split"),
                      out: Optional[Path] = typer.Option(None, "--out"),
                      wait: float = wait_option(WAIT_INTERACTIVE, "refuse at once")):
        """Fit a temperature per model by minimising NLL on --fit-on; report NLL/ECE before and after."""
        from ..analyses.calibration import calibrate
        from ..store import lock_wait

        claim_early(store, wait)
        with lock_wait(wait):
            table = calibrate(store, fit_on=fit_on, models=models, report_on=report_on,
                              allow_fit_on_eval=allow_fit_on_eval)
        show_table(table, out)

    @app.command("pairs")
    def pairs_cmd(store: Path = typer.Argument(...), split: str = typer.Option("test", "--split", help="split evaluated"),
                  base: Optional[str] = typer.Option(None, "--base", help="compare this model with every other"),
                  all_pairs: bool = typer.Option(False, "--all", help="all pairs (the default without --base)"),
                  acc_band: Optional[str] = typer.Option(None, "--acc-band", help="LO,HI accuracy band, e.g. 0.74,0.78"),
                  models: Optional[str] = typer.Option(None, "--models", help="comma list or pattern"),
                  uncalibrated: bool = typer.Option(False, "--uncalibrated", help="use T = 1 for every model"),
                  n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples for the 95% intervals (0: none)"),
                  seed: int = typer.Option(0, "--seed"),
                  categories: Optional[Path] = typer.Option(None, "--categories", help="CSV (model_a, model_b, category) overriding derived categories"),
                  executor: str = typer.Option("local", "--executor", help="local (this process) or ray (blocks of models as Ray tasks)"),
                  address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (auto, HOST:PORT); default RAY_ADDRESS, else a local Ray on 127.0.0.1"),
                  workers: Optional[int] = typer.Option(None, "--workers", "-j", help="ray without a cluster: CPUs of the local Ray (default: this machine's)"),
                  block: Optional[int] = typer.Option(None, "--block", help="models per group: pairs run in blocks of B x B models, each cached (default 32 with ray; local: one pass)"),
                  shared_fs: bool = typer.Option(False, "--shared-fs", help="ray: every node mounts the store under the same path (tasks read the score files in place instead of receiving them through the object store)"),
                  out: Optional[Path] = typer.Option(None, "--out", help="CSV / Parquet / JSON file")):
        """The pairs table: error inconsistency, ensemble accuracy, conversion rate ... with intervals."""
        from ..analyses.pairs import pairs

        if all_pairs and base:
            raise DivergentError("--all and --base exclude each other", "pass one of them")
        runner, cluster = _pairs_runner(executor, address, workers, block, shared_fs)
        overrides = _read_categories(categories) if categories else None
        try:
            df = pairs(store, split=split, base=base, models=models, acc_band=acc_band, calibrated=not uncalibrated,
                       n_boot=n_boot, seed=seed, categories=overrides, progress=True, runner=runner, block=block)
        finally:
            if cluster is not None:
                cluster.shutdown()
        if "blocks" in df.attrs:
            typer.echo(f"{df.attrs['blocks']} block(s) of pairs, {df.attrs['blocks_computed']} computed, "
                       f"the others cached", err=True)
        if out is None:
            cols = ["model_a", "model_b", "category", "acc_a", "acc_b", "error_inconsistency", "ensemble_acc",
                    "gain_vs_best", "conversion_rate", "error_consistency"]
            show_table(df[cols], None)
        else:
            show_table(df, out)


def _pairs_runner(executor: str, address: str | None, workers: int | None, block: int | None, shared_fs: bool = False):
    """(runner, cluster) of `divergent pairs`: None for the local engine in one pass; a LocalRunner
    with --block; a RayRunner on the joined (or started) cluster with --executor ray. Every flag is
    checked before anything starts."""
    from ..engine.distributed import LocalRunner, RayRunner, check_block_size

    if executor not in ("local", "ray"):
        raise DivergentError(f"unknown executor {executor!r}", "use --executor local or --executor ray")
    if block is not None:
        check_block_size(block)
    if workers is not None and workers < 1:
        raise DivergentError(f"--workers must be at least 1, got {workers}", "pass a number of CPUs, e.g. -j 2")
    if executor == "local":
        if address or shared_fs:
            what = f"a Ray address ({address!r})" if address else "--shared-fs"
            raise DivergentError(f"{what} is given, but the executor is local", "add --executor ray, or drop it")
        return (LocalRunner() if block is not None else None), None
    from ..conventions import threads
    from ..study.ray_cluster import MAX_RETRIES, connect

    cluster = connect(address, workers or threads())
    typer.echo(cluster.describe(), err=True)
    import ray

    return RayRunner(ray, max_retries=MAX_RETRIES, shared_fs=shared_fs), cluster
