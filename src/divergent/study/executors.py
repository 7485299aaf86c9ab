"""Executors run work units: in-process, in local worker processes (default), or on Ray.

The runner talks to an executor through two methods only — ``submit(call) -> Future`` and
``shutdown()`` — so a distributed backend plugs in here, by name, in ``EXECUTORS``. Connecting to
Ray, and running a unit on a node without the driver's disk, live in :mod:`.ray_cluster`.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DivergentError, require
from . import units as registry

if TYPE_CHECKING:
    from .config import StudyConfig


@dataclass
class UnitContext:
    """What a unit function receives besides its params (plain, picklable data)."""

    unit: str
    out: Path            # the study's output directory
    store: Path          # the study's store (read it; never write it from a unit)
    work: Path           # this unit's own output directory (stage files here)
    deps: dict[str, dict] = field(default_factory=dict)   # dependency unit id -> its result dict
    config: StudyConfig | None = None   # the validated study config (None outside a study)
    torch_threads: int = 1
    device: str = "cpu"

    def dep(self, prefix: str) -> dict:
        """The result of the one dependency whose id starts with prefix."""
        hits = [v for k, v in self.deps.items() if k.startswith(prefix)]
        if len(hits) != 1:
            raise DivergentError(f"unit {self.unit!r}: expected one dependency {prefix!r}, found {len(hits)}")
        return hits[0]


@dataclass
class UnitCall:
    """One unit to run, as plain data: its registered name, the modules that register units (a
    worker imports them to find the function), its context and parameters."""

    unit: str
    modules: tuple[str, ...]
    ctx: UnitContext
    params: dict[str, Any]


def run_unit_call(call: UnitCall) -> dict:
    """Execute one unit (in whatever process the executor chose)."""
    import sys

    from threadpoolctl import threadpool_limits

    n = max(1, call.ctx.torch_threads)
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by torch when a unit first imports it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    # BLAS (numpy's OpenBLAS) with the same thread count in every process that runs units — a local
    # worker, a Ray task, the runner's own process (inline, calibrate): its thread count changes the
    # last bits of matrix products, hence of the heads and probes fitted here
    with threadpool_limits(limits=n, user_api="blas"):
        result = registry.function(call.unit, call.modules)(call.ctx, **call.params)
    return result if result is not None else {}


class InlineExecutor:
    """Runs each unit immediately in the calling process (debugging, tests, workers=1)."""

    name = "inline"

    def __init__(self, workers: int = 1):
        self.workers = 1

    def submit(self, call: UnitCall) -> Future:
        f: Future = Future()
        try:
            f.set_result(run_unit_call(call))
        except BaseException as exc:  # handed to the runner, which records and re-raises
            f.set_exception(exc)
        return f

    def shutdown(self, wait: bool = True) -> None:
        pass


#: how often a local worker checks that the study process that started it is still alive (seconds)
PARENT_CHECK_S = 0.5


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the study process that started it is gone (killed
    with SIGKILL, or by the OOM killer), instead of finishing its unit as an orphan beside a
    resumed run that may be training the same model into the same directory."""
    def watch():
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="divergent-parent-watch", daemon=True).start()


class LocalExecutor:
    """Local worker processes (spawned, so each has its own torch threads). A worker ends with the
    study process: ``shutdown(wait=False)`` (an interrupted run: Ctrl-C, SIGTERM) stops the units
    still running, and a worker whose parent died exits by itself (see _exit_with_parent); the
    units they were running are simply not recorded, and rerun on resume."""

    name = "local"

    def __init__(self, workers: int = 2):
        import multiprocessing as mp

        self.workers = max(1, int(workers))
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                         initializer=_exit_with_parent, initargs=(os.getpid(),))

    def submit(self, call: UnitCall) -> Future:
        return self._pool.submit(run_unit_call, call)

    def shutdown(self, wait: bool = True) -> None:
        """wait=True: finish the running units; wait=False (interrupted): stop them now."""
        procs = [] if wait else list((self._pool._processes or {}).values())
        self._pool.shutdown(wait=wait, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


class RayExecutor:
    """Runs units as Ray tasks (``pip install 'divergent[ray]'``; ray is imported only on this path).

    It joins the cluster at `address` (see :func:`divergent.study.ray_cluster.connect`: with none, a
    local Ray on 127.0.0.1 with `workers` CPUs) and prints its resources. Each unit's
    :class:`~divergent.study.units.Resources` become its task options (CPUs, a GPU when the study's
    device is cuda, a memory reservation), so a GPU unit is only placed on a node with a GPU; a
    unit no live node can hold fails at once, naming what it needs. A unit whose worker process or
    node dies is rerun by Ray (``ray_cluster.MAX_RETRIES`` times); an error the unit raises is not.
    With ``shared_fs=False`` units run in a scratch directory on their node, get their inputs and
    return their outputs through Ray, and this process writes the outputs (the store's one writer);
    with ``shared_fs=True`` they read and write the output directory in place.
    """

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None, shared_fs: bool = False, echo=None):
        from . import ray_cluster

        self.ray = require("ray", "ray")
        self._rc = ray_cluster
        self.cluster = ray_cluster.connect(address, workers)
        self.workers = self.cluster.cpus
        self.shared_fs = bool(shared_fs)
        self.placements: dict[str, str] = {}      # unit id -> id of the node it ran on
        self._remote = self.ray.remote(ray_cluster.run_on_node)
        self._refs: dict = {}
        self._bundles: dict = {}
        self._store_bundle: tuple = ((), None, {})
        self._subsets: dict[tuple, list] = {}       # store_key of a subset -> [ref, sizes, units in flight]
        self._lock = threading.Lock()
        #: unit id -> the store files shipped to it ({"store/<path>": size in bytes}; none with shared_fs)
        self.shipped: dict[str, dict[str, int]] = {}
        for line in self.cluster.describe().splitlines():
            (echo or _log().info)(line)
        if not self.shared_fs:
            _log().info("ray: shared_fs = false: units get their inputs and return their outputs through Ray")

    # -- what a unit reads, as object-store references (one put per dependency and store state)
    def _inputs(self, call: UnitCall, roots: dict[str, str], held: list) -> list:
        """The object-store references of what the unit reads; `held` gets the keys of the store
        subsets it holds (released by :meth:`_release` when it ends)."""
        from .cache import UnitCache
        from .._files import canonical_json_sha256

        rc, ctx = self._rc, call.ctx
        out, store = Path(ctx.out), Path(ctx.store)
        refs = []
        for d, res in ctx.deps.items():
            key = (d, canonical_json_sha256(res))
            if key not in self._bundles:
                files = rc.tree_files(UnitCache(out).dir(d) / "out", "out", base=out) if (UnitCache(out).dir(d) / "out").exists() else {}
                for s in _paths_in(res):
                    p = Path(s)
                    for tag in sorted(roots, key=lambda t: -len(roots[t])):
                        r = Path(roots[tag])
                        if r in p.parents and p.exists():   # (never the whole root)
                            files.update(rc.tree_files(p, tag, base=r))
                            break
                self._bundles[key] = self.ray.put(files)
            refs.append(self._bundles[key])
        reads = registry.spec(call.unit).resources.reads
        if "store" in reads:
            skey = rc.store_key(store)
            if self._store_bundle[0] != skey or self._store_bundle[1] is None:
                files = rc.store_files(store)
                self._store_bundle = (skey, self.ray.put(files), _sizes(files))
            refs.append(self._store_bundle[1])
            self.shipped[ctx.unit] = self._store_bundle[2]
        elif "store-models" in reads:   # the store's metadata and the arrays of the models it names
            models, split = registry.store_reads(call.params)
            skey = rc.store_key(store, models, split)
            with self._lock:
                if skey not in self._subsets:
                    files = rc.store_files(store, models, split)
                    self._subsets[skey] = [self.ray.put(files), _sizes(files), 0]
                self._subsets[skey][2] += 1   # units in flight with it (dropped when none is left)
                held.append(skey)
                refs.append(self._subsets[skey][0])
                self.shipped[ctx.unit] = self._subsets[skey][1]
        if "records" in reads:
            refs.append(self.ray.put(rc.record_files(out)))
        return refs

    def submit(self, call: UnitCall) -> Future:
        fut: Future = Future()
        spec = registry.spec(call.unit)
        options = self._rc.task_options(spec.resources, call.ctx.device)
        if not self.cluster.fits(options) and not self.cluster.refresh().fits(options):
            fut.set_exception(DivergentError(
                f"unit {call.ctx.unit!r} needs {self._rc.describe_options(options)} on one node, and no live node "
                f"of the Ray cluster has that:\n{self.cluster.describe()}",
                "add a node that has it (a GPU unit runs only where Ray sees a GPU), or run on the cpu device "
                "([run] device = \"cpu\")" if options["num_gpus"] else
                "add a bigger node, or lower the unit's Resources(memory_mb=...) estimate"))
            return fut
        roots = {"out": str(Path(call.ctx.out)), "store": str(Path(call.ctx.store))}
        held: list = []
        bundles = [] if self.shared_fs else self._inputs(call, roots, held)
        if call.ctx.unit in self.shipped:
            got = self.shipped[call.ctx.unit]
            _log().info("ray: %s is shipped %d store file(s), %.1f MB", call.ctx.unit, len(got), sum(got.values()) / 1e6)
        ref = self._remote.options(**options).remote(call, self.shared_fs, roots, *bundles)
        self._refs[ref] = call.ctx.unit
        ray_future = ref.future()

        def done(rf) -> None:
            self._refs.pop(ref, None)
            self._release(held)
            try:
                out = rf.result()
                if "error" in out:
                    raise _remote_error(out["error"])
                self._rc.write_files(out["files"], roots)
                self.placements[call.ctx.unit] = out["node"]
                _log().info("ray: %s ran on node %s (%d file(s) back)", call.ctx.unit, out["node"][:8], len(out["files"]))
                fut.set_result(out["result"])
            except BaseException as exc:  # noqa: BLE001 - handed to the runner, which records it
                fut.set_exception(_ray_failure(call.ctx.unit, exc))

        ray_future.add_done_callback(done)
        return fut

    def _release(self, keys: list) -> None:
        """A unit ended: drop the store subsets no unit in flight reads (Ray keeps what a retry needs)."""
        with self._lock:
            for k in keys:
                if k in self._subsets:
                    self._subsets[k][2] -= 1
                    if self._subsets[k][2] <= 0:
                        del self._subsets[k]

    def shutdown(self, wait: bool = True) -> None:
        if not wait:
            for ref in list(self._refs):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on an interrupted run
                    pass
        self._bundles.clear()
        self._subsets.clear()
        self._store_bundle = ((), None, {})
        self.cluster.shutdown()


def _log():
    import logging

    from .progress import LOG_NAME

    return logging.getLogger(LOG_NAME)


def _sizes(files: dict) -> dict[str, int]:
    """{"store/<path>": size in bytes} of a bundle of shipped files."""
    return {k: len(v) for k, v in files.items()}


def _paths_in(obj) -> list[str]:
    """Every string in a unit's result (the candidates for paths it names)."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _paths_in(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _paths_in(v)]
    return []


def _remote_error(e: dict) -> DivergentError:
    """A unit's failure on a node, as the driver reports it (naming the node)."""
    from .ray_cluster import SAME_PATH

    fix = e.get("fix") or "see the traceback in the study log"
    if e.get("missing"):
        fix = f"{fix}; {SAME_PATH}"
    err = DivergentError(f"unit {e['unit']!r} failed on node {e['node']}: {e['type']}: {e['problem']}", fix)
    err.add_note("traceback on the node:\n" + e.get("traceback", ""))
    return err


def _ray_failure(unit: str, exc: BaseException) -> BaseException:
    """Ray's own failures (a worker or node that died more often than retried, a cancelled task) as
    DivergentErrors; everything else unchanged."""
    if isinstance(exc, DivergentError):
        return exc
    mod = type(exc).__module__ or ""
    if mod.startswith("ray"):
        return DivergentError(f"unit {unit!r} did not finish on the Ray cluster: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}",
                              "its worker or node died more often than Ray retries; check the nodes "
                              "(`ray status`) and run the same command again (finished units are kept)")
    return exc


EXECUTORS = {"inline": InlineExecutor, "local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, workers: int = 2, *, address: str | None = None, shared_fs: bool = False, echo=None):
    """The executor `name` with `workers` parallel units; `address` and `shared_fs` are the Ray
    executor's (the address to join; see ray_cluster.resolve_address for the precedence)."""
    if name not in EXECUTORS:
        raise DivergentError(f"unknown executor {name!r}", f"use one of {', '.join(EXECUTORS)}")
    if name == "ray":
        return RayExecutor(workers=workers, address=address, shared_fs=shared_fs, echo=echo)
    if address:
        raise DivergentError(f"a Ray address ({address!r}) is given, but the executor is {name!r}",
                             "add --executor ray (or [run] executor = \"ray\"), or drop --address / [run] address")
    if name == "local" and workers <= 1:
        return InlineExecutor()
    return EXECUTORS[name](workers=workers)
