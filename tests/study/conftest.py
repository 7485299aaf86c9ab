"""Fixtures of the study tests: the toy units of this folder, registered for the runner and its workers;
a multi-node Ray cluster on 127.0.0.1."""
from __future__ import annotations

import contextlib
import os
import textwrap
from pathlib import Path

import pytest

from divergent.study import units

HERE = Path(__file__).parent


@pytest.fixture
def toy_units(monkeypatch):
    """Register tests/study/toy_units.py (its @unit functions) in the unit registry's module list,
    as spawned workers see it; the list is restored after the test."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setattr(units, "MODULES", units.MODULES)
    units.add_modules("toy_units")
    import toy_units

    return toy_units


SITECUSTOMIZE = '''
import os, sys
_root, _log = os.environ.get("DIVERGENT_TEST_WATCH"), os.environ.get("DIVERGENT_TEST_OPENS")
if _root and _log:
    def _hook(event, args):
        if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            p = os.path.abspath(os.fsdecode(args[0]))
            if p == _root or p.startswith(_root + os.sep):
                fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.write(fd, (p + "\\n").encode())
                os.close(fd)
    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + two worker nodes on 127.0.0.1 (1 CPU each; the second declares one GPU), one per test
    module. Every Ray worker process records the paths it opens under `cluster.watch` (a
    sitecustomize audit hook): `cluster.opened_under(path)` lists them."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from divergent.study.ray_cluster import connect, loopback

    base = tmp_path_factory.mktemp("ray")
    hook = base / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    watch, opens = base / "outs", base / "opens.log"
    watch.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(hook), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "DIVERGENT_TEST_WATCH": str(watch.resolve()), "DIVERGENT_TEST_OPENS": str(opens),
           "RAY_USAGE_STATS_ENABLED": "0"}
    node = dict(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=100 * 2**20)

    @contextlib.contextmanager
    def setting():
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            with loopback():
                yield

    with setting():
        c = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, **node))
        c.add_node(**node)
        gpu_node = c.add_node(num_gpus=1, **node)
        c.wait_for_nodes()
        connect(c.address, 1)    # one driver connection for the module: its worker processes are reused

    def add_node(**kw):
        with setting():
            n = c.add_node(**{**node, **kw})
            c.wait_for_nodes()
        return n

    def opened_under(path: Path) -> list[str]:
        """The paths under `path` that a Ray worker process opened or listed."""
        lines = opens.read_text().splitlines() if opens.exists() else []
        root = str(Path(path).resolve())
        return [p for p in lines if p == root or p.startswith(root + os.sep)]

    c.add_node_here = add_node
    c.opened_under = opened_under
    c.gpu_node_id = gpu_node.node_id
    c.watch, c.opens = watch, opens
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
