"""Staged entries: parallel producers write a (model, split) entry under STORE/.staging without
the lock; the one writer validates and commits it (`Writer.commit_staged`), then removes it."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .._files import atomic_dir, atomic_save_npy, atomic_write_json, crash_point, sha256_file
from ..cards import ModelCard
from ..conventions import check_name
from ..errors import CorruptStoreError, DivergentError
from .layout import EXTRACT, STAGING, dir_key, split_dir
from .manifest import KINDS, read_quietly

ENTRY = "entry.json"


def stage_entry(store_path, model: str, split: str, *, arrays: dict[str, np.ndarray], card=None,
                ids=None, meta: dict | None = None, force: bool = False) -> Path:
    """Stage one (model, split) entry for the writer, without taking the lock.

    Safe from many processes at once; the one writer validates and commits it with
    ``writer.commit_staged(path)``.
    """
    model = check_name(model)
    for kind in arrays:
        if kind not in KINDS:
            raise DivergentError(f"unknown array kind {kind!r}", f"use one of {', '.join(KINDS)}")
    stage = Path(store_path) / STAGING / f"{dir_key(model)}.{split_dir(split)}.{uuid.uuid4().hex[:8]}"
    spec = {"model": model, "split": split, "arrays": {}, "force": force, "meta": meta or {},
            "card": (card.to_dict() if isinstance(card, ModelCard) else card),
            "ids": None if ids is None else [str(i) for i in ids]}
    with atomic_dir(stage) as tmp:
        for kind, arr in arrays.items():
            digest = atomic_save_npy(tmp / f"{kind}.npy", np.asarray(arr))
            spec["arrays"][kind] = {"file": f"{kind}.npy", "sha256": digest}
        atomic_write_json(tmp / ENTRY, spec)
        crash_point("staged")
    return stage


def read_staged(stage: Path, committed=()) -> tuple[dict, dict[str, np.ndarray]]:
    """(the entry's spec, its arrays checked against their sha256) of a staged entry; one whose
    name is in `committed` (the manifest's committed_stages) is refused."""
    stage = Path(stage)
    spec_file = stage / ENTRY
    if not spec_file.exists():
        raise DivergentError(f"{stage} is not a staged entry (entry.json missing)")
    if stage.name in committed:
        raise DivergentError(f"{stage} was committed already", "remove it; the store holds its arrays")
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"staged entry {stage.name}: entry.json cannot be read ({exc})",
                                "re-run the producer that staged it") from None
    arrays = {}
    for kind, info in spec["arrays"].items():
        p = stage / info["file"]
        if sha256_file(p) != info["sha256"]:
            raise CorruptStoreError(f"staged {kind} for {spec['model']!r} does not match its checksum",
                                    "re-run the producer that staged it")
        arrays[kind] = np.load(p, allow_pickle=False)
    return spec, arrays


def finished_stages(root: Path) -> list[Path]:
    st = Path(root) / STAGING
    if not st.exists():
        return []
    return sorted(p for p in st.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != EXTRACT
                  and (p / ENTRY).exists())


def staged_entries(store_path) -> list[Path]:
    """Finished staged entries waiting for the writer to commit them (pending)."""
    root = Path(store_path)
    committed = set(read_quietly(root).get("committed_stages", []))
    return [p for p in finished_stages(root) if p.name not in committed]


def remove_committed(stage: Path) -> None:
    """Remove a committed staged entry: renamed out of the pending ones first (.done-...), then deleted."""
    done = stage.parent / f".done-{stage.name}"
    try:
        os.replace(stage, done)
    except OSError:
        return
    shutil.rmtree(done, ignore_errors=True)


def discard_staged(store_path) -> None:
    """Drop every staged entry, pending or not (a study restart: its units rerun and stage again),
    keeping the chunks of resumable extractions less the temporaries whose producer is gone."""
    from .cleanup import leftovers

    root = Path(store_path) / STAGING
    if not root.exists():
        return
    for p in root.iterdir():
        if p.name == EXTRACT:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for p, _why in leftovers(store_path):
        if root in p.parents and not p.is_dir():
            p.unlink(missing_ok=True)
