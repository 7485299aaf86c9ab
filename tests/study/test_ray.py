"""The Ray executor on a real multi-node cluster on this machine (ray.cluster_utils.Cluster: a head
and two worker nodes on 127.0.0.1, one declaring a GPU): the tiny study's tables equal the local
executor's; GPU units land on the GPU node only; a worker killed mid-unit is retried with the same
result; with shared_fs off no unit opens a path under the driver's output directory, with it on
units read it in place. The fast checks at the top need no cluster."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from divergent.errors import DivergentError
from divergent.study import units
from divergent.study.executors import make_executor
from divergent.study.ray_cluster import RayCluster, NodeInfo, resolve_address, task_options
from divergent.study.units import Resources

HERE = Path(__file__).parent
TINY = HERE / "presets" / "ray-tiny.toml"
R = "raytoy."


# ---------------------------------------------------------------- no cluster needed

def test_address_precedence_flag_then_config_then_env(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "env:1")
    assert resolve_address("flag:1", "cfg:1") == "flag:1"
    assert resolve_address(None, "cfg:1") == "cfg:1"
    assert resolve_address(None, "") == "env:1"
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_address(None, "") is None


def test_an_address_without_the_ray_executor_is_refused():
    with pytest.raises(DivergentError, match="--executor ray"):
        make_executor("local", 2, address="auto")


def test_study_address_override_reaches_the_executor(tmp_path, monkeypatch):
    """--address becomes run.address; with the local executor it is refused before any unit runs."""
    from divergent.study import run_study

    with pytest.raises(DivergentError, match="executor is 'local'"):
        run_study(str(TINY), tmp_path, overrides={"run.address": "127.0.0.1:1"}, progress=False, echo=None)
    assert not (tmp_path / ".study" / "units").exists() or not any((tmp_path / ".study" / "units").iterdir())


def test_resources_become_task_options_and_gpu_units_need_a_gpu_node():
    gpu, cpu = Resources(gpu=True, memory_mb=2048), Resources(cpus=2)
    assert task_options(gpu, "cuda")["num_gpus"] == 1 and task_options(gpu, "cpu")["num_gpus"] == 0
    assert task_options(gpu, "cuda")["memory"] == 2048 * 2**20 and task_options(cpu, "cuda")["num_cpus"] == 2
    assert task_options(cpu, "cuda")["num_gpus"] == 0
    nodes = [NodeInfo("a" * 8, "h", "127.0.0.1", {"CPU": 2.0, "memory": 8.0 * 2**30})]
    c = RayCluster("x", started=False, nodes=nodes, resources={"CPU": 2.0})
    assert c.fits(task_options(cpu, "cuda")) and not c.fits(task_options(gpu, "cuda"))
    c.nodes.append(NodeInfo("b" * 8, "h", "127.0.0.1", {"CPU": 1.0, "GPU": 1.0, "memory": 8.0 * 2**30}))
    assert c.fits(task_options(gpu, "cuda"))
    with pytest.raises(DivergentError, match="reads"):
        Resources(reads=("everything",))


def test_study_units_declare_gpu_for_training_extraction_and_probes():
    units.load()
    for name in ("train", "predict", "extract", "head", "features", "transfer"):
        assert units.spec(name).resources.gpu, name
    for name in ("data", "calibrate", "pairs", "greedy", "findings", "report"):
        assert not units.spec(name).resources.gpu, name
    assert "records" in units.spec("report").resources.reads
    assert units.spec("train").resources.reads == ()


def test_a_gpu_unit_with_no_gpu_node_fails_at_once_naming_what_it_needs(tmp_path):
    """Ray would queue it forever; the executor refuses it when no live node has a GPU."""
    from divergent.study.executors import RayExecutor, UnitCall, UnitContext

    units.load()
    ex = RayExecutor.__new__(RayExecutor)
    from divergent.study import ray_cluster

    ex._rc = ray_cluster
    ex.cluster = RayCluster("127.0.0.1:1", started=False, nodes=[NodeInfo("c" * 8, "h", "127.0.0.1",
                                                                          {"CPU": 4.0, "memory": 2.0**34})])
    ex.cluster.refresh = lambda: ex.cluster
    ctx = UnitContext(unit="train:x", out=tmp_path, store=tmp_path / "store", work=tmp_path / "w", device="cuda")
    f = ex.submit(UnitCall("train", units.modules(), ctx, {}))
    with pytest.raises(DivergentError, match=r"'train:x' needs 1 CPU, 1 GPU, 2.0 GiB memory") as e:
        f.result()
    assert "device" in e.value.fix and "node cccccccc): 4 CPU, 0 GPU" in str(e.value)   # what the nodes have


# ---------------------------------------------------------------- on a local multi-node cluster

ray = pytest.importorskip("ray")

@pytest.fixture
def ray_toys(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setattr(units, "MODULES", units.MODULES)
    units.add_modules("ray_toy_units")


def tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every result table, without what measures time or the machine."""
    got = {}
    for p in sorted((out / "tables").glob("*.csv")):
        if p.stem == "environment":
            continue
        df = pd.read_csv(p)
        got[p.stem] = df.drop(columns=[c for c in df.columns if c in ("cost_s",)])
    return got


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_study_on_the_cluster_equals_the_local_executor(cluster, tmp_path):
    from divergent.study import run_study

    local = run_study(str(TINY), tmp_path / "local", executor="local", workers=1, progress=False, echo=None)
    out = cluster.watch / "tiny"
    lines = []
    # the pairs stage in blocks of one model (two blocks, each shipped its models only; one locally)
    dist = run_study(str(TINY), out, executor="ray", progress=False, echo=lines.append,
                     overrides={"run.address": cluster.address, "run.shared_fs": False, "run.pairs_block": 1})
    assert local.ok and dist.ok, (local.failed, dist.failed)
    assert sorted(u for u in dist.ran if u.startswith("pairs-block:")) == ["pairs-block:0", "pairs-block:1"]
    assert lines[0].startswith(f"Ray cluster {cluster.address}") and "3 node(s), 3 CPU, 1 GPU" in lines[0]
    a, b = tables(tmp_path / "local"), tables(out)
    assert sorted(a) == sorted(b) and "pairs" in a and "findings" in a
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert cluster.opened_under(out) == []          # every input came through Ray, every output went back
    assert (out / "report.html").exists()
    # a rerun (a driver that was killed would do the same) runs nothing: every unit is cached
    again = run_study(str(TINY), out, executor="ray", progress=False, echo=None,
                      overrides={"run.address": cluster.address, "run.pairs_block": 1})
    assert again.ran == [] and len(again.cached) == len(dist.ran)


def toy_graph(side: Path | None = None, hold: float = 0.0):
    from divergent.study import Graph, Unit

    g = Graph()
    g.add(Unit("cpu:a", "train", R + "cpu", {"value": 1}))
    g.add(Unit("cpu:b", "train", R + "cpu", {"value": 2}))
    g.add(Unit("gpu:a", "extract", R + "gpu", {"value": 10}, deps=("cpu:a",)))
    g.add(Unit("gpu:ab", "extract", R + "gpu", {"value": 100}, deps=("cpu:a", "cpu:b")))
    if side is not None:
        g.add(Unit("slow", "pairs", R + "slow", {"value": 7, "side": str(side), "hold": hold}))
    return g


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("shared_fs", [False, True])
def test_gpu_units_land_on_the_gpu_node_only(cluster, ray_toys, shared_fs):
    from divergent.study import run_graph
    from divergent.study.executors import RayExecutor

    out = cluster.watch / f"gpu-{shared_fs}"
    ex = RayExecutor(address=cluster.address, shared_fs=shared_fs)
    s = run_graph(toy_graph(), out, executor=ex, progress=False, device="cuda")
    assert s.ok, s.failed
    assert s.results["gpu:a"]["value"] == 11 and s.results["gpu:ab"]["value"] == 103
    assert ex.placements["gpu:a"] == ex.placements["gpu:ab"] == cluster.gpu_node_id
    assert s.results["gpu:a"]["cuda_visible"] != ""             # Ray gave the unit the node's GPU
    assert Path(s.results["gpu:a"]["work"]).is_relative_to(out)     # paths name the driver's directory
    assert (Path(s.results["gpu:ab"]["work"]) / "value.json").read_text() == "103"   # the file came back
    opened = cluster.opened_under(out)
    if shared_fs:
        assert any(p.endswith("value.json") for p in opened)  # read and written in place
    else:
        assert opened == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_killed_mid_unit_is_retried_with_the_same_result(cluster, ray_toys, tmp_path):
    from divergent.study import InlineExecutor, run_graph
    from divergent.study.executors import RayExecutor

    (tmp_path / "ref-side").mkdir()
    ref = run_graph(toy_graph(tmp_path / "ref-side", 0.0), tmp_path / "ref", executor=InlineExecutor(), progress=False)
    side = tmp_path / "side"
    side.mkdir()
    out = cluster.watch / "killed"
    ex = RayExecutor(address=cluster.address)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("s", run_graph(toy_graph(side, 120.0), out, executor=ex,
                                                                      progress=False, device="cuda")))
    t.start()
    deadline = time.monotonic() + 60
    while not list(side.glob("attempt-*")):
        assert time.monotonic() < deadline, "the slow unit never started"
        time.sleep(0.2)
    victim = int(next(side.glob("attempt-*")).name.split("-")[1])
    os.kill(victim, signal.SIGKILL)
    t.join(90)
    assert not t.is_alive()
    s = box["s"]
    assert s.ok, s.failed
    assert len(list(side.glob("attempt-*"))) == 2                  # killed once, retried once
    assert {k: v["value"] for k, v in s.results.items()} == {k: v["value"] for k, v in ref.results.items()}
    assert (Path(s.results["gpu:a"]["work"]).parent / "record.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_node_removed_mid_unit_has_the_unit_rerun_on_another_node(cluster, ray_toys, tmp_path):
    """Runs last (it removes a node): a GPU unit starts on one of two GPU nodes, that node is
    removed while the unit runs, and Ray reruns the unit on the other one, with the same result."""
    from divergent.study import Graph, Unit, run_graph
    from divergent.study.executors import RayExecutor

    spare = cluster.add_node_here(num_gpus=1)
    side = tmp_path / "side"
    side.mkdir()
    g = Graph()
    g.add(Unit("slow", "train", R + "slowgpu", {"value": 5, "side": str(side), "hold": 120.0}))
    ex = RayExecutor(address=cluster.address)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("s", run_graph(g, cluster.watch / "node", executor=ex,
                                                                      progress=False, device="cuda")))
    t.start()
    deadline = time.monotonic() + 90
    while not list(side.glob("attempt-*")):
        assert time.monotonic() < deadline, "the slow unit never started"
        time.sleep(0.2)
    first = next(side.glob("attempt-*")).read_text()
    nodes = {n.node_id: n for n in cluster.worker_nodes}
    assert first in nodes and first in (spare.node_id, cluster.gpu_node_id)
    cluster.remove_node(nodes[first], allow_graceful=False)
    t.join(150)
    assert not t.is_alive()
    s = box["s"]
    assert s.ok, s.failed
    assert s.results["slow"]["value"] == 15
    assert ex.placements["slow"] != first and ex.placements["slow"] in (spare.node_id, cluster.gpu_node_id)
