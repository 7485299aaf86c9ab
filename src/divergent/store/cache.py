"""Derived results under STORE/cache/<area>/<key>.bin: keyed by a hash of everything they depend
on, checked on every read, safe to delete (recomputed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._files import atomic_write_bytes, canonical_json_sha256, sha256_bytes
from ..errors import CorruptStoreError
from .layout import CACHE

CACHE_FORMAT = "divergent-cache"


def cache_key(area: str, deps: dict) -> str:
    return canonical_json_sha256({"area": area, "deps": deps})[:32]


class DerivedCache:
    """Derived results under STORE/cache/<area>/<key>.bin.

    `deps` names everything a result depends on (content hashes, temperatures, versions); the key is
    a hash of it. A file is one line of JSON (format, area, key, deps, and per array its dtype,
    shape, byte range and sha256), then the arrays' raw bytes; all of it is checked on every read,
    and a file that does not match is refused (CorruptStoreError), never used. Safe to delete."""

    def __init__(self, store_path, area: str):
        self.root = Path(store_path)
        self.area = area
        self.dir = self.root / CACHE / area

    def path(self, deps: dict) -> Path:
        return self.dir / f"{cache_key(self.area, deps)}.bin"

    def get(self, deps: dict) -> dict[str, np.ndarray] | None:
        p = self.path(deps)
        if not p.exists():
            return None
        got = _read_cache_file(self.root, p)
        if isinstance(got, str):
            raise CorruptStoreError(got, f"delete {p} (a derived result: it is recomputed), then run "
                                         "`divergent verify STORE` to check the rest")
        meta, arrays = got
        if meta["deps"] != json.loads(json.dumps(deps)):
            raise CorruptStoreError(f"cached result {p.relative_to(self.root)} was computed from other inputs than its key says",
                                    f"delete {p} (a derived result: it is recomputed)")
        return arrays

    def put(self, deps: dict, arrays: dict[str, np.ndarray]) -> Path:
        p = self.path(deps)
        info, parts, off = {}, [], 0
        for k, a in arrays.items():
            raw = np.ascontiguousarray(a).tobytes()
            info[k] = {"dtype": str(np.asarray(a).dtype), "shape": list(np.shape(a)), "offset": off,
                       "nbytes": len(raw), "sha256": sha256_bytes(raw)}
            parts.append(raw)
            off += len(raw)
        meta = {"format": CACHE_FORMAT, "version": 1, "area": self.area, "key": p.stem, "deps": deps, "arrays": info}
        head = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        atomic_write_bytes(p, head + b"".join(parts), durable=False)  # checked on every read: no fsync needed
        return p


def cache_files(store_path) -> list[Path]:
    d = Path(store_path) / CACHE
    return sorted(d.rglob("*.bin")) if d.exists() else []


def _read_cache_file(root: Path, p: Path):
    """(meta, arrays) of a cache file, or a string saying what is wrong with it."""
    rel = p.relative_to(root)
    try:
        data = p.read_bytes()
        nl = data.index(b"\n")
        meta = json.loads(data[:nl].decode("utf-8"))
    except (OSError, ValueError) as exc:
        return f"cached result {rel} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or not isinstance(meta.get("deps"), dict):
        return f"cached result {rel} is not a divergent cache file"
    area = str(p.parent.relative_to(root / CACHE))
    if meta.get("area") != area or meta.get("key") != p.stem or cache_key(area, meta["deps"]) != p.stem:
        return f"cached result {rel} does not belong to its key (its recorded inputs hash to another name)"
    body = memoryview(data)[nl + 1 :]
    info = meta.get("arrays")
    try:
        if sum(int(i["nbytes"]) for i in info.values()) != len(body):
            return f"cached result {rel} has {len(body)} bytes of data, its header says otherwise (truncated or extended)"
        out = {}
        for k, i in info.items():
            raw = body[int(i["offset"]) : int(i["offset"]) + int(i["nbytes"])]
            if sha256_bytes(raw) != i["sha256"]:
                return f"cached result {rel}: array {k!r} does not match its checksum"
            dt = np.dtype(i["dtype"])
            if dt.hasobject:
                return f"cached result {rel}: array {k!r} has dtype {dt}"
            out[k] = np.frombuffer(raw, dtype=dt).reshape(i["shape"]).copy()
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return f"cached result {rel} has a malformed header ({type(exc).__name__}: {exc})"
    return meta, out


def check_cache_file(store_path, p: Path) -> str | None:
    got = _read_cache_file(Path(store_path), Path(p))
    return got if isinstance(got, str) else None
