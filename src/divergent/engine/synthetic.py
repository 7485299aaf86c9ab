"""Synthetic store-like score files for benchmarks and property tests (never a demonstration).

Models share a per-example latent (correlated errors), a per-example difficulty and a few
per-example confuser classes; each model has its own signal strength (accuracy 60-90% at
paper scale) and raw logit scale, so fitted temperatures are not 1.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._files import atomic_write_text, commit_temp, reserve_temp, sha256_bytes


def _params_key(**kw) -> str:
    return sha256_bytes(json.dumps(kw, sort_keys=True).encode())[:12]


def make_scores(root: Path | str | None, n_models: int, n: int, n_classes: int, seed: int = 0,
                dtype: str = "float16", block: int = 4096, fit_rows: int = 400) -> dict:
    """Write m000.npy ... (N, C) logits, labels.npy and meta.json under a cache dir keyed by the
    parameters (reused when present); returns meta {dir, files, labels, temperatures, names}."""
    from ..metrics.calibration import fit_temperature

    key = _params_key(m=n_models, n=n, c=n_classes, seed=seed, dtype=dtype, v=3)
    root = Path(root or "/tmp") / f"divergent-synth-{n_models}x{n}x{n_classes}-{key}"
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta["dir"] = str(root)
        return meta
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    np.save(root / "labels.npy", y)
    difficulty = rng.normal(1.0, 0.6, n).astype(np.float32)
    confusers = rng.integers(0, n_classes, (n, 3))
    shared_conf = rng.normal(0.0, 1.0, (n, 3)).astype(np.float32)
    # one pool of normals; every block reads windows of it (generating 2 x N x C fresh normals
    # per model would take minutes on 2 cores)
    pool = rng.standard_normal(block * n_classes * 4, dtype=np.float32)
    lat_off = rng.integers(0, pool.size - block * n_classes, (n + block - 1) // block)
    names, temps, files = [], [], []
    rho, beta = 0.6, 1.5
    for mi in range(n_models):
        mrng = np.random.default_rng([seed, mi])
        mu = float(mrng.uniform(4.6, 10.0))
        scale = float(mrng.uniform(0.5, 1.6))  # raw logit scale (what T undoes)
        path = root / f"m{mi:03d}.npy"
        tmp = reserve_temp(path)  # a unique temporary: concurrent makers of the same files never collide
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, n_classes))
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            b = r1 - r0
            lo = int(lat_off[r0 // block])
            lat = pool[lo:lo + b * n_classes].reshape(b, n_classes)  # shared by every model
            mo = int(mrng.integers(0, pool.size - b * n_classes))
            z = pool[mo:mo + b * n_classes].reshape(b, n_classes).copy()
            z *= np.float32(np.sqrt(1 - rho**2))
            z += np.float32(rho) * lat
            rows = np.arange(b)
            own = mrng.normal(0.0, 1.0, (b, 3)).astype(np.float32)
            for j in range(3):
                z[rows, confusers[r0:r1, j]] += np.float32(1.2) * (shared_conf[r0:r1, j] + own[:, j]) + np.float32(1.5)
            z[rows, y[r0:r1]] += np.float32(mu) * difficulty[r0:r1]
            z *= np.float32(beta * scale)
            out[r0:r1] = z.astype(dtype)
        out.flush()
        del out
        commit_temp(tmp, path)
        x = np.load(path, mmap_mode="r")
        fit = fit_temperature(np.asarray(x[:fit_rows]), y[:fit_rows])
        temps.append(float(getattr(fit, "temperature", fit)))
        names.append(f"synth/model-{mi:03d}")
        files.append(path.name)
    meta = {"names": names, "files": files, "temperatures": temps, "n": n, "n_classes": n_classes,
            "seed": seed, "dtype": dtype}
    atomic_write_text(meta_path, json.dumps(meta))
    meta["dir"] = str(root)
    return meta


def load_scores(meta: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """Read-only memmaps of the models and the labels."""
    root = Path(meta["dir"])
    return [np.load(root / f, mmap_mode="r") for f in meta["files"]], np.load(root / "labels.npy")
