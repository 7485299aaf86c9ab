"""Engine checks that need numba's `exp` to be numpy's, on any machine.

Where the CPU has AVX-512, numpy computes float64 `exp` with its own AVX-512 code, which differs
from libm (what numba calls) in the last bit of some results; `fused_exp_matches_numpy()` is then
False and the engine uses its numpy paths only. The fused paths are still checked there, in a child
process where numpy's AVX-512 dispatch is turned off (`NPY_DISABLE_CPU_FEATURES`; numpy ignores
named features the CPU does not have, so the child works on machines without AVX-512 too).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = "NPY_DISABLE_CPU_FEATURES"


def _umath():
    try:
        from numpy._core import _multiarray_umath as mu  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1.26
        from numpy.core import _multiarray_umath as mu
    return mu


def _is_avx512(feature: str) -> bool:
    # numpy >= 2.4 names the AVX-512 levels X86_V4, AVX512_ICL, AVX512_SPR; earlier ones AVX512F, AVX512_SKX, ...
    return feature.startswith("AVX512") or feature == "X86_V4"


def numpy_avx512_dispatch() -> list[str]:
    """numpy's dispatched (runtime-selected) AVX-512 targets; the baseline cannot be turned off."""
    return [f for f in _umath().__cpu_dispatch__ if _is_avx512(f)]


def numpy_avx512_active() -> list[str]:
    """numpy's dispatched AVX-512 targets that are enabled in this process."""
    mu = _umath()
    return [f for f in numpy_avx512_dispatch() if mu.__cpu_features__.get(f)]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NPY_ENABLE_CPU_FEATURES"}
    env[ENV] = " ".join(filter(None, [os.environ.get(ENV, ""), *numpy_avx512_dispatch()]))
    return env


_CHILD = r"""
import importlib.util, json, sys, traceback
path, func = sys.argv[1], sys.argv[2]
sys.path.insert(0, str(__import__("pathlib").Path(path).parent))
from exp_dispatch import numpy_avx512_active
from divergent.engine.prepare import fused_exp_matches_numpy
out = {"exp_matches": fused_exp_matches_numpy(), "avx512_active": numpy_avx512_active(),
       "result": None, "failure": None}
if out["exp_matches"]:
    try:
        spec = importlib.util.spec_from_file_location("_engine_checks", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out["result"] = getattr(mod, func)()
    except BaseException:
        out["failure"] = traceback.format_exc()
print("RESULT " + json.dumps(out))
"""


def run_without_numpy_avx512(module_file: str, func: str, timeout: float = 300) -> dict:
    """Run `func()` of `module_file` in a child process with numpy's AVX-512 dispatch off.

    Returns {"exp_matches", "avx512_active", "result" (func's JSON-able return value), "failure"
    (a traceback or None)}; func runs only where the child's numba exp is numpy's."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(Path(module_file).resolve()), func],
                          capture_output=True, text=True, timeout=timeout, env=child_env())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"child process with {ENV}={child_env()[ENV]!r} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def check_child(out: dict) -> None:
    """Fail on a broken child; skip, saying why, where no process on this machine has matching exps."""
    from divergent.engine.prepare import fused_exp_matches_numpy

    assert out["avx512_active"] == [], f"{ENV} left numpy's AVX-512 targets on: {out['avx512_active']}"
    if not out["exp_matches"]:
        assert not fused_exp_matches_numpy(), "turning numpy's AVX-512 dispatch off broke a match present here"
        pytest.skip("numba's exp differs from numpy's here, also with numpy's AVX-512 dispatch off "
                    f"({ENV}={child_env()[ENV]!r}): no process on this machine can check the fused paths")
    assert out["failure"] is None, out["failure"]
