"""Work units and their dependency graph; a unit's cache key is the content hash of its inputs.

A unit's key = sha256(stage, function, params, and the output hash of every dependency), so a
rerun redoes exactly the units whose inputs changed and everything downstream of them, and a
dependency that reruns but produces the same outputs does not invalidate its dependents.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DivergentError
from .io import hash_obj

#: bump when a stage's code changes in a way that must invalidate cached results
CODE_VERSION = "1"


@dataclass
class Unit:
    """One piece of work: `fn` is 'module:function', called as fn(ctx, **params) -> dict."""

    id: str
    stage: str
    fn: str
    params: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    #: run in the runner's own process (units that read or write the store in place)
    main: bool = False
    #: rough relative cost, for the ETA
    cost: float = 1.0
    #: deps whose failure does not skip this unit (bulk stages: one failing model does not stop the study)
    optional: tuple[str, ...] = ()

    def key(self, dep_outputs: dict[str, str]) -> str:
        return hash_obj({"v": CODE_VERSION, "stage": self.stage, "fn": self.fn, "params": self.params,
                         "deps": {d: dep_outputs.get(d, "failed") for d in self.deps}})


class Graph:
    """Units in insertion order; deps must name units added before (so the order is topological)."""

    def __init__(self):
        self.units: dict[str, Unit] = {}

    def add(self, unit: Unit) -> Unit:
        if unit.id in self.units:
            raise DivergentError(f"duplicate work unit {unit.id!r}")
        for d in unit.deps:
            if d not in self.units:
                raise DivergentError(f"unit {unit.id!r} depends on unknown unit {d!r}")
        self.units[unit.id] = unit
        return unit

    def __iter__(self):
        return iter(self.units.values())

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, uid: str) -> Unit:
        return self.units[uid]

    def stages(self) -> list[str]:
        return list(dict.fromkeys(u.stage for u in self))

    def dependents(self, uid: str) -> set[str]:
        out, frontier = set(), {uid}
        while frontier:
            nxt = {u.id for u in self if set(u.deps) & frontier} - out
            out |= nxt
            frontier = nxt
        return out
