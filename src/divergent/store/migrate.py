"""Schema versions of the store manifest and the path from each old version to the current one."""
from __future__ import annotations

from pathlib import Path

from ..errors import DivergentError

#: the schema this divergent writes
SCHEMA_VERSION = 2

#: version -> function upgrading a manifest of that version by one step
MIGRATIONS = {
    0: lambda m, root: {**m, "schema": 1, "provenance": m.get("provenance", [])},
    # schema 2: the manifest carries a checksum of its content (added by the next write)
    1: lambda m, root: {**m, "schema": 2},
}


def migrate(m: dict, root: Path) -> dict:
    """Upgrade a manifest in memory to the current schema (written back on the next write)."""
    v = int(m.get("schema", 0))
    if v > SCHEMA_VERSION:
        raise DivergentError(
            f"the store at {root} has schema {v}, newer than this divergent understands ({SCHEMA_VERSION})",
            "upgrade divergent (pip install -U divergent)")
    while v < SCHEMA_VERSION:
        m = MIGRATIONS[v](m, root)
        v = int(m["schema"])
    return m


def _info_problem(info, where: str) -> str | None:
    if not isinstance(info, dict):
        return f"{where} is not a table"
    for key, typ in (("path", str), ("sha256", str), ("dtype", str), ("shape", list)):
        if key not in info:
            return f"{where} lacks {key!r}"
        if not isinstance(info[key], typ):
            return f"{where}.{key} is not a {typ.__name__}"
    return None


def shape_problem(m: dict) -> str | None:
    """The first key the manifest lacks, or holds with the wrong type (None when its shape is right)."""
    for key in ("splits", "models"):
        if not isinstance(m.get(key), dict):
            return f"it lacks {key!r}" if key not in m else f"{key!r} is not a table"
    for s, e in m["splits"].items():
        where = f"splits.{s}"
        if not isinstance(e, dict):
            return f"{where} is not a table"
        if not isinstance(e.get("class_names"), list):
            return f"{where} lacks 'class_names'" if "class_names" not in e else f"{where}.class_names is not a list"
        files = e.get("files")
        if not isinstance(files, dict):
            return f"{where} lacks 'files'" if "files" not in e else f"{where}.files is not a table"
        for key in ("labels", "ids"):
            if key not in files:
                return f"{where}.files lacks {key!r}"
            problem = _info_problem(files[key], f"{where}.files.{key}")
            if problem:
                return problem
    for name, e in m["models"].items():
        where = f"models.{name}"
        if not isinstance(e, dict):
            return f"{where} is not a table"
        for key, typ in (("dir", str), ("splits", dict)):
            if not isinstance(e.get(key), typ):
                return f"{where} lacks {key!r}" if key not in e else f"{where}.{key} is not a {typ.__name__}"
        for key in ("card", "calibration"):
            if e.get(key) is not None and not isinstance(e[key], dict):
                return f"{where}.{key} is not a table"
        for s, se in e["splits"].items():
            arrays = se.get("arrays") if isinstance(se, dict) else None
            if not isinstance(arrays, dict):
                return f"{where}.splits.{s} lacks 'arrays'"
            for kind, info in arrays.items():
                problem = _info_problem(info, f"{where}.splits.{s}.arrays.{kind}")
                if problem:
                    return problem
    return None
