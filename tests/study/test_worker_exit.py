"""Local worker processes end with their study: an interrupted run (Ctrl-C, SIGTERM) stops the units
still running, and a worker whose study process was killed outright exits by itself — no orphan
keeps training beside a resumed run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).parent

DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {here!r})
    from divergent.cli import _on_sigterm
    from divergent.study import Graph, LocalExecutor, Unit, run_graph, units
    units.add_modules("toy_units")
    import toy_units  # noqa: F401
    signal.signal(signal.SIGTERM, _on_sigterm)   # as the CLI does
    g = Graph()
    g.add(Unit("sleep", "train", "toy.sleep", {{"seconds": 120, "pid_file": {pid!r}}}))
    try:
        run_graph(g, {out!r}, executor=LocalExecutor(workers=1), progress=False)
    except KeyboardInterrupt:
        pid = int(open({pid!r}).read())
        try:
            state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        print("worker after the interrupted run:", state, flush=True)
        sys.exit(143)
""")


def _state(pid: int) -> str:
    """The process's state letter (Z: exited, not reaped), or 'gone'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _start(tmp_path) -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / "worker.pid"
    code = DRIVER.format(here=str(HERE), pid=str(pid_file), out=str(tmp_path / "out"))
    drv = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()):
        assert drv.poll() is None, drv.communicate()
        assert time.monotonic() < deadline, "the unit never started"
        time.sleep(0.2)
    worker = int(pid_file.read_text())
    assert worker != drv.pid and _state(worker) in "RS"
    return drv, worker


def _ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _state(pid) in ("Z", "gone"):
            return True
        time.sleep(0.1)
    return False


def test_sigterm_to_the_study_stops_its_running_units(tmp_path):
    drv, worker = _start(tmp_path)
    os.kill(drv.pid, signal.SIGTERM)
    out, err = drv.communicate(timeout=60)
    assert drv.returncode == 143, err
    # stopped by the interrupted run itself (before the study process exits), not left running
    assert "worker after the interrupted run: gone" in out, (out, err)
    assert _state(worker) == "gone"
    assert not list((tmp_path / "out").rglob("record.json"))   # the stopped unit is not recorded


def test_a_worker_whose_study_was_killed_exits_by_itself(tmp_path):
    drv, worker = _start(tmp_path)
    os.kill(drv.pid, signal.SIGKILL)
    drv.communicate(timeout=30)
    assert _ends_within(worker, 10), f"worker {worker} still {_state(worker)} after its study process was killed"
