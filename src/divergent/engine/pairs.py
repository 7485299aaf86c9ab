"""All-pairs engine: exact per-example outcome codes of every model pair in one pass each.

Per pair (a, b) and example i the code is bit0 = a correct, bit1 = b correct, bit2 = the
ensemble (mean of the two calibrated probability vectors) correct, bit3 = pred_a == pred_b
(the layout of divergent.metrics.pairs). Three tiers, each certified (docs/engine.md):
1. top-k summaries only (numba kernel, no I/O);
2. exact probabilities of the candidate classes (union of both top-k) gathered from the stored
   scores, certified when the best candidate sum exceeds fl(thr_a + thr_b);
3. full rows recomputed by the reference arithmetic.
"""
from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import DivergentError
from ..metrics.probs import argmax_lowest, ensemble_probs
from . import kernels
from .prepare import PreparedModel, fused_exp_matches_numpy


@dataclass
class PairResult:
    a: int
    b: int
    codes: np.ndarray  # (N,) uint8
    n_gather: int  # examples resolved by exact candidate sums (tier 2)
    n_fallback: int  # examples that needed full rows (tier 3)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=16).astype(np.int64)


def _check_pair(pa: PreparedModel, pb: PreparedModel) -> None:
    if pa.n != pb.n or pa.source.n_classes != pb.source.n_classes:
        raise DivergentError(
            f"models {pa.name!r} and {pb.name!r} have different shapes "
            f"({pa.n}x{pa.source.n_classes} vs {pb.n}x{pb.source.n_classes})",
            "compare models scored on the same split",
        )
    if pa.labels is not pb.labels and not np.array_equal(pa.labels, pb.labels):
        raise DivergentError(f"models {pa.name!r} and {pb.name!r} were prepared with different labels")


def ensemble_argmax_rows(pa: PreparedModel, pb: PreparedModel, rows: np.ndarray) -> np.ndarray:
    """Reference ensemble argmax on full rows (tier 3)."""
    return argmax_lowest(ensemble_probs([pa.full_probs(rows), pb.full_probs(rows)]))


def _numba_scores(pm: PreparedModel):
    """(float32 scores, float16 bits, is_half) for the tier-2 kernel (one of the arrays a dummy), or
    None where the numpy path must be used (probabilities, other dtypes, non-contiguous arrays, or
    a machine where numba's exp is not numpy's)."""
    x = pm.source.scores
    if pm.source.kind != "logits" or getattr(x, "ndim", 0) != 2 or not fused_exp_matches_numpy():
        return None
    x = np.asarray(x)
    if not x.flags.c_contiguous:
        return None
    if x.dtype == np.float16:
        return _DUMMY_F, x.view(np.uint16), True
    if x.dtype == np.float32:
        return x, _DUMMY_H, False
    return None


_DUMMY_F = np.zeros((1, 1), np.float32)
_DUMMY_H = np.zeros((1, 1), np.uint16)


def pair_codes(pa: PreparedModel, pb: PreparedModel, check: bool = True) -> tuple[np.ndarray, int, int]:
    """(codes, n_gather, n_fallback) of the pair; codes bitwise equal to the reference decisions."""
    if check:
        _check_pair(pa, pb)
    kernels.warmup()
    n = pa.n
    codes = np.empty(n, dtype=np.uint8)
    pending = np.empty(n, dtype=np.uint8)
    npend = kernels.pair_tier1(pa.pred, pa.topi, pa.topp, pa.thr, pb.pred, pb.topi, pb.topp, pb.thr,
                               pa.labels, codes, pending)
    if npend == 0:
        return codes, 0, 0
    rows = np.flatnonzero(pending)
    y = pa.labels[rows]
    xa, xb = _numba_scores(pa), _numba_scores(pb)
    if xa is not None and xb is not None:
        # tier 2 in numba: only the missing one-sided probabilities are recomputed
        ens = np.empty(rows.size, dtype=np.int64)
        okb = np.empty(rows.size, dtype=np.uint8)
        kernels.pair_tier2(rows, *xa, np.float64(pa.source.temperature), pa.m, pa.s, pa.topi, pa.topp, pa.thr,
                           *xb, np.float64(pb.source.temperature), pb.m, pb.s, pb.topi, pb.topp, pb.thr,
                           kernels.HALF_TABLE, ens, okb)
        ok = okb.astype(bool)
    else:
        # tier 2 in numpy: exact sums on the union of both top-k sets
        cand = np.concatenate([pa.topi[rows], pb.topi[rows]], axis=1).astype(np.int64)
        sums = pa.gather(rows, cand) + pb.gather(rows, cand)
        best = sums.max(axis=1)
        ens = np.where(sums == best[:, None], cand, np.iinfo(np.int64).max).min(axis=1)
        ok = best > pa.thr[rows] + pb.thr[rows]
    rows3 = rows[~ok]
    if rows3.size:
        ens = ens.copy()
        ens[~ok] = ensemble_argmax_rows(pa, pb, rows3)
    codes[rows] |= (ens == y).astype(np.uint8) * np.uint8(4)
    return codes, int(ok.sum()), int(rows3.size)


def all_pair_codes(prepared: list[PreparedModel], pairs: Iterable[tuple[int, int]] | None = None,
                   progress: bool = True, workers: int = 2, window: int = 16) -> Iterator[PairResult]:
    """PairResult for each pair (a < b over all pairs by default), in order, `workers` at a time."""
    from tqdm.auto import tqdm

    if pairs is None:
        m = len(prepared)
        pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
    pairs = list(pairs)
    for i in range(1, len(prepared)):
        _check_pair(prepared[0], prepared[i])

    def one(ab):
        a, b = ab
        codes, ng, nf = pair_codes(prepared[a], prepared[b], check=False)
        return PairResult(a, b, codes, ng, nf)

    kernels.warmup()
    bar = tqdm(total=len(pairs), desc="pairs", disable=not (progress and sys.stderr.isatty()), unit="pair")
    try:
        if workers <= 1:
            for ab in pairs:
                yield one(ab)
                bar.update(1)
            return
        with ThreadPoolExecutor(max_workers=workers) as ex:
            queue: deque = deque()
            it = iter(pairs)
            for ab in it:
                queue.append(ex.submit(one, ab))
                if len(queue) >= window:
                    break
            while queue:
                res = queue.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append(ex.submit(one, nxt))
                bar.update(1)
                yield res
    finally:
        bar.close()
