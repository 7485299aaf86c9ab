"""The store's manifest: its format, its checksum, reading it (strictly or quietly), a new one,
and what it refers to. The manifest is replaced atomically, last, by the one writer."""
from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_json, canonical_json_sha256
from ..errors import CorruptStoreError, DivergentError
from .layout import MANIFEST
from .migrate import SCHEMA_VERSION, migrate, shape_problem

FORMAT = "divergent-store"
KINDS = ("logits", "probs", "pred", "scores", "features")
#: names of committed staged entries the manifest remembers (so that one left behind by a killed
#: writer is told from one waiting for commit)
COMMITTED_KEPT = 256

MANIFEST_FIX = ("restore manifest.json from a backup, or undo the edit (values the analyses use, such as "
                "temperatures, class names and array checksums, must not be edited by hand); "
                "`divergent verify STORE` lists every problem")


@dataclass
class SplitData:
    """A split: labels, class names and example ids, all aligned."""

    name: str
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray
    dataset: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def manifest_checksum(m: dict) -> str:
    """sha256 of the manifest's canonical JSON, its own `checksum` field left out."""
    return canonical_json_sha256({k: v for k, v in m.items() if k != "checksum"})


def sealed(m: dict) -> dict:
    """The manifest as it will read back from disk, with its checksum."""
    out = json.loads(json.dumps({k: v for k, v in m.items() if k != "checksum"}, default=str))
    out["checksum"] = manifest_checksum(out)
    return out


def manifest_problem(m: dict) -> str | None:
    if "checksum" in m:
        if m["checksum"] != manifest_checksum(m):
            return "manifest.json does not match its checksum (it was changed outside divergent, or damaged)"
        return None
    if isinstance(m.get("schema"), int) and m["schema"] >= 2:
        return "manifest.json has no checksum"
    return None  # written by a divergent older than checksums: sealed by the next write


def provenance(command: str | None = None) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for pkg in ("divergent", "numpy", "torch", "timm", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"time": utcnow(), "command": command or " ".join(sys.argv), "python": sys.version.split()[0],
            "versions": versions}


def write_new(root: Path) -> dict:
    """Write the manifest of a new, empty store at `root` (an existing empty directory); returns it."""
    m = sealed({"format": FORMAT, "schema": SCHEMA_VERSION, "created": utcnow(), "updated": utcnow(),
                "splits": {}, "models": {}, "provenance": [provenance()]})
    atomic_write_json(root / MANIFEST, m)
    return m


def publish(root: Path, m: dict) -> None:
    """Replace the manifest atomically (durably) with `m`, which is sealed already."""
    atomic_write_json(root / MANIFEST, m)


def read(root: Path) -> tuple[dict, str | None]:
    """(the manifest, upgraded to the current schema; what is wrong with its checksum or None).
    Refused: a missing, unreadable or malformed manifest, and a newer schema."""
    mf = root / MANIFEST
    if not mf.exists():
        raise DivergentError(f"no store at {root} (manifest.json missing)",
                             "create one with `divergent import` / `divergent extract`, or check the path")
    try:
        m = json.loads(mf.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStoreError(f"the manifest of {root} is not valid JSON ({exc})",
                                "restore it from a backup; array files are intact and checksummed") from None
    except OSError as exc:
        raise CorruptStoreError(f"the manifest of {root} cannot be read ({exc})",
                                "check the path and its permissions") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CorruptStoreError(f"{mf} is not a divergent store manifest",
                                "check the path; restore manifest.json from a backup if it was overwritten")
    problem = manifest_problem(m)
    m = migrate(m, root)  # a newer schema is refused first: its checksum may be another
    shape = shape_problem(m)  # nothing can be read (or verified) from a manifest of the wrong shape
    if shape:
        raise CorruptStoreError(f"manifest.json of {root} is malformed: {shape}", MANIFEST_FIX)
    return m, problem


def read_quietly(root: Path) -> dict:
    """The manifest as it is on disk, {} when it cannot be read (for clean-up and listings)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def checksum_on_disk(root: Path) -> str | None:
    """The checksum of the manifest on disk now (None when it cannot be read)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_bytes().decode("utf-8")).get("checksum")
    except (OSError, ValueError):
        return None


def live_paths(m: dict) -> set[str]:
    """Every array file the manifest refers to (relative to the store)."""
    live = {e["path"] for s in m["splits"].values() for e in s["files"].values()}
    return live | {a["path"] for me in m["models"].values() for se in me["splits"].values() for a in se["arrays"].values()}
