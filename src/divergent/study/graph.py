"""Work units and their dependency graph; a unit's cache key is the content hash of its inputs
and of its code's version.

A unit's key = sha256(stage, registered unit name, the unit's version, params, and the output hash
of every dependency), so a rerun redoes exactly the units whose inputs or code version changed and
everything downstream of them, and a dependency that reruns but produces the same outputs does not
invalidate its dependents. Unit names and versions live in the registry (:mod:`.units`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DivergentError
from . import units as registry
from .._files import canonical_json_sha256 as hash_obj


@dataclass
class Unit:
    """One piece of work: `fn` is a registered unit function (see :mod:`.units`) or its registered
    name, called as fn(ctx, **params) -> dict; it is kept as the registered name (plain data)."""

    id: str
    stage: str
    fn: str | Callable
    params: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    #: run in the runner's own process (units that read or write the store in place)
    main: bool = False
    #: rough relative cost, for the ETA
    cost: float = 1.0
    #: deps whose failure does not skip this unit (bulk stages: one failing model does not stop the study)
    optional: tuple[str, ...] = ()

    def __post_init__(self):
        self.fn = registry.name_of(self.fn)

    def key(self, dep_outputs: dict[str, str]) -> str:
        return hash_obj({"stage": self.stage, "unit": self.fn, "version": registry.spec(self.fn).version,
                         "params": self.params, "deps": {d: dep_outputs.get(d, "failed") for d in self.deps}})


class Graph:
    """Units in insertion order; deps must name units added before (so the order is topological)."""

    def __init__(self):
        self.units: dict[str, Unit] = {}

    def add(self, unit: Unit) -> Unit:
        if unit.id in self.units:
            raise DivergentError(f"duplicate work unit {unit.id!r}")
        registry.spec(unit.fn)   # an unknown unit fails here, when the study is planned
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
