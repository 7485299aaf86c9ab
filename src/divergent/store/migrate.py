"""Schema versions of the store manifest and the path from each old version to the current one."""
from __future__ import annotations

from pathlib import Path

from ..errors import DivergentError

#: version -> function upgrading a manifest of that version by one step
MIGRATIONS = {
    0: lambda m, root: {**m, "schema": 1, "provenance": m.get("provenance", [])},
}


def migrate(m: dict, root: Path) -> dict:
    """Upgrade a manifest in memory to the current schema (written back on the next write)."""
    from .store import SCHEMA_VERSION

    v = int(m.get("schema", 0))
    if v > SCHEMA_VERSION:
        raise DivergentError(
            f"the store at {root} has schema {v}, newer than this divergent understands ({SCHEMA_VERSION})",
            "upgrade divergent (pip install -U divergent)")
    while v < SCHEMA_VERSION:
        m = MIGRATIONS[v](m, root)
        v = int(m["schema"])
    return m
