"""Files, the one home: atomic writes, marked temporaries and their leftovers, sha256 hashes,
crash points for tests, and where the shared assets live. Bottom layer: nothing from divergent
but the standard library and numpy.

Atomic writes. Every writer here writes to a fresh temporary beside the final file, named
    .<final name>.<host>~<pid>~<start>.<random>.tmp
(<start>: the producer's start time in clock ticks since boot, 0 where unknown), created
exclusively with mode 0o666 less the user's umask (so the final file has the mode any file the
user creates has), then flushes and fsyncs it, renames it over the final name and fsyncs the
directory. Readers see the old file or the new one, never a torn one; concurrent writers never
share a temporary; and a later process can tell a temporary whose producer is gone (a leftover,
`temp_is_leftover`) from work in progress. `durable=False` skips the two fsyncs, only for derived
files that are checksummed on every read (caches).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

# ---- crash points (tests kill a process at a named point) ---------------------------------------
CRASH_EXIT = 86
_CRASH_COUNTS: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here (os._exit, like kill -9) when DIVERGENT_CRASH_AT names this point: `NAME` at its
    first pass, `NAME@K` at its K-th pass in this process. Used by the crash tests. Points:
    `tmp-written:<file name>` (a temporary written in full, not yet renamed to <file name>; arrays
    as `<kind>.npy`), `manifest-published` (before staged entries and garbage are removed),
    `staged` (a staged entry written, not yet renamed into place), `chunk-written` (an extraction
    chunk, likewise) and `calibrate-fitted` (temperatures fitted, nothing written)."""
    want = os.environ.get("DIVERGENT_CRASH_AT")
    if not want:
        return
    point, _, k = want.partition("@")
    if point != name:
        return
    _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
    if _CRASH_COUNTS[name] == int(k or 1):
        os._exit(CRASH_EXIT)


# ---- producers and marked temporaries -------------------------------------------------------------
_TMP_RE = re.compile(r"^\.(?P<final>.+)\.(?P<host>[A-Za-z0-9-]{1,40})~(?P<pid>\d+)~(?P<start>\d+)\.[0-9a-f]{8}\.tmp$")
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:40] or "host"
_TAG: tuple[int, str] | None = None
#: an unmarked temporary (written by an older version) is a leftover once this old
UNMARKED_TEMP_AGE_S = 24 * 3600.0


def _proc_start(pid: int) -> int | None:
    """Start time of process `pid` (clock ticks since boot): None if no such process runs, 0 if it
    runs but its start time is unknown (no /proc)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            return 0
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        return 0


def producer_tag() -> str:
    """<host>~<pid>~<start> of this process (recomputed after a fork)."""
    global _TAG
    pid = os.getpid()
    if _TAG is None or _TAG[0] != pid:
        _TAG = (pid, f"{_HOST}~{pid}~{_proc_start(pid) or 0}")
    return _TAG[1]


def temp_name(final_name: str) -> str:
    """A fresh temporary name for `final_name`, marked with this process as its producer."""
    return f".{final_name}.{producer_tag()}.{os.urandom(4).hex()}.tmp"


def open_temp(path: Path) -> tuple[Path, int]:
    """Create (exclusively, mode 0o666 less the umask) a marked temporary file beside `path`;
    returns (its path, an fd open for writing)."""
    path = Path(path)
    while True:
        tmp = path.parent / temp_name(path.name)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def producer_alive(name: str) -> bool | None:
    """Whether the producer of the temporary file `name` still runs: True / False, or None when
    the name carries no mark or was made on another host (it cannot be told from here)."""
    mt = _TMP_RE.match(name)
    if mt is None or mt["host"] != _HOST:
        return None
    pid, start = int(mt["pid"]), int(mt["start"])
    now = _proc_start(pid)
    if now is None:
        return False
    return start == 0 or now == 0 or now == start


def temp_is_leftover(path: Path, *, now: float | None = None) -> bool:
    """A temporary file or directory whose producer is gone: the producer mark decides; one made
    on another host is never a leftover (it cannot be told from here); an unmarked one is a
    leftover once `UNMARKED_TEMP_AGE_S` old."""
    path = Path(path)
    alive = producer_alive(path.name)
    if alive is not None:
        return not alive
    if _TMP_RE.match(path.name):
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > UNMARKED_TEMP_AGE_S


# ---- atomic writes --------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename (or a removal) in directory `path` durable (best effort where it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve_temp(path: Path) -> Path:
    """A new, empty marked temporary beside `path` (its directory created), for a library that
    writes by file name; publish it with :func:`commit_temp` or remove it with :func:`discard_temp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = open_temp(path)
    os.close(fd)
    return tmp


def commit_temp(tmp: Path, path: Path, *, durable: bool = True) -> None:
    """fsync the temporary `tmp`, rename it to `path` and fsync the directory."""
    if durable:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    crash_point(f"tmp-written:{Path(path).name}")
    os.replace(tmp, path)
    if durable:
        fsync_dir(Path(path).parent)


def discard_temp(tmp: Path) -> None:
    Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """A marked temporary path beside `path` for a library that writes by file name (pandas,
    torch.save, numpy's memmap); what is written there replaces `path` when the block ends
    without an error, and is removed otherwise."""
    tmp = reserve_temp(path)
    try:
        yield tmp
        commit_temp(tmp, path, durable=durable)
    except BaseException:
        discard_temp(tmp)
        raise


class _Sink:
    """A write-only binary file object that hashes what passes through it."""

    def __init__(self, f: BinaryIO):
        self._f, self._h = f, hashlib.sha256()

    def write(self, b) -> int:
        self._h.update(b)
        return self._f.write(b)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class _Pending:
    """A temporary being written: `file` (binary, open), and `final`, the name it gets (settable
    until the block ends, for names that depend on the content)."""

    def __init__(self, file: BinaryIO, final: Path):
        self.file, self.final = file, final


@contextmanager
def _atomic(path: Path, *, durable: bool = True, point: str | None = None) -> Iterator[_Pending]:
    """The one atomic write: a marked temporary beside `path` (its folder created), written in the
    block, flushed and fsynced, renamed to its final name, the folder fsynced; removed on an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            pending = _Pending(f, path)
            yield pending
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if point is not None:
            crash_point(point)
        crash_point(f"tmp-written:{path.name}")
        os.replace(tmp, pending.final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def atomic_open(path: Path, *, durable: bool = True, point: str | None = None) -> Iterator[BinaryIO]:
    """A binary file open for writing whose content replaces `path` atomically when the block ends
    without an error (for writers that take a file object: np.savez, json.dump, csv). `point`: a
    crash point passed once the temporary is written in full, besides `tmp-written:<name>`."""
    with _atomic(path, durable=durable, point=point) as pending:
        yield pending.file


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` atomically (see the module's docstring for the guarantees)."""
    with atomic_open(path, durable=durable) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: Path, obj, *, durable: bool = True) -> None:
    """`obj` as indented JSON with sorted keys (values JSON cannot hold written as strings) and a final newline."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode(), durable=durable)


def _save_npy(pending: _Pending, arr: np.ndarray) -> str:
    """np.save `arr` into a pending temporary, hashing it as it is written; returns the sha256."""
    sink = _Sink(pending.file)
    np.save(sink, np.ascontiguousarray(arr), allow_pickle=False)
    return sink.hexdigest()


def atomic_save_npy(path: Path, arr: np.ndarray, *, durable: bool = True) -> str:
    """Save `arr` as .npy atomically; returns the sha256 of the file written (hashed as it is written)."""
    with _atomic(path, durable=durable) as pending:
        digest = _save_npy(pending, arr)
    return digest


def save_npy_addressed(folder: Path, stem: str, arr: np.ndarray) -> tuple[Path, str]:
    """Save `arr` atomically as folder/<stem>-<first 16 hex digits of its sha256>.npy (hashed as it
    is written); returns (that path, the sha256). A file already there under that name is replaced
    (same content)."""
    folder = Path(folder)
    with _atomic(folder / f"{stem}.npy") as pending:
        digest = _save_npy(pending, arr)
        pending.final = folder / f"{stem}-{digest[:16]}.npy"
    return pending.final, digest


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A marked temporary directory beside `path`; when the block ends without an error it is
    renamed to `path` (which must not exist) and the parent directory fsynced; otherwise removed.
    Write the files inside with the writers above (each fsyncs its own)."""
    path = Path(path)
    tmp = path.parent / temp_name(path.name)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


# ---- sha256 ---------------------------------------------------------------------------------------
def sha256_bytes(data) -> str:
    """sha256 (hex) of bytes or any contiguous buffer (memoryview, bytearray)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces (values JSON cannot hold written as strings)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def canonical_json_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj`."""
    return sha256_bytes(canonical_json(obj).encode())


def sha256_tree(path: Path) -> str:
    """sha256 over the relative names and contents of every file under `path` (sorted); a file's own sha256."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


# ---- the shared assets folder ---------------------------------------------------------------------
SHARED_ENV = "DIVERGENT_SHARED"


def shared_candidates() -> list[Path]:
    """Where the shared assets folder is looked for, in order: $DIVERGENT_SHARED alone when it is
    set, else ``shared`` beside the checkout, beside the working directory, and in it."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return [Path(env)]
    return [Path(__file__).resolve().parents[2].parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"]


def shared_root() -> Path | None:
    """The shared assets folder: the first of :func:`shared_candidates` that is a directory, or
    None when there is none (a $DIVERGENT_SHARED that names no directory is never replaced by
    another folder). Callers that need a file from it raise a DivergentError naming
    DIVERGENT_SHARED; callers for which it is one place among others skip it."""
    for c in shared_candidates():
        if c.is_dir():
            return c
    return None
