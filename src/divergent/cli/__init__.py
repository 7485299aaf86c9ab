"""The `divergent` command line: one typer app; each area registers thin commands over the API."""
from __future__ import annotations

import importlib
import sys

import typer

from ..errors import DivergentError

app = typer.Typer(help="How differently-trained models differ: errors, ensembles, specialization, features.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

#: command modules (each exposes register(app)); missing optional areas are skipped
AREAS = ("store", "extract", "train", "probes", "ensembles", "specialize", "study")


def _register() -> None:
    for area in AREAS:
        try:
            mod = importlib.import_module(f"{__name__}.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{area}":
                continue
            raise
        mod.register(app)


def main(argv: list[str] | None = None) -> int:
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except DivergentError as exc:
        typer.secho(f"error: {exc.problem}", fg="red", err=True)
        if exc.fix:
            typer.secho(f"  fix: {exc.fix}", err=True)
        return 2
    except SystemExit as exc:  # typer/click exit codes
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors (typer may vendor its own click: match by behaviour)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return 0


def run() -> None:
    sys.exit(main())
