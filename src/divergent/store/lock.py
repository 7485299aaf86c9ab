"""The store's one writer: an exclusive advisory lock on STORE/.lock, and how long a writer waits for it."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import DivergentError, StoreLockedError
from .layout import LOCK


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
        self.path = Path(root) / LOCK
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like every store file
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


def lock_is_free(root: Path) -> bool:
    """Whether no writer holds the lock: read from /proc/locks where there is one (so that looking
    never makes a starting writer fail), else by taking the lock for a moment."""
    held = flock_held(Path(root) / LOCK)
    if held is not None:
        return not held
    lock = WriterLock(root)
    try:
        lock.acquire(0)
    except (DivergentError, OSError):
        return False
    lock.release()
    return True


def wait_for_writer(root: Path, wait: float) -> None:
    """Before long work that ends in a write: wait up to `wait` seconds for another writer of the
    store at `root` to finish (or refuse now, StoreLockedError), without keeping the lock."""
    lock = WriterLock(root)
    lock.acquire(wait)
    lock.release()
