"""The machine a study ran on: CPU model, the instruction set numpy dispatches to, library versions.

Results are reproducible bit for bit only on like machines (docs/study.md): numpy's AVX-512 ``exp``
differs from the AVX2 / libm one in the last bit, and training varies across CPUs and thread
counts. ``divergent study run`` writes this table to OUT/.study/environment.json when it starts;
the report shows it in its footer.
"""
from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

#: where a study keeps the environment of its latest run (relative to OUT)
ENVIRONMENT_FILE = Path(".study") / "environment.json"
#: the libraries whose versions are recorded (distribution names)
LIBRARIES = ("numpy", "torch", "divergent")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def instruction_set() -> tuple[str, str]:
    """(the widest SIMD extension numpy uses here: 'AVX-512', 'AVX2', 'SSE4.2', NEON/ASIMD, ...,
    the dispatch targets numpy found on this CPU), from numpy's own CPU detection."""
    try:
        from numpy._core import _multiarray_umath as mu
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as mu
    feats = {k: bool(v) for k, v in getattr(mu, "__cpu_features__", {}).items()}
    targets = [t for t in getattr(mu, "__cpu_dispatch__", []) if feats.get(t)]
    if feats.get("AVX512F") or feats.get("AVX512_SKX") or feats.get("X86_V4"):
        widest = "AVX-512"
    elif feats.get("AVX2"):
        widest = "AVX2"
    elif feats.get("SSE42"):
        widest = "SSE4.2"
    elif feats.get("ASIMD") or feats.get("NEON"):
        widest = "ASIMD (NEON)"
    else:
        widest = "baseline"
    return widest, " ".join(targets) or "none"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def capture() -> dict[str, str]:
    """The environment of this process, as item -> text (the rows of the report's footer)."""
    from ..conventions import threads

    widest, targets = instruction_set()
    env = {"cpu": cpu_model(), "instruction set": widest, "numpy dispatch": targets,
           "cores": str(os.cpu_count() or "?"), "threads": str(threads()),
           "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
           "python": platform.python_version()}
    env.update({lib: version(lib) for lib in LIBRARIES})
    env["captured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return env


def write(out) -> Path:
    """Capture the environment and write it to OUT/.study/environment.json (atomically)."""
    from .._files import atomic_write_text

    p = Path(out) / ENVIRONMENT_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps(capture(), indent=1))
    return p


def table(out=None) -> pd.DataFrame:
    """The environment as a table (item, value): the one OUT/.study/environment.json holds, else
    this process's."""
    p = None if out is None else Path(out) / ENVIRONMENT_FILE
    env = json.loads(p.read_text()) if p is not None and p.exists() else capture()
    return pd.DataFrame({"item": list(env), "value": [str(v) for v in env.values()]})
