"""User-facing errors: every message says what is wrong and how to fix it."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class DivergentError(ValueError):
    """A problem with the user's input or store; the message carries the fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class StoreLockedError(DivergentError):
    """Another process holds the store's writer lock."""


class CorruptStoreError(DivergentError):
    """An array or manifest on disk does not match its recorded checksum or shape."""


class MissingDependencyError(DivergentError, ImportError):
    """An optional backend is not installed."""


def suggest(name: str, choices: Iterable[str], what: str = "name") -> str:
    """'did you mean' text for an unknown name."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(repr(c) for c in close)}?"
    if len(choices) <= 12:
        return f"known {what}s: {', '.join(choices) if choices else '(none)'}"
    return f"{len(choices)} {what}s are known; list them to choose"


def unknown(kind: str, name: str, choices: Iterable[str]) -> DivergentError:
    return DivergentError(f"unknown {kind} {name!r}", suggest(name, choices, kind))


def require(module: str, extra: str):
    """Import an optional backend lazily, failing with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by tests with monkeypatch
        raise MissingDependencyError(
            f"the optional package {module!r} is not installed ({exc})",
            f"pip install 'divergent[{extra}]'",
        ) from exc
