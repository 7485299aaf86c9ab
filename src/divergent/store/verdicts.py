"""Which array files of a store were hashed and matched: sha256 verdicts, remembered in this
process and in STORE/cache/verdicts.json, so that each file is hashed once for as long as it is
unchanged."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .._files import atomic_write_json, sha256_file
from .layout import VERDICTS

#: a verdict is trusted only when the file was last changed this long before it was hashed (a
#: change within the same tick of a coarse file-system clock keeps mtime and ctime): 50 ms covers
#: Linux's jiffy-grained clocks; on file systems that keep whole seconds, RACY_COARSE_S
RACY_S = 0.05
RACY_COARSE_S = 2.0
_MEMO: dict[tuple, tuple[str, int]] = {}  # (abs path, ino, size, mtime_ns, ctime_ns) -> (sha256, hashed at ns)


def file_sig(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _trusted(sig: tuple, at_ns: int) -> bool:
    changed = max(sig[2], sig[3])
    margin = RACY_COARSE_S if changed % 1_000_000_000 == 0 else RACY_S
    return changed + margin * 1e9 < at_ns


class Verdicts:
    """sha256 verdicts of a store's files, remembered in this process and persisted in
    STORE/cache/verdicts.json: {"files": {relpath: [sha256, inode, size, mtime_ns, ctime_ns, hashed_at_ns]}}.
    A verdict is used only when all four file attributes are unchanged and the file was not
    changed within RACY_S before it was hashed; otherwise the file is hashed again."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._disk: dict | None = None
        self._new: dict[str, list] = {}
        self.unreadable = False

    def _files(self) -> dict:
        if self._disk is None:
            self._disk = {}
            p = self.root / VERDICTS
            if p.exists():
                try:
                    d = json.loads(p.read_text())
                    files = d.get("files") if isinstance(d, dict) and d.get("format") == "divergent-verdicts" else None
                    if not isinstance(files, dict):
                        raise ValueError("no files")
                    self._disk = files
                except (OSError, ValueError, UnicodeDecodeError):
                    self.unreadable = True
        return self._disk

    def lookup(self, rel: str, sig: tuple) -> str | None:
        """The sha256 this file was found to have, if that verdict still holds."""
        memo = _MEMO.get((str(self.root / rel), *sig))
        if memo is not None and _trusted(sig, memo[1]):
            return memo[0]
        e = self._files().get(rel)
        if (isinstance(e, list) and len(e) == 6 and isinstance(e[0], str) and tuple(e[1:5]) == tuple(sig)
                and isinstance(e[5], int) and _trusted(sig, e[5])):
            _MEMO[(str(self.root / rel), *sig)] = (e[0], e[5])
            return e[0]
        return None

    def record(self, rel: str, sig: tuple, sha: str, at_ns: int) -> None:
        _MEMO[(str(self.root / rel), *sig)] = (sha, at_ns)
        if _trusted(sig, at_ns):
            self._new[rel] = [sha, *sig, at_ns]

    def save(self, live: set[str] | None = None) -> None:
        """Merge this process's new verdicts into the file (best effort: a cache; never required)."""
        if not self._new and live is None:
            return
        self._disk = None
        self.unreadable = False
        disk = self._files()
        files = {**disk, **self._new}
        if live is not None:
            files = {k: v for k, v in files.items() if k in live}
        if files == disk and not self.unreadable:
            self._new = {}
            return
        try:
            atomic_write_json(self.root / VERDICTS, {"format": "divergent-verdicts", "version": 1, "files": files},
                              durable=False)
        except OSError:
            return
        self._disk, self._new = files, {}


def hash_checked(path: Path) -> tuple[str, tuple, int]:
    """(sha256, signature before hashing, time hashing started); signature None if the file
    changed while it was hashed."""
    at = time.time_ns()
    sig = file_sig(os.stat(path))
    digest = sha256_file(path)
    after = file_sig(os.stat(path))
    return digest, (sig if after == sig else None), at
