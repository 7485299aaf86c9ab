"""Study progress: one line per finished unit when stderr is not a terminal, the log's path at
the start, and a bar counter that counts the unit just finished."""
from __future__ import annotations

import io
import re

import pytest

from divergent.study import Graph, InlineExecutor, Unit, run_graph
from divergent.study.progress import Progress, format_duration

T = "toy."  # the registered names of tests/study/toy_units.py


pytestmark = pytest.mark.usefixtures("toy_units")


def _graph() -> Graph:
    g = Graph()
    g.add(Unit("src:a", "train", T + "source", {"value": 1}))
    g.add(Unit("src:b", "train", T + "source", {"value": 2}))
    g.add(Unit("sum", "pairs", T + "double", {}, deps=("src:a", "src:b")))
    g.add(Unit("boom", "analyses", T + "boom", {}, deps=("src:b",)))
    g.add(Unit("after-boom", "report", T + "parity", {}, deps=("boom",)))
    return g


LINE = re.compile(r"^\[(\d)/5\] (\w+)\s+(\S+) (done|cached|FAILED|skipped)( +\d+\.\ds)?  ETA (\S+)$")


def test_redirected_stderr_gets_one_line_per_unit(tmp_path, capsys):
    run_graph(_graph(), tmp_path, executor=InlineExecutor(), progress=None)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"study: 5 units; log: {(tmp_path / 'study.log').resolve()}"
    rows = [LINE.match(ln) for ln in err[1:]]
    assert all(rows), err
    assert [int(m.group(1)) for m in rows] == [1, 2, 3, 4, 5]
    states = {m.group(3): m.group(4) for m in rows}
    assert states == {"src:a": "done", "src:b": "done", "sum": "done", "boom": "FAILED", "after-boom": "skipped"}
    assert {m.group(3): m.group(2) for m in rows}["sum"] == "pairs"
    assert rows[-1].group(6) == "0s"                 # nothing left at the end
    assert all(m.group(5) for m in rows if m.group(4) == "done")   # ran units say how long they took

    run_graph(_graph(), tmp_path, executor=InlineExecutor(), progress=None)   # rerun: cached units
    err = capsys.readouterr().err.splitlines()
    states = {m.group(3): m.group(4) for m in map(LINE.match, err[1:])}
    assert states["src:a"] == "cached" and states["sum"] == "cached"


def test_progress_off_prints_nothing(tmp_path, capsys):
    run_graph(_graph(), tmp_path, executor=InlineExecutor(), progress=False)
    assert capsys.readouterr().err == ""


def test_bar_counter_includes_the_finished_unit():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    p = Progress(3.0, 3, enabled=None, stream=Tty())
    assert p.mode == "bar"
    for name in ("a", "b", "c"):
        p.start("train", name)
        p.finish(1.0, stage="train", unit=name)
    assert p.bar.desc.rstrip().endswith("3/3")
    p.close()


@pytest.mark.parametrize("s,text", [(None, "?"), (0.2, "0s"), (59.4, "59s"), (61, "1m01s"), (3725, "1h02m")])
def test_format_duration(s, text):
    assert format_duration(s) == text

