"""Toy units of the Ray tests: one that needs the study's GPU, slow ones that can be killed mid-run.
Ray worker processes import this module (the tests put this folder on their PYTHONPATH)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from divergent.study.units import Resources, unit


@unit(name="raytoy.cpu", version=1, resources=Resources(reads=()))
def cpu_unit(ctx, *, value: int) -> dict:
    (Path(ctx.work) / "value.json").write_text(json.dumps(value))
    return {"value": value, "work": str(ctx.work)}


@unit(name="raytoy.gpu", version=1, resources=Resources(gpu=True, reads=()))
def gpu_unit(ctx, *, value: int) -> dict:
    """Reads its dependencies' files (shipped, or in place) and writes its own."""
    total = sum(json.loads((Path(d["work"]) / "value.json").read_text()) for d in ctx.deps.values())
    (Path(ctx.work) / "value.json").write_text(json.dumps(value + total))
    return {"value": value + total, "work": str(ctx.work),
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def _slow(ctx, value: int, side_dir: Path, hold: float, tag: str) -> dict:
    first = not any(side_dir.glob("attempt-*"))
    (side_dir / f"attempt-{os.getpid()}").write_text(tag)
    if first:
        time.sleep(hold)
    (Path(ctx.work) / "value.json").write_text(json.dumps(3 * value))
    return {"value": 3 * value}


@unit(name="raytoy.slow", version=1, resources=Resources(reads=()))
def slow_unit(ctx, *, value: int, side: str, hold: float) -> dict:
    """Its first attempt records its pid under `side` and waits `hold` seconds (to be killed);
    later attempts finish at once. The result does not depend on the attempt."""
    return _slow(ctx, value, Path(side), hold, ctx.unit)


@unit(name="raytoy.slowgpu", version=1, resources=Resources(gpu=True, reads=()))
def slow_gpu_unit(ctx, *, value: int, side: str, hold: float) -> dict:
    """slow_unit on a GPU node; each attempt records the node it runs on."""
    import ray

    return _slow(ctx, value, Path(side), hold, ray.get_runtime_context().get_node_id())
