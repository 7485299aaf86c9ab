"""The `divergent` command line: one typer app; each area registers thin commands over the API.

Exit codes (docs/conventions.md): 0 success; 2 a user error (a `DivergentError`, printed as
`error: ...` and `  fix: ...`, or a usage error); 1 an internal error (a bug: one line on
stderr, the traceback in a log file); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM: `kill`, a
scheduler's time limit), which ends a command the way Ctrl-C does, cleanup included.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading

import typer

from ..errors import DivergentError

app = typer.Typer(help="How differently-trained models differ: errors, ensembles, specialization, features.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

#: command modules (each exposes register(app)); missing optional areas are skipped
AREAS = ("store", "extract", "train", "probes", "ensembles", "specialize", "study", "shift", "consistency")
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so a command's cleanup runs
    (a study stops its worker processes, writers release the store)."""


_terminated = threading.Event()


def _on_sigterm(signum, frame):
    _terminated.set()   # typer turns the exception into exit code 130: this says it was SIGTERM
    raise Terminated("SIGTERM")


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    for area in AREAS:
        try:
            mod = importlib.import_module(f"{__name__}.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{area}":
                continue
            raise
        mod.register(app)
    _registered = True


def _usage_error(exc) -> int:
    """A click usage error (typer may vendor its own click: matched by behaviour) as error + fix."""
    ctx = getattr(exc, "ctx", None)
    cmd = ctx.command_path if ctx is not None else "divergent"
    from ._output import print_error

    usage = ctx.get_usage().strip().removeprefix("Usage:").strip() if ctx is not None else ""
    print_error(exc.format_message(), f"see `{cmd} --help`" + (f" (usage: {usage})" if usage else ""))
    return EXIT_USER


def _internal_error(exc: BaseException) -> int:
    """An unexpected exception: a bug. One line to stderr; the traceback to a log file."""
    import tempfile
    import time
    import traceback

    from ._output import print_error

    text = "".join(traceback.format_exception(exc))
    where = None
    try:
        fd, where = tempfile.mkstemp(prefix=f"divergent-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
        with open(fd, "w") as f:
            f.write(f"divergent {' '.join(sys.argv[1:])}\n{text}")
    except OSError:
        where = None
    first = (str(exc).splitlines() or [""])[0][:300]
    print_error(f"internal error (a bug in divergent): {type(exc).__name__}: {first}",
                (f"please report it with the traceback saved in {where}" if where else
                 "please report it with the traceback below"))
    if where is None:
        sys.stderr.write(text)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0 ok, 2 user error, 1 internal error, 130/143
    interrupted/terminated). SIGTERM is handled like Ctrl-C while the command runs."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    _terminated.clear()
    try:
        code = _main(argv)
        if code == EXIT_INTERRUPTED:
            from ._output import print_error

            if _terminated.is_set():
                print_error("terminated (SIGTERM)", "finished work is kept: rerun the same command to resume")
                return EXIT_TERMINATED
            print_error("interrupted", None)
        return code
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    from ._output import print_error

    _register()
    try:
        rv = app(args=argv, prog_name="divergent", standalone_mode=False)
    except DivergentError as exc:
        print_error(exc.problem, exc.fix)
        return EXIT_USER
    except SystemExit as exc:  # a command's own exit code
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USER)
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM (typer turns one inside a command into 130 itself);
        return EXIT_INTERRUPTED  # main() says which it was
    except Exception as exc:  # noqa: BLE001 - the one place that turns any exception into an exit code
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            return _usage_error(exc)  # click UsageError / BadParameter / ClickException
        if type(exc).__name__ == "Abort" and isinstance(exc.__cause__, BaseException):
            exc = exc.__cause__  # click turns an EOFError or a KeyboardInterrupt inside a command into Abort
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        return _internal_error(exc)
    # standalone_mode=False hands back a command's return value, or the code of typer.Exit(code)
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else EXIT_OK


def run() -> None:
    sys.exit(main())
