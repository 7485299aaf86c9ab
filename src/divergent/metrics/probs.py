"""The reference arithmetic that defines 'exact' for every metric in divergent.

probabilities = float64 softmax(float32(logits) / T), computed row-wise as
    z = float64(float32(logits)) / T;  m = max(z);  e = exp(z - m);  p = e / sum(e)
An ensemble is the mean of its members' probabilities, accumulated in float64 in
member order; argmax ties go to the lowest class index (numpy's argmax rule).
"""
from __future__ import annotations

import numpy as np

from ..errors import DivergentError


def as_logits32(x: np.ndarray) -> np.ndarray:
    """float32 view of stored logits (float16 or float32 on disk)."""
    return np.asarray(x, dtype=np.float32)


def log_probs_from_probs(p: np.ndarray) -> np.ndarray:
    """Stored probabilities enter the reference arithmetic as logits = float32(log(float32(p)))."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(p, dtype=np.float32).astype(np.float64)).astype(np.float32)


def softmax_stats(logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, m, s): scaled logits z (float64), row max m and row sum s of exp(z - m)."""
    if not temperature > 0:
        raise DivergentError(f"temperature must be > 0, got {temperature!r}")
    z = as_logits32(logits).astype(np.float64)
    z /= np.float64(temperature)
    m = z.max(axis=1)
    e = np.exp(z - m[:, None])
    s = e.sum(axis=1)
    return z, m, s


def reference_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 softmax(float32(logits) / T) — the one definition of a model's probabilities."""
    z = as_logits32(logits).astype(np.float64)
    z /= np.float64(temperature)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def reference_log_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 log-softmax matching :func:`reference_probs` (for NLL)."""
    z = as_logits32(logits).astype(np.float64)
    z /= np.float64(temperature)
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def argmax_lowest(scores: np.ndarray) -> np.ndarray:
    """Row argmax; ties go to the lowest class index."""
    return np.argmax(scores, axis=1)


def ensemble_probs(member_probs: list[np.ndarray]) -> np.ndarray:
    """Mean of member probabilities, accumulated in float64 in member order."""
    if not member_probs:
        raise DivergentError("an ensemble needs at least one member")
    acc = np.array(member_probs[0], dtype=np.float64, copy=True)
    for p in member_probs[1:]:
        acc += p
    acc /= len(member_probs)
    return acc
