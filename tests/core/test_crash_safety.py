"""A write killed (-9) at any step of a commit leaves a store that opens, verifies and accepts new writes.

The writer runs in a child process that watches its own file-system steps inside the store (fsync,
rename, unlink, with the path each one touches). At a chosen step it reports its state and blocks
there, holding the store's lock, and the test kills it at that observed point (no timing guesses).
The steps cover every phase of a commit: an array written but not renamed, an array about to get
its final name, the manifest written but not renamed, the manifest about to be renamed, the
manifest renamed, the garbage collection of a removed model's file, and a later commit.
"""
import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from divergent.errors import StoreLockedError
from divergent.store import Store

WRITER = textwrap.dedent("""
    import fnmatch, json, os, sys, time
    import numpy as np
    from divergent.store import Store

    root, report = os.path.realpath(sys.argv[1]), sys.argv[2]
    stop_kind, stop_glob, stop_nth = sys.argv[3], sys.argv[4], int(sys.argv[5])
    state = {"seen": 0, "committed": [], "in_flight": None, "manifest_renamed": False}

    def path_of(arg):
        if isinstance(arg, int):  # fsync: the file or folder behind the descriptor
            return os.readlink(f"/proc/self/fd/{arg}")
        return os.path.realpath(os.fspath(arg))

    def watched(kind, real, which):
        def step(*args, **kwargs):
            path = path_of(args[which])
            rel = os.path.relpath(path, root) if path.startswith(root) else None
            if rel is not None and kind == stop_kind and fnmatch.fnmatch(rel, stop_glob):
                state["seen"] += 1
                if state["seen"] == stop_nth:
                    with open(report, "w") as fh:
                        fh.write(json.dumps({**state, "at": f"{kind} {rel}"}) + "\\n")
                    time.sleep(120)  # killed here by the test
            out = real(*args, **kwargs)
            if kind == "replace" and rel == "manifest.json":
                state["manifest_renamed"] = True
            return out
        return step

    os.fsync = watched("fsync", os.fsync, 0)
    os.replace = watched("replace", os.replace, 1)
    os.unlink = watched("unlink", os.unlink, 0)

    st = Store.open(root)
    rng = np.random.default_rng(stop_nth)
    for i in range(12):
        name = f"w{i}"
        state["in_flight"], state["manifest_renamed"] = name, False
        with st.writer() as w:
            w.put(name, "test", logits=rng.normal(size=(600, 5)).astype(np.float32))
            if i % 3 == 2:
                w.remove(f"w{i - 1}")
        state["committed"].append(name)
        if i % 3 == 2:
            state["committed"].remove(f"w{i - 1}")
    with open(report, "w") as fh:
        fh.write(json.dumps({**state, "at": "finished"}) + "\\n")
""")

#: (file-system step, path inside the store, occurrence) where the writer is killed
STOPS = {
    "array written, not renamed": ("fsync", "models/*.tmp", 1),
    "array about to get its final name": ("replace", "models/*.npy", 1),
    "manifest written, not renamed": ("fsync", ".manifest.json*", 1),
    "manifest about to be renamed": ("replace", "manifest.json", 1),
    "manifest renamed, folder not synced": ("fsync", ".", 1),
    "removed model's array being collected": ("unlink", "models/*.npy", 1),
    "third commit (removes a model), before its manifest": ("replace", "manifest.json", 3),
}


def _wait_for_report(proc, report, timeout=60.0) -> dict:
    """The child's report once it has paused at its step (bounded wait; fails if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report.exists():
            text = report.read_text()
            if text.endswith("\n"):
                return json.loads(text)
        if proc.poll() is not None:
            pytest.fail(f"the writer exited (code {proc.returncode}) without reporting")
        time.sleep(0.01)
    pytest.fail(f"the writer did not reach its step within {timeout:.0f} s")


@pytest.mark.parametrize("stop", list(STOPS))
def test_kill_minus_9_during_writes(toy_store, stop, tmp_path):
    script, report = tmp_path / "writer.py", tmp_path / "report.json"
    script.write_text(WRITER)
    before = set(toy_store.models)
    kind, glob, nth = STOPS[stop]
    proc = subprocess.Popen([sys.executable, str(script), str(toy_store.root), str(report), kind, glob, str(nth)])
    try:
        state = _wait_for_report(proc, report)
        assert state["at"] != "finished", f"the writer never reached {kind} {glob} #{nth}: the commit steps changed"
        # the write is in progress: the child is inside a commit and holds the lock
        with pytest.raises(StoreLockedError):
            with toy_store.writer():
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    st = Store.open(toy_store.root)
    assert st.verify() == []
    # every finished commit is there; the one in flight exactly when its manifest was renamed
    want = set(state["committed"])
    if state["manifest_renamed"]:
        i = int(state["in_flight"][1:])
        want = (want | {state["in_flight"]}) - ({f"w{i - 1}"} if i % 3 == 2 else set())
    assert set(st.models) == before | want
    assert state["manifest_renamed"] == (stop in ("manifest renamed, folder not synced",
                                                  "removed model's array being collected"))
    for m in st.models:
        assert st.array(m, "test", "logits").shape == (600, 5)
    # the lock died with the writer; a new commit works and leaves a verified store
    with st.writer() as w:
        w.put("after", "test", logits=np.zeros((600, 5), np.float32))
    st = Store.open(toy_store.root)
    assert set(st.models) == before | want | {"after"} and st.verify() == []
