"""Toy unit functions for runner tests (registered like the study's units; spawned worker
processes import this module when the `toy_units` fixture has added it to the registry's modules)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from divergent.study.units import unit


def _log(ctx, name):
    with open(Path(ctx.out) / "calls.log", "a") as f:
        f.write(name + "\n")


@unit(name="toy.source", version=1)
def source(ctx, *, value: int) -> dict:
    _log(ctx, ctx.unit)
    (Path(ctx.work) / "value.json").write_text(json.dumps(value))
    return {"value": value}


@unit(name="toy.double", version=1)
def double(ctx, *, crash_flag: str = "") -> dict:
    _log(ctx, ctx.unit)
    if crash_flag and Path(crash_flag).exists():
        os.unlink(crash_flag)
        raise KeyboardInterrupt("simulated interruption")
    return {"value": 2 * sum(d["value"] for d in ctx.deps.values())}


@unit(name="toy.parity", version=1)
def parity(ctx) -> dict:
    _log(ctx, ctx.unit)
    return {"even": sum(d["value"] for d in ctx.deps.values()) % 2 == 0}


@unit(name="toy.boom", version=1)
def boom(ctx) -> dict:
    _log(ctx, ctx.unit)
    raise ValueError("this unit always fails")


@unit(name="toy.sleep", version=1)
def sleep(ctx, *, seconds: float, pid_file: str) -> dict:
    """Writes its worker's pid, then sleeps: a long unit to interrupt."""
    import time

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {"slept": seconds}
