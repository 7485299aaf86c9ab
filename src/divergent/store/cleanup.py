"""Clean-up: what killed processes left behind in a store (leftovers), and array files no longer
referenced once a new manifest is published (garbage)."""
from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path

from .._files import is_temp_name, temp_is_leftover
from .layout import CACHE, EXTRACT, STAGING, WRITER_AREAS
from .manifest import live_paths, read_quietly


def leftovers(store_path, manifest: dict | None = None, *, lock_held: bool = False) -> list[tuple[Path, str]]:
    """What killed processes left behind: (path, why) for each.

    A leftover is a temporary file or staged entry whose producer is gone: a marked temporary of a
    process that no longer runs (anywhere in the store, staging and resumable extraction folders
    included), any temporary or unreferenced array file in the writer's own areas (the manifest,
    splits/, models/) while the writer's lock is held (`lock_held`: only the lock holder writes
    there), and a staged entry the manifest records as committed. Never a finished staged entry
    waiting for commit, nor the chunks and job files of a resumable extraction
    (.staging/extract/<job>/chunk-*, job.json)."""
    root = Path(store_path)
    m = read_quietly(root) if manifest is None else manifest
    now = _dt.datetime.now().timestamp()
    out: list[tuple[Path, str]] = []

    def temp(p: Path, writer_area: bool) -> None:
        if is_temp_name(p.name) and ((writer_area and lock_held) or temp_is_leftover(p, now=now)):
            out.append((p, "temporary of a process that is gone"))

    if root.exists():
        for p in root.iterdir():
            if p.is_file():
                temp(p, True)
    try:
        live = live_paths(m) if m else None
    except (KeyError, AttributeError, TypeError):
        live = None
    for sub in WRITER_AREAS:
        base = root / sub
        if not base.exists():
            continue
        for p in base.rglob("*"):
            if p.is_dir():
                continue
            if p.name.startswith("."):
                if is_temp_name(p.name):
                    temp(p, True)
                elif lock_held:
                    out.append((p, "temporary of an interrupted write"))
            elif lock_held and live is not None and p.suffix == ".npy" and str(p.relative_to(root)) not in live:
                out.append((p, "array file no manifest refers to (an interrupted write)"))
    cache = root / CACHE
    if cache.exists():
        for p in cache.rglob("*.tmp"):
            temp(p, False)
    staging = root / STAGING
    if staging.exists():
        committed = set(m.get("committed_stages", []))
        for p in staging.iterdir():
            if p.name == EXTRACT and p.is_dir():
                for job in p.iterdir():
                    if job.is_dir():
                        for q in job.iterdir():
                            temp(q, False)
                    else:
                        temp(job, False)
            elif is_temp_name(p.name):
                temp(p, False)
            elif p.name.startswith(".done-"):
                out.append((p, "staged entry committed, its removal interrupted"))
            elif p.is_dir() and p.name in committed:
                out.append((p, "staged entry committed already"))
    return sorted(out)


def remove_leftovers(store_path, manifest: dict | None = None) -> list[Path]:
    """Delete the leftovers (the writer calls this while it holds the lock)."""
    gone = []
    for p, _why in leftovers(store_path, manifest, lock_held=True):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            gone.append(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # not ours to remove (permissions): listed again by verify
    return gone


def collect_garbage(root: Path, m: dict) -> None:
    """Remove array files no longer referenced by the manifest (after it was published)."""
    live = live_paths(m)
    for sub in WRITER_AREAS:
        base = root / sub
        if not base.exists():
            continue
        for p in base.rglob("*.npy"):
            if str(p.relative_to(root)) not in live:
                p.unlink(missing_ok=True)
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
