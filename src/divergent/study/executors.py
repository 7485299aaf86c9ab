"""Executors run work units: in-process, in local worker processes (default), or on Ray.

The runner talks to an executor through two methods only — ``submit(call) -> Future`` and
``shutdown()`` — so a distributed backend plugs in here, by name, in ``EXECUTORS``.
"""
from __future__ import annotations

import os
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

    n = max(1, call.ctx.torch_threads)
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by torch when a unit first imports it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
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


class LocalExecutor:
    """Local worker processes (spawned, so each has its own torch threads)."""

    name = "local"

    def __init__(self, workers: int = 2):
        import multiprocessing as mp

        self.workers = max(1, int(workers))
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))

    def submit(self, call: UnitCall) -> Future:
        return self._pool.submit(run_unit_call, call)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class RayExecutor:
    """Runs units as Ray tasks (``pip install 'divergent[ray]'``); ray is imported only here."""

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None):
        self.ray = require("ray", "ray")
        if not self.ray.is_initialized():
            self.ray.init(address=address, num_cpus=None if address else workers, ignore_reinit_error=True,
                          log_to_driver=False)
        self.workers = workers
        self._remote = self.ray.remote(run_unit_call)

    def submit(self, call: UnitCall) -> Future:
        return self._remote.remote(call).future()

    def shutdown(self, wait: bool = True) -> None:
        pass


EXECUTORS = {"inline": InlineExecutor, "local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, workers: int = 2):
    if name not in EXECUTORS:
        raise DivergentError(f"unknown executor {name!r}", f"use one of {', '.join(EXECUTORS)}")
    if name == "local" and workers <= 1:
        return InlineExecutor()
    return EXECUTORS[name](workers=workers)
