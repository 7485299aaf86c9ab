"""Exact per-row and per-element probabilities, bitwise equal to metrics.probs.reference_probs.

Every function here goes through the same numpy operations as the reference
(float32 cast, float64 division by T, subtraction of the row max, np.exp, pairwise row sum,
division), applied element-wise to contiguous arrays, so any single probability can be
recomputed bitwise from (logits, T, row max m, row sum s).
"""
from __future__ import annotations

import numpy as np

from ..errors import DivergentError
from ..metrics.probs import as_logits32, log_probs_from_probs

KINDS = ("logits", "probs")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise DivergentError(f"unknown score kind {kind!r}", f"use one of {', '.join(KINDS)}")
    return kind


def scaled_logits(x: np.ndarray, kind: str, temperature: float) -> np.ndarray:
    """z = float64(float32(logits)) / T as a fresh float64 array (probs enter as log(float32(p)))."""
    if kind == "probs":
        x = log_probs_from_probs(x)
    z = as_logits32(x).astype(np.float64)
    z /= np.float64(temperature)
    return z


def block_exp(x: np.ndarray, kind: str, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(e, m, s) of a block of rows: e = exp(z - m) as the reference computes it before dividing by
    the row sum s; m the row max of z."""
    z = scaled_logits(np.asarray(x), kind, temperature)
    m = z.max(axis=1)
    z -= m[:, None]
    np.exp(z, out=z)
    s = z.sum(axis=1)
    return z, m, s


def block_probs(x: np.ndarray, kind: str, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, m, s) of a block of rows: p bitwise equal to reference_probs; m row max of z; s row sum."""
    z, m, s = block_exp(x, kind, temperature)
    z /= s[:, None]
    return z, m, s


def gather_probs(x_gathered: np.ndarray, kind: str, temperature: float, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Exact p[i, c] for gathered raw scores x_gathered (R, J) of rows with stats m, s (R,)."""
    z = scaled_logits(np.ascontiguousarray(x_gathered), kind, temperature)
    z -= np.asarray(m, dtype=np.float64)[:, None]
    np.exp(z, out=z)
    z /= np.asarray(s, dtype=np.float64)[:, None]
    return z
