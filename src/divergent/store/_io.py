"""Low-level file safety for the store: atomic writes, checksums and their verdicts, producer marks on
temporary files, crash points for tests, and the writer lock."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DivergentError, StoreLockedError


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a torn one.

    `durable=False` skips the fsyncs (for derived files that are checksummed on every read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        crash_point(f"tmp-written:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(path: Path, obj, *, durable: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode(), durable=durable)


class _HashingFile:
    """A write-only file object that hashes what passes through it (np.save writes in chunks)."""

    def __init__(self, f):
        self._f, self.h = f, hashlib.sha256()

    def write(self, b) -> int:
        self.h.update(b)
        return self._f.write(b)


def _save_npy(path: Path, arr: np.ndarray, final) -> tuple[Path, str]:
    """Write `arr` as .npy to a marked temporary beside `path`, hashing it as it is written, then
    rename it to final(sha256) and fsync; returns (the final path, sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            hf = _HashingFile(f)
            np.save(hf, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        digest = hf.h.hexdigest()
        out = final(digest)
        crash_point(f"tmp-written:{path.name}")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return out, digest


def atomic_save_npy(path: Path, arr: np.ndarray) -> str:
    """Save `arr` as .npy atomically; returns the sha256 of the file written (hashed as it is written)."""
    return _save_npy(path, arr, lambda digest: path)[1]


def save_npy_addressed(folder: Path, stem: str, arr: np.ndarray) -> tuple[Path, str]:
    """Save `arr` atomically as folder/<stem>-<first 16 hex digits of its sha256>.npy; returns
    (that path, the sha256). A file already there under that name is replaced (same content)."""
    return _save_npy(folder / f"{stem}.npy", arr, lambda digest: folder / f"{stem}-{digest[:16]}.npy")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---- producers, temporary files and leftovers -----------------------------------------------
# Every temporary file or directory a divergent process writes inside a store is named
#   .<final name>.<host>~<pid>~<start>.<random>.tmp
# (<start>: the process's start time in clock ticks since boot, 0 where unknown), so that a later
# process can tell whether its producer is still running. One whose producer is gone is a leftover.

_TMP_RE = re.compile(r"^\.(?P<final>.+)\.(?P<host>[A-Za-z0-9-]{1,40})~(?P<pid>\d+)~(?P<start>\d+)\.[0-9a-f]{8}\.tmp$")
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:40] or "host"
_TAG: tuple[int, str] | None = None


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
    """Create (exclusively) a marked temporary file beside `path`; returns (its path, an fd)."""
    while True:
        tmp = path.parent / temp_name(path.name)
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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


#: unmarked temporary files (written by older versions) are leftovers once this old, in the store
#: areas that readers and producers write without the writer's lock
UNMARKED_TEMP_AGE_S = 24 * 3600.0


def temp_is_leftover(path: Path, *, writer_area: bool, lock_held: bool, now: float | None = None) -> bool:
    """A temporary file or directory whose producer is gone.

    In the writer's own areas (the manifest, splits/, models/) only the lock holder writes, so
    while the lock is held every temporary there is a leftover; elsewhere the producer mark
    decides, and an unmarked temporary is a leftover once `UNMARKED_TEMP_AGE_S` old."""
    if writer_area and lock_held:
        return True
    alive = producer_alive(path.name)
    if alive is not None:
        return not alive
    if _TMP_RE.match(path.name):
        return False  # made on another host: cannot tell
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > UNMARKED_TEMP_AGE_S


def flock_held(path: Path) -> bool | None:
    """Whether some process holds a flock on `path` (from /proc/locks), None where that cannot be read."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except FileNotFoundError:
        return False if not path.exists() and Path("/proc/locks").exists() else None
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == want for f in (ln.split() for ln in lines))


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


CRASH_EXIT = 86
_CRASH_COUNTS: dict[str, int] = {}


# ---- verdicts: which array files were hashed and matched ---------------------------------------
VERDICTS = "cache/verdicts.json"
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


#: seconds a writer waits for the lock when its caller does not say (None: the caller's own default);
#: set for a block of code with `lock_wait(seconds)` (the CLI's --wait option)
_WAIT: float | None = None


@contextmanager
def lock_wait(seconds: float | None):
    """Writers opened inside this block wait up to `seconds` for another writer (0: refuse at once)."""
    global _WAIT
    if seconds is not None and not (seconds >= 0 and seconds != float("inf")):
        raise DivergentError(f"the writer wait must be a number of seconds >= 0, got {seconds!r}",
                             "pass --wait 0 to refuse at once, or --wait 600 to wait up to ten minutes")
    old, _WAIT = _WAIT, seconds
    try:
        yield
    finally:
        _WAIT = old


def writer_wait(default: float = 0.0) -> float:
    """The wait in force (set by `lock_wait`), else `default`."""
    return default if _WAIT is None else float(_WAIT)


class WriterLock:
    """An exclusive advisory lock on STORE/.lock (released if the process dies).

    `acquire(wait)` waits up to `wait` seconds for another writer to finish, then refuses."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, float(wait))
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left > 0:
                    time.sleep(min(delay, left))
                    delay = min(delay * 2, 1.0)
                    continue
            holder = ""
            try:
                holder = os.read(fd, 200).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            waited = f" (waited {wait:g} s)" if wait else ""
            raise StoreLockedError(
                f"the store {self.path.parent} is being written by another process ({holder or 'unknown'}){waited}",
                "run again when it has finished, or pass --wait SECONDS to wait for it (Python: "
                "divergent.store.lock_wait); producers running in parallel should stage their outputs "
                "(divergent.store.stage_entry) and let the one writer commit them",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
