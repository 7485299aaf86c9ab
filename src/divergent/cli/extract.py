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
        shift: Optional[str] = typer.Option(None, "--shift", help="corrupt the split first: gaussian_noise:3, 'gaussian_noise:3,blur:1-2', '*noise*:1,5', all:3; stored as <split>~<corruption>-<severity>"),
        shift_seed: int = typer.Option(0, "--shift-seed", help="seed of the corruptions' randomness (kept in the split's metadata)"),
        shift_from: Optional[str] = typer.Option(None, "--shift-from", help="read the corrupted images from a pre-generated CIFAR-10-C or ImageNet-C folder instead of generating them"),
        executor: str = typer.Option("local", "--executor", help="--models: local (this process) or ray (one unit per model and split, large splits in shards of rows)"),
        address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (auto, HOST:PORT); default RAY_ADDRESS, else a local Ray on 127.0.0.1"),
        shard: int = typer.Option(8192, "--shard", help="ray: images per shard of a split (whole batches)"),
    ):
        """Run models over a dataset split; store logits (or probs) and pre-logit embeddings, resumably."""
        from ..extract import extract, extract_many
        from ..store import lock_wait
        from ..store.layout import extract_failures_log
        from ..sources.registry import trust_modules

        if bool(model) == bool(models):
            _fail(DivergentError("give exactly one of --model and --models", "e.g. --model cifar10/resnet20 or --models 'cifar10/*'"))
        try:
            _check_executor(executor, address, shard, bulk=bool(models))
        except DivergentError as exc:
            _fail(exc)
        kw = dict(batch_size=batch_size, device=device, workers=workers, force=force, mapping=mapping, mapping_rule=mapping_rule, head=head,
                  input_size=input_size, progress=progress, on_error=on_error, runtime=runtime,
                  dataset_options={"download": True} if download else None)
        try:
            shifts = [None]
            if shift is not None:
                from ..data.shift import parse_shifts, pregenerated_format

                shifts = parse_shifts(shift, seed=shift_seed)
                if shift_from is not None:
                    pregenerated_format(shift_from)
                kw.update(shift_from=shift_from)
            elif shift_from is not None:
                raise DivergentError("--shift-from needs --shift", "name the corruptions to read, e.g. --shift gaussian_noise:3")
            trust_modules(*trust_module)
            if model:
                opened = None
                for sh in shifts:
                    if sh is not None and opened is None:  # open the split once for every shift
                        from ..extract.run import open_data

                        opened = open_data(data, split, on_error, kw["dataset_options"])
                    with lock_wait(wait):
                        r = extract(store, model, data if sh is None else opened, split, name=name, shift=sh, **kw)
                    typer.echo(f"{r['model']} on {r['split']}: {r['status']} ({', '.join(r.get('stored') or [])})"
                               + (f"; {r['head']}" if r.get("head") else "")
                               + (f"; {r['images_per_s']:.0f} images/s" if r.get("images_per_s") else ""))
                return
            if name:
                raise DivergentError("--name applies to a single --model", "drop --name for bulk runs")
            with lock_wait(wait):
                if executor == "ray":
                    df = _extract_on_ray(store, models, data, split, address, shard, trust_module,
                                         shift=shifts if shift is not None else None, **kw)
                else:
                    df = extract_many(store, models, data, split, shift=shifts if shift is not None else None, **kw)
        except DivergentError as exc:
            _fail(exc)
        typer.echo(df[["model", "split", "status", "stored", "head", "images_per_s", "error"]].to_string(index=False))
        failed = df[df["status"] == "failed"]
        if len(failed):
            first = failed.iloc[0]
            _fail(DivergentError(
                f"{len(failed)} of {len(df)} models failed (first: {first['model']}: "
                f"{str(first['error']).splitlines()[0] if first['error'] else 'unknown error'})",
                f"see the error column above and {extract_failures_log(store)}; "
                "rerun one with --model to see its error and fix"))


def _check_executor(executor: str, address: str | None, shard: int, bulk: bool) -> None:
    """--executor/--address/--shard, checked before anything runs."""
    from ..extract.distributed import shard_ranges

    if executor not in ("local", "ray"):
        raise DivergentError(f"unknown executor {executor!r}", "use --executor local or --executor ray")
    if executor == "local" and address:
        raise DivergentError(f"a Ray address ({address!r}) is given, but the executor is local",
                             "add --executor ray, or drop --address")
    if executor == "ray" and not bulk:
        raise DivergentError("--executor ray runs bulk extractions", "use --models (one name is fine)")
    shard_ranges(0, 0, shard, 1)


def _extract_on_ray(store, models, data, split, address, shard, trusted, **kw):
    """extract_many on a Ray cluster (divergent.extract.distributed); prints the cluster's resources."""
    from ..conventions import threads
    from ..engine.distributed import RayRunner
    from ..extract.distributed import extract_distributed
    from ..study.ray_cluster import MAX_RETRIES, connect

    cluster = connect(address, threads())  # a DivergentError with the install hint when ray is missing
    typer.echo(cluster.describe(), err=True)
    import ray as _ray

    try:
        runner = RayRunner(_ray, max_retries=MAX_RETRIES, gpus=1 if str(kw.get("device")).startswith("cuda") else 0)
        kw["progress"] = False
        return extract_distributed(store, models, data, split, runner=runner, shard=shard, trusted=tuple(trusted),
                                   concurrent=max(1, cluster.cpus), **kw)
    finally:
        cluster.shutdown()
