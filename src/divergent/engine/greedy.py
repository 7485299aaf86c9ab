"""Greedy forward ensemble selection (Caruana et al. 2004), exact by the reference arithmetic.

The running ensemble is held as full float64 rows S = p_1 + ... + p_n (summed in member order,
as metrics.probs.ensemble_probs does); a candidate j is scored by the accuracy of
(S + p_j) / (n + 1) on the fit split, certified per example from j's top-k summaries
(kernels.greedy_tier1) and resolved on full rows where the certificate is silent.
Ties in accuracy go to the lower fit-split NLL of the resulting ensemble, then to the
lexicographically smaller model name, so the path does not depend on the order of the pool.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import DivergentError
from . import kernels
from .prepare import DEFAULT_BLOCK, ModelSource, PreparedModel


@dataclass
class GreedyStep:
    size: int  # members after this step (1 = the base alone)
    member: int  # index of the member added at this step
    name: str
    fit_correct: int
    fit_acc: float
    fit_nll: float
    eval_acc: float | None
    n_fallback: int  # candidate examples (summed over candidates) resolved on full rows


def _accumulate(S: np.ndarray, src: ModelSource, block: int, first: bool) -> None:
    for r0, r1, p, _, _ in src.blocks(block):
        if first:
            S[r0:r1] = p
        else:
            S[r0:r1] += p


def _ens_accuracy(S: np.ndarray, labels: np.ndarray, size: int, block: int) -> float:
    hits = 0
    for r0 in range(0, S.shape[0], block):
        q = S[r0:r0 + block] / np.float64(size)
        hits += int(np.sum(np.argmax(q, axis=1) == labels[r0:r0 + block]))
    return hits / max(1, S.shape[0])


def score_candidate(S: np.ndarray, us: np.ndarray, cs: np.ndarray, size: int, cand: PreparedModel) -> tuple[int, float, int]:
    """(n_correct, nll, n_fallback) of the ensemble (S + p_cand) / size on the fit split."""
    n = cand.n
    y = cand.labels
    correct = np.empty(n, dtype=np.uint8)
    qy = np.empty(n, dtype=np.float64)
    pending = np.empty(n, dtype=np.uint8)
    nn = np.float64(size)
    npend = kernels.greedy_tier1(S, y, us, cs, nn, cand.plabel, cand.unot, cand.topi, cand.topp,
                                 correct, qy, pending)
    if npend:
        rows = np.flatnonzero(pending)
        q = (S[rows] + cand.full_probs(rows)) / nn
        correct[rows] = np.argmax(q, axis=1) == y[rows]
    with np.errstate(divide="ignore"):
        nll = float(-np.mean(np.log(qy)))
    return int(correct.sum()), nll, int(npend)


def greedy_select(fit: list[PreparedModel], base: int, pool: list[int] | None = None, max_size: int = 10,
                  replacement: bool = False, eval_sources: list[ModelSource] | None = None,
                  eval_labels: np.ndarray | None = None, workers: int = 2, block: int = DEFAULT_BLOCK,
                  progress: bool = False) -> list[GreedyStep]:
    """Forward selection from `base` over `pool` (indices into `fit`); trajectory of GreedyStep.

    fit[i] are the prepared models on the fit split; eval_sources[i] (optional) the same models
    on the evaluated split. With replacement a model (the base included if it is in the pool)
    may be added again; without, each pool model at most once.
    """
    from tqdm.auto import tqdm

    if max_size < 1:
        raise DivergentError(f"max_size must be >= 1, got {max_size}")
    m = len(fit)
    if not 0 <= base < m:
        raise DivergentError(f"base index {base} out of range for {m} models")
    pool = [i for i in range(m) if i != base] if pool is None else list(dict.fromkeys(pool))
    names = [f.name for f in fit]
    if len(set(names)) != len(names):
        raise DivergentError("model names must be unique for tie-breaking", "give every model a distinct name")
    b = fit[base]
    S = np.empty((b.n, b.source.n_classes), dtype=np.float64)
    _accumulate(S, b.source, block, first=True)
    us = np.empty(b.n, dtype=np.float64)
    cs = np.empty(b.n, dtype=np.int64)
    kernels.max_excluding_label(S, b.labels, us, cs)
    Se = None
    if eval_sources is not None:
        ye = np.asarray(eval_labels, dtype=np.int64)
        Se = np.empty((eval_sources[base].n, eval_sources[base].n_classes), dtype=np.float64)
        _accumulate(Se, eval_sources[base], block, first=True)
    steps = [GreedyStep(1, base, names[base], int(b.correct.sum()), b.accuracy, b.nll(),
                        _ens_accuracy(Se, ye, 1, block) if Se is not None else None, 0)]
    chosen = {base}
    kernels.warmup()
    bar = tqdm(total=max_size - 1, desc="greedy", disable=not (progress and sys.stderr.isatty()), unit="step")
    ex = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for size in range(2, max_size + 1):
            cands = pool if replacement else [j for j in pool if j not in chosen]
            if not cands:
                break
            if ex is None:
                scores = [score_candidate(S, us, cs, size, fit[j]) for j in cands]
            else:
                scores = list(ex.map(lambda j: score_candidate(S, us, cs, size, fit[j]), cands))
            order = sorted(range(len(cands)), key=lambda t: (-scores[t][0], scores[t][1], names[cands[t]]))
            t = order[0]
            j = cands[t]
            ncor, nll, _ = scores[t]
            _accumulate(S, fit[j].source, block, first=False)
            kernels.max_excluding_label(S, b.labels, us, cs)
            eacc = None
            if Se is not None:
                _accumulate(Se, eval_sources[j], block, first=False)
                eacc = _ens_accuracy(Se, ye, size, block)
            steps.append(GreedyStep(size, j, names[j], ncor, ncor / b.n, nll, eacc,
                                    sum(s[2] for s in scores)))
            chosen.add(j)
            bar.update(1)
    finally:
        if ex is not None:
            ex.shutdown()
        bar.close()
    return steps


def best_size(steps: list[GreedyStep]) -> int:
    """Size with the highest fit-split accuracy (ties: the smallest ensemble)."""
    best = max(s.fit_correct for s in steps)
    return min(s.size for s in steps if s.fit_correct == best)
