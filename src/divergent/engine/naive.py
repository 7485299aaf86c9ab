"""Naive implementations by the reference arithmetic (full probability matrices): the ground truth
that tests and benchmarks compare the engines against, plus the float32 baseline of the bench."""
from __future__ import annotations

import numpy as np

from ..metrics.probs import argmax_lowest, ensemble_probs, reference_probs


def ref_probs(scores, kind: str = "logits", temperature: float = 1.0) -> np.ndarray:
    if kind == "probs":
        from ..metrics.probs import log_probs_from_probs

        return reference_probs(log_probs_from_probs(np.asarray(scores)), temperature)
    return reference_probs(np.asarray(scores), temperature)


def pair_codes_reference(sa, sb, labels, ta=1.0, tb=1.0, kind_a="logits", kind_b="logits") -> np.ndarray:
    """Codes of a pair by the reference arithmetic in float64."""
    pa, pb = ref_probs(sa, kind_a, ta), ref_probs(sb, kind_b, tb)
    y = np.asarray(labels)
    pra, prb = argmax_lowest(pa), argmax_lowest(pb)
    ens = argmax_lowest(ensemble_probs([pa, pb]))
    return ((pra == y) * 1 + (prb == y) * 2 + (ens == y) * 4 + (pra == prb) * 8).astype(np.uint8)


def pair_codes_float32(sa, sb, labels, ta=1.0, tb=1.0) -> np.ndarray:
    """The usual float32 pipeline (softmax, average, argmax) — fast-ish but not the reference."""
    def sm(x, t):
        z = np.asarray(x, dtype=np.float32) / np.float32(t)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    pa, pb = sm(sa, ta), sm(sb, tb)
    y = np.asarray(labels)
    pra, prb = pa.argmax(1), pb.argmax(1)
    ens = ((pa + pb) / np.float32(2)).argmax(1)
    return ((pra == y) * 1 + (prb == y) * 2 + (ens == y) * 4 + (pra == prb) * 8).astype(np.uint8)


def greedy_reference(probs_fit: list[np.ndarray], labels_fit, base: int, pool=None, max_size: int = 10,
                     replacement: bool = False, names=None, probs_eval=None, labels_eval=None):
    """Naive greedy selection on full probability matrices; list of (member, fit_acc, fit_nll, eval_acc)."""
    m = len(probs_fit)
    names = names or [str(i) for i in range(m)]
    pool = [i for i in range(m) if i != base] if pool is None else list(pool)
    y = np.asarray(labels_fit)
    members = [base]

    def evaluate(mem, probs, yy):
        q = ensemble_probs([probs[i] for i in mem])
        acc = float(np.mean(argmax_lowest(q) == yy))
        with np.errstate(divide="ignore"):
            nll = float(-np.mean(np.log(q[np.arange(len(yy)), yy])))
        return acc, nll

    def row(mem):
        acc, nll = evaluate(mem, probs_fit, y)
        eacc = evaluate(mem, probs_eval, np.asarray(labels_eval))[0] if probs_eval is not None else None
        return (mem[-1], acc, nll, eacc)

    out = [row(members)]
    for _ in range(2, max_size + 1):
        cands = pool if replacement else [j for j in pool if j not in members]
        if not cands:
            break
        scored = []
        for j in cands:
            acc, nll = evaluate(members + [j], probs_fit, y)
            scored.append((-acc, nll, names[j], j))
        j = min(scored)[3]
        members.append(j)
        out.append(row(members))
    return out


__all__ = ["ref_probs", "pair_codes_reference", "pair_codes_float32", "greedy_reference"]
