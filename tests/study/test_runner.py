"""Unit caching: a rerun does nothing; changing one input redoes only its dependents; an
interrupted run resumes; a failing unit skips its dependents and the rest carries on."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from divergent.study import Graph, InlineExecutor, Unit, run_graph

T = "toy."  # the registered names of tests/study/toy_units.py


pytestmark = pytest.mark.usefixtures("toy_units")


def graph(a=1, b=2, crash_flag="", with_boom=False) -> Graph:
    g = Graph()
    g.add(Unit("src:a", "train", T + "source", {"value": a}))
    g.add(Unit("src:b", "train", T + "source", {"value": b}))
    g.add(Unit("dbl:a", "extract", T + "double", {"crash_flag": crash_flag}, deps=("src:a",)))
    g.add(Unit("dbl:b", "extract", T + "double", {}, deps=("src:b",)))
    g.add(Unit("sum", "pairs", T + "double", {}, deps=("dbl:a", "dbl:b")))
    g.add(Unit("parity", "report", T + "parity", {}, deps=("src:a",)))
    if with_boom:
        g.add(Unit("boom", "analyses", T + "boom", {}, deps=("src:b",)))
        g.add(Unit("after-boom", "report", T + "parity", {}, deps=("boom",)))
    return g


def calls(out: Path) -> list[str]:
    p = out / "calls.log"
    lines = p.read_text().split() if p.exists() else []
    p.unlink(missing_ok=True)
    return lines


def run(g, out):
    return run_graph(g, out, executor=InlineExecutor(), progress=False)


def test_first_run_then_rerun_does_nothing(tmp_path):
    s = run(graph(), tmp_path)
    assert sorted(calls(tmp_path)) == sorted(["src:a", "src:b", "dbl:a", "dbl:b", "sum", "parity"])
    assert s.results["sum"]["value"] == 12
    s2 = run(graph(), tmp_path)
    assert calls(tmp_path) == [] and len(s2.cached) == 6 and s2.results["sum"]["value"] == 12


def test_changing_one_input_redoes_only_dependents(tmp_path):
    run(graph(), tmp_path)
    calls(tmp_path)
    s = run(graph(b=5), tmp_path)
    assert sorted(calls(tmp_path)) == ["dbl:b", "src:b", "sum"]
    assert s.results["sum"]["value"] == 2 * (2 + 10)
    assert set(s.cached) == {"src:a", "dbl:a", "parity"}


def test_same_output_does_not_invalidate_downstream(tmp_path):
    g = graph()
    run(g, tmp_path)
    calls(tmp_path)
    # a change to a unit's params that yields identical outputs reruns it but not its dependents
    g2 = graph()
    g2.units["dbl:a"].params = {"crash_flag": str(tmp_path / "never-exists")}
    run(g2, tmp_path)
    assert calls(tmp_path) == ["dbl:a"]


def test_interrupted_run_resumes(tmp_path):
    flag = tmp_path / "crash-once"
    flag.write_text("x")
    with pytest.raises(KeyboardInterrupt):
        run(graph(crash_flag=str(flag)), tmp_path)
    first = calls(tmp_path)
    assert "dbl:a" in first and "sum" not in first
    s = run(graph(crash_flag=str(flag)), tmp_path)
    again = calls(tmp_path)
    # finished units are not redone; the interrupted one and what it feeds are
    assert "dbl:a" in again and "sum" in again
    assert not (set(again) & (set(first) - {"dbl:a"}))
    assert s.results["sum"]["value"] == 12


def test_failure_skips_dependents_and_carries_on(tmp_path):
    s = run(graph(with_boom=True), tmp_path)
    assert "boom" in s.failed and "after-boom" in s.skipped
    assert s.results["sum"]["value"] == 12 and not s.ok
    assert "this unit always fails" in (tmp_path / "study.log").read_text()


def test_local_process_executor(tmp_path, monkeypatch):
    import os

    from divergent.study import LocalExecutor

    # the worker processes import this folder's toy units
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    s = run_graph(graph(), tmp_path, executor=LocalExecutor(workers=2), progress=False)
    assert s.results["sum"]["value"] == 12 and len(s.ran) == 6


def test_ray_executor_says_how_to_install(monkeypatch):
    import builtins

    from divergent.errors import MissingDependencyError
    from divergent.study import RayExecutor

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)   # an earlier test may have imported the real one
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, however it is imported
    with pytest.raises(MissingDependencyError, match=r"divergent\[ray\]"):
        RayExecutor(workers=1)


def test_optional_dependency_failure_does_not_stop_the_study(tmp_path):
    g = Graph()
    g.add(Unit("src:a", "train", T + "source", {"value": 1}))
    g.add(Unit("boom", "train", T + "boom", {}))
    g.add(Unit("collect", "calibrate", T + "double", {}, deps=("src:a", "boom"), optional=("boom",)))
    g.add(Unit("after", "report", T + "parity", {}, deps=("collect",)))
    s = run(g, tmp_path)
    assert "boom" in s.failed and s.results["collect"]["value"] == 2 and s.results["after"]["even"]
    assert s.skipped == []


def test_unknown_unit_fails_when_planned():
    from divergent.errors import DivergentError

    g = Graph()
    with pytest.raises(DivergentError, match=r"(?s)unknown study unit 'toy.sourc'.*'toy.source'"):
        g.add(Unit("src:a", "train", T + "sourc", {"value": 1}))
    with pytest.raises(DivergentError, match="not a registered study unit"):
        Unit("src:a", "train", lambda ctx: {})


def test_units_are_named_by_their_function(toy_units, tmp_path):
    g = Graph()
    g.add(Unit("src:a", "train", toy_units.source, {"value": 3}))
    assert g["src:a"].fn == "toy.source" and run(g, tmp_path).results["src:a"]["value"] == 3


def test_a_unit_outside_the_registered_modules_fails_when_planned(monkeypatch):
    from divergent.errors import DivergentError
    from divergent.study import units

    monkeypatch.setattr(units, "REGISTRY", dict(units.REGISTRY))

    @units.unit(name="toy.stray", version=1)
    def stray(ctx):
        return {}

    with pytest.raises(DivergentError, match=r"(?s)registered by module 'test_runner'.*MODULES.*add_modules"):
        Graph().add(Unit("stray", "train", stray))


def test_bumping_a_unit_version_reruns_it_and_its_dependents(tmp_path, monkeypatch):
    import dataclasses

    from divergent.study import units

    run(graph(), tmp_path)
    calls(tmp_path)
    run(graph(), tmp_path)
    assert calls(tmp_path) == []
    monkeypatch.setitem(units.REGISTRY, "toy.double",
                        dataclasses.replace(units.REGISTRY["toy.double"], version=2))
    s = run(graph(), tmp_path)
    assert sorted(calls(tmp_path)) == ["dbl:a", "dbl:b", "sum"]
    assert set(s.cached) == {"src:a", "src:b", "parity"}
