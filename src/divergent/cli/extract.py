"""CLI words for extraction: `divergent extract` and `divergent models list/show`."""
from __future__ import annotations

from typing import Optional

import typer

from ..conventions import WAIT_BATCH
from ..errors import DivergentError
from ._output import print_error, wait_option


def _fail(exc: DivergentError) -> None:
    """Print a user error with its fix and exit 2 (also where the commands run outside `divergent.cli.main`)."""
    print_error(exc.problem, exc.fix)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="Known model specs (built-in data table and source prefixes).", no_args_is_help=True)

    @models_app.command("list")
    def models_list(
        pattern: Optional[str] = typer.Argument(None, help="wildcard pattern, e.g. 'cifar10/*' or 'mobilenet'"),
        check: bool = typer.Option(True, help="check that each model's package and files are present"),
    ):
        """List built-in model specs (name, source, outputs, training data, availability)."""
        from ..sources import list_specs, match

        try:
            if pattern and not match(pattern):
                from ..errors import suggest
                from ..sources import builtin_specs

                raise DivergentError(f"no built-in model matches {pattern!r}", suggest(pattern, builtin_specs(), "model"))
            df = list_specs(pattern, check=check)
        except DivergentError as exc:
            _fail(exc)
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                               "display.max_colwidth", 60):
            typer.echo(df.to_string(index=False))
        typer.echo("\nsource prefixes: timm:<name>[@random|@ckpt]  torchvision:<name>[@random|@ckpt]  "
                   "open_clip:<arch>/<pretrained|random>  hf:<repo-or-dir>  onnx:<path>#<node>  "
                   "tflite:<path>#<tensor>  torch:<module>:<Class>@<ckpt>")

    @models_app.command("show")
    def models_show(name: str = typer.Argument(..., help="a built-in name or a source spec")):
        """Show one model spec as JSON."""
        import json

        from ..sources import resolve

        try:
            typer.echo(json.dumps(resolve(name).to_dict(), indent=2, default=str))
        except DivergentError as exc:
            _fail(exc)

    app.add_typer(models_app, name="models")

    @app.command("extract")
    def extract_cmd(
        store: str = typer.Argument(..., help="store directory (created if absent)"),
        data: str = typer.Option(..., "--data", help="dataset source (cifar10-jpeg, fashion-mnist, a folder, .tar.gz, .npz, ...)"),
        model: Optional[str] = typer.Option(None, "--model", help="one model: a built-in name or a source spec"),
        models: Optional[str] = typer.Option(None, "--models", help="several: comma-separated names and/or wildcard patterns"),
        split: str = typer.Option("test", "--split", help="split to extract (train/holdout/test)"),
        batch_size: int = typer.Option(256, "--batch-size"),
        device: str = typer.Option("auto", "--device", help="auto (CUDA with autocast when present), cpu, cuda[:N]"),
        workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes (default: cores not used by torch on CPU; cores - 1 with CUDA)"),
        force: bool = typer.Option(False, "--force", help="redo (model, split) pairs already in the store"),
        mapping: Optional[str] = typer.Option(None, "--mapping", help="class-mapping file (CSV or TOML) to the split's classes, or model-vs-human-16"),
        mapping_rule: Optional[str] = typer.Option(None, "--mapping-rule", help="a target's score: sum (default) or mean (model-vs-human) of its mapped probabilities"),
        head: str = typer.Option("auto", "--head", help="auto | logits (misfit is an error) | features"),
        input_size: Optional[int] = typer.Option(None, "--input-size", help="run at this input resolution"),
        runtime: str = typer.Option("auto", "--runtime", help="CPU torch models: auto (ONNX Runtime when certified equal on the first batch), torch, onnxruntime"),
        name: Optional[str] = typer.Option(None, "--name", help="store the model under this name (single model)"),
        on_error: str = typer.Option("fail", "--on-error", help="unreadable images: fail, or skip and record"),
        download: bool = typer.Option(False, "--download", help="download fashion-mnist / cifar10 (checksummed) when found nowhere on this machine"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        trust_module: list[str] = typer.Option([], "--trust-module", help="let torch:<module>:<Class> specs import this module and its submodules (repeatable; importing runs its code)"),
        wait: float = wait_option(WAIT_BATCH, "an unattended run waits"),
    ):
        """Run models over a dataset split; store logits (or probs) and pre-logit embeddings, resumably."""
        from ..extract import extract, extract_many
        from ..store import lock_wait
        from ..sources.registry import trust_modules

        if bool(model) == bool(models):
            _fail(DivergentError("give exactly one of --model and --models", "e.g. --model cifar10/resnet20 or --models 'cifar10/*'"))
        kw = dict(batch_size=batch_size, device=device, workers=workers, force=force, mapping=mapping, mapping_rule=mapping_rule, head=head,
                  input_size=input_size, progress=progress, on_error=on_error, runtime=runtime,
                  dataset_options={"download": True} if download else None)
        try:
            trust_modules(*trust_module)
            if model:
                with lock_wait(wait):
                    r = extract(store, model, data, split, name=name, **kw)
                typer.echo(f"{r['model']} on {r['split']}: {r['status']} ({', '.join(r.get('stored') or [])})"
                           + (f"; {r['head']}" if r.get("head") else "")
                           + (f"; {r['images_per_s']:.0f} images/s" if r.get("images_per_s") else ""))
                return
            if name:
                raise DivergentError("--name applies to a single --model", "drop --name for bulk runs")
            with lock_wait(wait):
                df = extract_many(store, models, data, split, **kw)
        except DivergentError as exc:
            _fail(exc)
        typer.echo(df[["model", "status", "stored", "head", "images_per_s", "error"]].to_string(index=False))
        failed = df[df["status"] == "failed"]
        if len(failed):
            first = failed.iloc[0]
            _fail(DivergentError(
                f"{len(failed)} of {len(df)} models failed (first: {first['model']}: "
                f"{str(first['error']).splitlines()[0] if first['error'] else 'unknown error'})",
                f"see the error column above and {store}/.staging/extract/failures.jsonl; "
                "rerun one with --model to see its error and fix"))
