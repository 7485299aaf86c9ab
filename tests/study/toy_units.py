"""Toy unit functions for runner tests (importable by spawned worker processes)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def _log(ctx, name):
    with open(Path(ctx.out) / "calls.log", "a") as f:
        f.write(name + "\n")


def source(ctx, *, value: int) -> dict:
    _log(ctx, ctx.unit)
    (Path(ctx.work) / "value.json").write_text(json.dumps(value))
    return {"value": value}


def double(ctx, *, crash_flag: str = "") -> dict:
    _log(ctx, ctx.unit)
    if crash_flag and Path(crash_flag).exists():
        os.unlink(crash_flag)
        raise KeyboardInterrupt("simulated interruption")
    return {"value": 2 * sum(d["value"] for d in ctx.deps.values())}


def parity(ctx) -> dict:
    _log(ctx, ctx.unit)
    return {"even": sum(d["value"] for d in ctx.deps.values()) % 2 == 0}


def boom(ctx) -> dict:
    _log(ctx, ctx.unit)
    raise ValueError("this unit always fails")
