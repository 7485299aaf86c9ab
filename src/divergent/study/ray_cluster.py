"""Ray: joining a cluster (or starting a local one on 127.0.0.1 only), what each node offers, and
work units on nodes that do not see the driver's disk.

The one entry point for every command that runs on Ray (``divergent study run --executor ray``,
and the bulk extraction and all-pairs commands)::

    cluster = connect(address, workers)     # -> RayCluster
    print(cluster.describe())               # the cluster's nodes and resources
    ...                                     # ray.remote(...) tasks
    cluster.shutdown()                      # stops the Ray this call started; leaves a joined one running

Address precedence (``resolve_address``): the command's ``--address``, then ``[run] address`` of a
study config, then the ``RAY_ADDRESS`` environment variable; with none, a local Ray starts with
``workers`` CPUs, bound to 127.0.0.1 and with a small object store.

Without a shared filesystem (``[run] shared_fs = false``, the default) a unit runs in a scratch
directory on its node: the driver ships what it reads (its dependencies' output files; the
committed store, or the part of it some models need (``store-models``: :func:`store_paths`), and
the study's records when its :class:`~divergent.study.units.Resources` say it reads them)
through the object store, and the unit's new files come back through Ray, to be
written under the output directory by the driver, which stays the store's one writer. Datasets
and model weights are never shipped: every node must reach them under the same path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._files import is_temp_name
from ..errors import DivergentError, require

#: Ray's switch that keeps a local Ray on the loopback address (Ray otherwise binds and advertises
#: the machine's network address)
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: object store of a local Ray started by :func:`connect` (Ray's minimum is 75 MiB)
LOCAL_OBJECT_STORE_MB = 256
#: times Ray reruns a unit whose worker process or node died (an error raised by the unit is not retried)
MAX_RETRIES = 3
#: shipped files of at least this many bytes travel memory-mapped: Ray copies their pages into the
#: object store, so the driver never holds a file's bytes in its own memory (smaller files are read)
MAP_MIN_BYTES = 1 << 20
#: what the fix of a failure on another node says about inputs that are not shipped
SAME_PATH = ("datasets and model weights are not shipped to the nodes: each node reads them itself, so they must "
             "exist on every node under the same path (docs/study.md, 'Ray')")


def resolve_address(flag: str | None = None, configured: str | None = None) -> str | None:
    """The cluster to join: the command's flag, then the config's ``[run] address``, then
    ``RAY_ADDRESS``; None: start a local Ray."""
    for a in (flag, configured, os.environ.get("RAY_ADDRESS")):
        if a and str(a).strip():
            return str(a).strip()
    return None


@contextlib.contextmanager
def loopback():
    """Within: a Ray started by this process (``ray.init`` of a local instance, or
    ``ray.cluster_utils.Cluster``) binds and advertises 127.0.0.1 only; its processes inherit that."""
    ray = require("ray", "ray")
    from ray._private import ray_constants

    old_env, old_const = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield ray
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_const
        if old_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = old_env


@dataclass
class NodeInfo:
    """One live node of the cluster."""

    node_id: str
    host: str
    ip: str
    resources: dict[str, float]

    def label(self) -> str:
        return f"{self.host} ({self.ip}, node {self.node_id[:8]})"


def _gib(x: float) -> str:
    return f"{x / 2**30:.1f} GiB"


@dataclass
class RayCluster:
    """The Ray cluster this process is connected to (made by :func:`connect`)."""

    address: str
    started: bool                                   # True: connect() started a local Ray (shutdown stops it)
    owned: bool = True                              # False: the process was connected before; shutdown leaves it
    nodes: list[NodeInfo] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def cpus(self) -> int:
        return max(1, int(self.resources.get("CPU", 1)))

    @property
    def gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    def refresh(self) -> RayCluster:
        """Re-read the live nodes and the cluster's total resources."""
        import ray

        self.nodes = [NodeInfo(n["NodeID"], n.get("NodeManagerHostname", "?"), n.get("NodeManagerAddress", "?"),
                               {k: float(v) for k, v in n.get("Resources", {}).items()})
                      for n in ray.nodes() if n.get("Alive")]
        self.resources = {k: float(v) for k, v in ray.cluster_resources().items()}
        return self

    def describe(self) -> str:
        """The cluster's resources, one line in all and one per node (what the driver prints)."""
        r = self.resources
        how = "a local Ray started on 127.0.0.1" if self.started else "joined"
        lines = [f"Ray cluster {self.address} ({how}): {len(self.nodes)} node(s), {r.get('CPU', 0):g} CPU, "
                 f"{r.get('GPU', 0):g} GPU, {_gib(r.get('memory', 0))} memory, "
                 f"{_gib(r.get('object_store_memory', 0))} object store"]
        for n in self.nodes:
            nr = n.resources
            lines.append(f"  node {n.label()}: {nr.get('CPU', 0):g} CPU, {nr.get('GPU', 0):g} GPU, "
                         f"{_gib(nr.get('memory', 0))} memory")
        return "\n".join(lines)

    def fits(self, options: dict) -> bool:
        """Whether some live node offers what a task with these options asks for."""
        need = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0),
                "memory": options.get("memory", 0)}
        return any(all(n.resources.get(k, 0.0) >= v for k, v in need.items() if v) for n in self.nodes)

    def shutdown(self) -> None:
        """Disconnect (a local Ray that connect() started stops with it); a connection that existed
        before connect() is left as it was."""
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()


def connect(address: str | None, workers: int) -> RayCluster:
    """Connect this process to Ray and return the cluster's description.

    `address` (e.g. ``auto``, ``HOST:6379``, ``ray://HOST:10001``) joins an existing cluster; None
    falls back to ``RAY_ADDRESS``, and without it starts a local Ray with `workers` CPUs, bound to
    127.0.0.1 only, with a small object store (:data:`LOCAL_OBJECT_STORE_MB`). `workers` is ignored
    when joining (the cluster's nodes say what they have). A process already connected keeps its
    connection (and :meth:`RayCluster.shutdown` leaves it open). Errors are DivergentErrors saying how to start or reach a cluster.
    """
    ray = require("ray", "ray")
    address = resolve_address(address)
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayCluster(getattr(ctx, "gcs_address", "") or (address or "local"), started=False, owned=False).refresh()
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # a local Ray reports nothing anywhere
        with loopback():
            info = ray.init(address="local", num_cpus=max(1, int(workers)), include_dashboard=False,
                            object_store_memory=LOCAL_OBJECT_STORE_MB * 2**20, log_to_driver=False,
                            _node_ip_address="127.0.0.1")
        return RayCluster(info.address_info.get("gcs_address", "local"), started=True).refresh()
    try:
        # a cluster on the loopback address (one machine, `ray start --head --node-ip-address 127.0.0.1`)
        # is joined there: Ray would otherwise swap 127.0.0.1 for the machine's network address
        with loopback() if is_loopback(address) else contextlib.nullcontext():
            info = ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DivergentError(f"cannot join the Ray cluster at {address!r}: {exc}",
                             "start one (`ray start --head`, then --address auto) or give the address the head "
                             "printed; without --address, [run] address or RAY_ADDRESS a local Ray starts") from None
    gcs = getattr(info, "address_info", {}).get("gcs_address") or address
    return RayCluster(gcs, started=False).refresh()


def is_loopback(address: str) -> bool:
    """Whether an address (HOST:PORT, ray://HOST:PORT) names this machine's loopback interface."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def task_options(resources, device: str) -> dict[str, Any]:
    """Ray task options from a unit's :class:`~divergent.study.units.Resources` on the study's device."""
    return {"num_cpus": float(resources.cpus), "num_gpus": resources.gpus(device),
            "memory": int(resources.memory_mb) * 2**20, "max_retries": MAX_RETRIES, "retry_exceptions": False}


def describe_options(options: dict) -> str:
    return (f"{options['num_cpus']:g} CPU, {options['num_gpus']} GPU, "
            f"{options['memory'] / 2**30:.1f} GiB memory")


# ---------------------------------------------------------------- on the node: running one unit

def node_label() -> str:
    """This node, as error messages and the log name it."""
    try:
        import ray

        nid = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        nid = ""
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        ip = "?"
    return f"{socket.gethostname()} ({ip}{', node ' + nid[:8] if nid else ''})"


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray
        return ""


def _error(call, exc: BaseException) -> dict:
    """A failure as plain data (the driver raises it as a DivergentError naming the node)."""
    missing = isinstance(exc, (FileNotFoundError, NotADirectoryError)) or (
        isinstance(exc, DivergentError) and any(w in str(exc).lower() for w in ("not found", "does not exist",
                                                                                 "no such file", "missing")))
    return {"unit": call.ctx.unit, "node": node_label(), "type": type(exc).__name__,
            "problem": getattr(exc, "problem", None) or str(exc), "fix": getattr(exc, "fix", None),
            "missing": missing, "traceback": traceback.format_exc()}


def _remap(obj, pairs: list[tuple[str, str]]):
    """Strings that are paths under one of the roots, moved to the matching other root."""
    if isinstance(obj, str):
        for a, b in pairs:
            if obj == a or obj.startswith(a + os.sep):
                return b + obj[len(a):]
        return obj
    if isinstance(obj, dict):
        return {k: _remap(v, pairs) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_remap(v, pairs) for v in obj)
    return obj


def _stat_all(roots: dict[str, Path]) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for r in roots.values() for p in r.rglob("*") if p.is_file()}


def run_on_node(call, shared_fs: bool, roots: dict[str, str], *bundles: dict[str, bytes]) -> dict:
    """Run one unit on this node (a Ray task). Returns {"result", "files", "node"} or {"error"}.

    shared_fs: the unit reads and writes the output directory in place (its work directory is
    emptied first, so a retried attempt starts clean). Otherwise it runs in a scratch directory
    holding the shipped `bundles` ({"TAG/relative path": bytes}, TAG one of `roots`), and every file
    it creates or changes there comes back as bytes, keyed the same way.
    """
    from ..store.layout import VERDICTS
    from .executors import run_unit_call

    if shared_fs:
        try:
            work = Path(call.ctx.work)
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, exist_ok=True)
            return {"result": run_unit_call(call), "files": {}, "node": _node_id()}
        except Exception as exc:  # noqa: BLE001 - reported to the driver as data
            return {"error": _error(call, exc)}
    scratch = Path(tempfile.mkdtemp(prefix="divergent-unit-"))
    try:
        local = {tag: scratch / tag for tag in roots}
        for b in bundles:
            for key, data in b.items():
                tag, _, rel = key.partition("/")
                p = local[tag] / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        for p in local.values():
            p.mkdir(parents=True, exist_ok=True)
        there = sorted(((str(Path(roots[t])), str(local[t])) for t in roots), key=lambda x: -len(x[0]))
        back = sorted(((str(local[t]), str(Path(roots[t]))) for t in roots), key=lambda x: -len(x[0]))
        ctx = call.ctx
        ctx = replace(ctx, out=Path(_remap(str(ctx.out), there)), store=Path(_remap(str(ctx.store), there)),
                      work=Path(_remap(str(ctx.work), there)), deps=_remap(ctx.deps, there))
        Path(ctx.work).mkdir(parents=True, exist_ok=True)
        before = _stat_all(local)
        try:
            result = run_unit_call(replace(call, ctx=ctx, params=_remap(call.params, there)))
        except Exception as exc:  # noqa: BLE001 - reported to the driver as data
            return {"error": _error(call, exc)}
        files = {}
        # never the node's hash verdicts: they name this node's inodes, and would replace the driver's
        mine = {local["store"] / VERDICTS} if "store" in local else set()
        for tag, root in local.items():
            for p in sorted(root.rglob("*")):
                if p.is_file() and p not in mine and before.get(p) != (p.stat().st_size, p.stat().st_mtime_ns):
                    files[f"{tag}/{p.relative_to(root).as_posix()}"] = p.read_bytes()
        return {"result": _remap(result, back), "files": files, "node": _node_id()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- on the driver: what a unit reads

def file_payload(p: Path):
    """What is shipped of one file: a read-only memory map of a file of at least MAP_MIN_BYTES
    (a uint8 array: ray.put copies it from the page cache into the object store), else its bytes.
    Either is written on the node as is (both are bytes-like)."""
    size = p.stat().st_size
    if size >= max(1, MAP_MIN_BYTES):
        import numpy as np

        # a plain ndarray view (a memmap subclass would pickle through a copy of its bytes)
        return np.memmap(p, dtype=np.uint8, mode="r", shape=(size,)).view(np.ndarray)
    return p.read_bytes()


def tree_files(root: Path, tag: str, base: Path | None = None, skip=None) -> dict:
    """{"TAG/path relative to base": file_payload} of the files under root (a file or a directory)."""
    root, base = Path(root), Path(base if base is not None else root)
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = {}
    for p in paths:
        rel = p.relative_to(base)
        if is_temp_name(p.name) or (skip and skip(rel)):
            continue
        out[f"{tag}/{rel.as_posix()}"] = file_payload(p)
    return out


def store_paths(store: Path, models: list[str] | None = None, split: str | None = None) -> list[str]:
    """The committed store's files a unit reads, as paths relative to the store: the whole store
    (every file but staged entries, the lock, temporaries and the per-machine hash verdicts), or,
    with `models` (a unit that reads ``store-models``: units.store_reads), its metadata (the
    manifest; every split's labels and ids) and the arrays of those of `models` in the manifest,
    on `split` only when it is given. Derived results (STORE/cache) are left out of the subset:
    a unit computes what it needs, and what it caches comes back with its other files."""
    from ..store import manifest as M
    from ..store.layout import LOCK, MANIFEST, PARTIAL, STAGING, VERDICTS

    store = Path(store)
    if not store.exists():
        return []
    if models is None:   # the whole store: every file but the driver's own
        return [rel.as_posix() for rel in sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
                if rel.parts[0] not in (STAGING, LOCK, PARTIAL) and rel.as_posix() != VERDICTS
                and not is_temp_name(rel.name)]
    if not (store / MANIFEST).exists():
        return []
    m, _ = M.read(store)
    wanted = set(models)
    subset = {**m, "models": {name: {**e, "splits": {s: se for s, se in e["splits"].items() if split in (None, s)}}
                              for name, e in m["models"].items() if name in wanted}}
    return sorted(rel for rel in M.live_paths(subset) | {MANIFEST} if (store / rel).is_file())


def store_files(store: Path, models: list[str] | None = None, split: str | None = None) -> dict:
    """{"store/<path>": file_payload} of :func:`store_paths` (the committed store, or the part of it that
    `models` on `split` need, with a PARTIAL note saying what the copy holds)."""
    store = Path(store)
    files = {f"store/{rel}": file_payload(store / rel) for rel in store_paths(store, models, split)}
    if models is not None and files:
        import json

        from ..store.layout import PARTIAL

        files[f"store/{PARTIAL}"] = json.dumps({
            "models": list(models), "split": split,
            "why": "the unit declares Resources(reads=(\"store-models\",)): it reads the models its parameters "
                   "model, base and models name, on its split",
            "fix": "name every model the unit reads in those parameters, or declare reads=(\"store\",) "
                   "(the whole store; docs/study.md, 'Ray')"}).encode()
    return files


def store_key(store: Path, models: list[str] | None = None, split: str | None = None) -> tuple:
    """Changes whenever a file of :func:`store_paths` does (names, sizes, times)."""
    store = Path(store)
    head = () if models is None else (tuple(models), split)
    return head + tuple((rel, (store / rel).stat().st_size, (store / rel).stat().st_mtime_ns)
                        for rel in store_paths(store, models, split))


def record_files(out: Path) -> dict[str, bytes]:
    """The study's records: OUT/.study/*.json and every finished unit's record.json."""
    study = Path(out) / ".study"
    if not study.exists():
        return {}
    paths = sorted(study.glob("*.json")) + sorted(study.glob("units/*/record.json"))
    return {f"out/{p.relative_to(out).as_posix()}": p.read_bytes() for p in paths if p.is_file()}


def write_files(files: dict[str, bytes], roots: dict[str, str]) -> None:
    """Write what a unit sent back under the driver's roots (the driver is the only writer)."""
    from .._files import atomic_write_bytes

    for key, data in files.items():
        tag, _, rel = key.partition("/")
        dest = Path(roots[tag]) / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise DivergentError(f"a unit sent back a file outside its directory: {key!r}")
        atomic_write_bytes(dest, data, durable=False)
