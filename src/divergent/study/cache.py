"""The unit cache: OUT/.study/units/<unit>/record.json records a finished unit's key and outputs.

A unit's files live in OUT/.study/units/<unit>/out/; the record is written last (atomically), so a
unit interrupted before its record is simply run again.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .._files import atomic_write_text
from .._files import canonical_json_sha256 as hash_obj
from .._files import sha256_tree as hash_tree


def unit_dirname(uid: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", uid)
    return f"{safe}-{hash_obj(uid)[:8]}"


class UnitCache:
    def __init__(self, root: Path):
        self.root = Path(root) / ".study" / "units"
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, uid: str) -> Path:
        return self.root / unit_dirname(uid)

    def work_dir(self, uid: str, fresh: bool = False) -> Path:
        d = self.dir(uid) / "out"
        if fresh and d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def record(self, uid: str) -> dict | None:
        p = self.dir(uid) / "record.json"
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def lookup(self, uid: str, key: str) -> dict | None:
        r = self.record(uid)
        return r if r is not None and r.get("key") == key else None

    def save(self, uid: str, key: str, result: dict, seconds: float) -> dict:
        work = self.dir(uid) / "out"
        files_hash = hash_tree(work) if work.exists() else ""
        rec = {"unit": uid, "key": key, "result": result, "seconds": seconds,
               "output_hash": hash_obj({"result": result, "files": files_hash})}
        atomic_write_text(self.dir(uid) / "record.json", json.dumps(rec, indent=1, sort_keys=True, default=str))
        return rec

    def invalidate(self, uid: str) -> None:
        p = self.dir(uid) / "record.json"
        if p.exists():
            p.unlink()
