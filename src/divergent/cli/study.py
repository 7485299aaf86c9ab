"""CLI: `divergent study run [CONFIG|PRESET] --out DIR` and `divergent report OUT`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..conventions import WAIT_BATCH
from ._output import wait_option

study_app = typer.Typer(help="Run the paper's study on a zoo: train -> extract -> head -> calibrate -> pairs -> analyses -> report.",
                        no_args_is_help=True)


@study_app.command("run")
def run_cmd(
    config: Optional[str] = typer.Argument(None, help="a preset: fashion-mnist (the default), fashion-mnist-quick, cifar10; or a TOML file"),
    out: Path = typer.Option(Path("divergent-study"), "--out", "-o", help="output directory (report, tables, figures, store, log)"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default), inline or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (auto, HOST:PORT); default [run] address, then RAY_ADDRESS, else a local Ray on 127.0.0.1"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="parallel units (default from the config: 2)"),
    force: list[str] = typer.Option([], "--force", help="rerun a stage or unit even if cached (repeatable)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set analysis.n_boot=200"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    download: bool = typer.Option(False, "--download", help="download fashion-mnist / cifar10 (checksummed) when found nowhere on this machine"),
    trust_module: list[str] = typer.Option([], "--trust-module", help="let torch:<module>:<Class> specs import this module (repeatable); confirms run.trusted_modules"),
    wait: float = wait_option(WAIT_BATCH, "an unattended run waits"),
):
    """Run (or resume) a study; prints where the report is."""
    from .. import study
    from ..errors import DivergentError
    from ..store import lock_wait
    from ..sources.registry import trust_modules

    trust_modules(*trust_module)   # a study file cannot trust code by itself: the user confirms here

    overrides = {}
    for s in set_:
        k, sep, v = s.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {s!r}: write KEY=VALUE, e.g. analysis.n_boot=200")
        import tomllib

        try:
            overrides[k.strip()] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[k.strip()] = v
    if address:
        overrides["run.address"] = address   # the flag comes before [run] address (then RAY_ADDRESS)
    # a DivergentError propagates to divergent.cli.main, which prints it with its fix (exit 2)
    with lock_wait(wait):
        summary = study.run_study(config, out, overrides=overrides, executor=executor, workers=workers,
                                  progress=None if progress else False, force=tuple(force), echo=typer.echo,
                                  download=download)
    if not summary.ok:
        unit, why = next(iter(summary.failed.items()))
        raise DivergentError(f"{len(summary.failed)} unit(s) of the study failed (first: {unit}: "
                             f"{str(why).splitlines()[0] if why else 'unknown error'})",
                             f"see the log under {out}; fix the cause and run the same command again (it resumes)")


@study_app.command("presets")
def presets_cmd():
    """List the built-in study presets."""
    from ..study.config import PRESETS, preset_path

    for p in PRESETS:
        typer.echo(f"{p}\t{preset_path(p)}")


def report_cmd(
    out: Path = typer.Argument(..., help="a study output directory (with tables/)"),
    base: Optional[str] = typer.Option(None, "--base", help="the base model (default: the row marked 'base')"),
):
    """Rebuild OUT/report.html from the tables under OUT/tables."""
    from ..report import build_report, read_tables

    t = read_tables(out, base=base)
    target = t.meta.pop("dims_target", None)
    path = build_report(t, out, target=target)
    typer.echo(f"report: {path.resolve()}")


def register(app: typer.Typer) -> None:
    """Add `divergent study ...` and `divergent report OUT` to the main app."""
    app.add_typer(study_app, name="study")
    app.command("report")(report_cmd)
