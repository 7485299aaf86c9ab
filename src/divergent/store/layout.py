"""Where things live in a store: the names of its files and folders (docs/store-format.md)::

    STORE/manifest.json                       schema, splits, models, cards, checksums, provenance
    STORE/splits/<split>/labels-<h>.npy       int64 labels (N,) or multi-hot (N, C)
    STORE/splits/<split>/ids-<h>.npy          unicode example ids (N,)
    STORE/models/<key>/<split>/<kind>-<h>.npy logits | probs | pred | scores | features
    STORE/cache/<area>/<key>.bin              derived results keyed by and checked against their inputs
    STORE/cache/verdicts.json                 which array files were hashed and matched (a cache)
    STORE/.staging/<key>.<split>.<id>/        entries staged by parallel producers
    STORE/.staging/extract/<key>.<split>/     resumable extraction chunks
    STORE/.lock                               the one writer's lock
    STORE/.partial.json                       only in a partial copy (a Ray node's): what it holds

<key> is :func:`dir_key` of a model name; <split> in a path is :func:`split_dir` of the split's name.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

MANIFEST = "manifest.json"
LOCK = ".lock"
STAGING = ".staging"
#: under STAGING: the folders of resumable extractions (never a staged entry)
EXTRACT = "extract"
CACHE = "cache"
#: in a partial copy of a store (some models' arrays only, as a Ray node gets for a unit that reads
#: those models): {"models": [...], "split": name or null, "why": ..., "fix": ...}
PARTIAL = ".partial.json"
VERDICTS = f"{CACHE}/verdicts.json"
#: the writer's own areas besides the manifest: only the lock holder writes there
WRITER_AREAS = ("splits", "models")


def dir_key(name: str) -> str:
    """The folder name of a model: its name made safe for a path, and 8 hex digits of the sha1 of
    the name so that two names made safe alike stay apart.

    sha1 here is a name, not a checksum (nothing is verified with it), and it stays sha1: the
    folders of existing stores (models/<key>, recorded in their manifests) and the resumable
    extraction folders (.staging/extract/<key>.<split>, found again by recomputing the key) are
    named with it, so another hash would orphan them."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "m"
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def split_dir(split: str) -> str:
    """A split's name as one path segment."""
    return split.replace("/", "__")


def extract_job_dir(store_path, model: str, split: str) -> Path:
    """The folder of the resumable extraction of `model` on `split`."""
    return Path(store_path) / STAGING / EXTRACT / f"{dir_key(model)}.{split}"


def extract_failures_log(store_path) -> Path:
    """Where bulk extractions append the models that failed (one JSON line each)."""
    return Path(store_path) / STAGING / EXTRACT / "failures.jsonl"


def cache_area(area: str, split: str | None = None) -> str:
    """The cache area of derived results, per split when they belong to one."""
    return area if split is None else f"{area}/{split_dir(split)}"
