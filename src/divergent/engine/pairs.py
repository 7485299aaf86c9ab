"""All-pairs engine: exact per-example outcome codes of every model pair.

Per pair (a, b) and example i the code is bit0 = a correct, bit1 = b correct, bit2 = the
ensemble (mean of the two calibrated probability vectors) correct, bit3 = pred_a == pred_b
(the layout of divergent.metrics.pairs). Three tiers, each certified (docs/engine.md):
1. top-k summaries only (numba kernel, no I/O);
2. exact probabilities of the candidate classes (union of both top-k) gathered from the stored
   scores, certified when the best candidate sum exceeds fl(thr_a + thr_b);
3. full rows recomputed by the reference arithmetic.
pair_codes does one pair; all_pair_codes runs every pair over a block of examples before the next
block (the blocks on threads), with every exp of tiers 2 and 3 computed by numpy.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..conventions import threads
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
    code_counts: np.ndarray | None = field(default=None, repr=False)  # (16,) when the engine counted them

    @property
    def counts(self) -> np.ndarray:
        if self.code_counts is not None:
            return self.code_counts
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


def _tier2_numpy(pa: PreparedModel, pb: PreparedModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tier 2 in numpy: (ens, certified) from exact sums on the union of both top-k sets."""
    cand = np.concatenate([pa.topi[rows], pb.topi[rows]], axis=1).astype(np.int64)
    sums = pa.gather(rows, cand) + pb.gather(rows, cand)
    best = sums.max(axis=1)
    ens = np.where(sums == best[:, None], cand, np.iinfo(np.int64).max).min(axis=1)
    return ens, best > pa.thr[rows] + pb.thr[rows]


def _set_ensemble_bit(codes: np.ndarray, rows: np.ndarray, ens: np.ndarray, labels: np.ndarray) -> None:
    """Bit 2 of codes[rows] := the ensemble prediction `ens` is the label (kernel flags cleared)."""
    codes[rows] = (codes[rows] & np.uint8(0x0B)) | ((ens == labels[rows]).astype(np.uint8) * np.uint8(4))


def _finish_rows(pa: PreparedModel, pb: PreparedModel, codes: np.ndarray, rows: np.ndarray, ens: np.ndarray,
                 ok: np.ndarray) -> int:
    """Tier 3 and the ensemble bit: the rows tier 2 could not certify (`~ok`) get the ensemble's
    argmax from full rows; every row of `rows` then gets its ensemble-correct bit. Returns how many
    rows needed full rows."""
    rows3 = rows[~ok]
    if rows3.size:
        ens = ens.copy()
        ens[~ok] = ensemble_argmax_rows(pa, pb, rows3)
    _set_ensemble_bit(codes, rows, ens, pa.labels)
    return int(rows3.size)


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
    xa, xb = _numba_scores(pa), _numba_scores(pb)
    if xa is not None and xb is not None:
        # tier 2 in numba: only the missing one-sided probabilities are recomputed
        ens = np.empty(rows.size, dtype=np.int64)
        okb = np.empty(rows.size, dtype=np.uint8)
        kernels.pair_tier2(rows, *xa, np.float64(pa.source.temperature), pa.m, pa.s, pa.topi, pa.topp, pa.thr,
                           *xb, np.float64(pb.source.temperature), pb.m, pb.s, pb.topi, pb.topp, pb.thr, ens, okb)
        ok = okb.astype(bool)
    else:
        ens, ok = _tier2_numpy(pa, pb, rows)
    n3 = _finish_rows(pa, pb, codes, rows, ens, ok)
    return codes, int(ok.sum()), n3


def _resolve_open(pa: PreparedModel, pb: PreparedModel, codes: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Finish the examples the all-pairs kernel left flagged (NEEDS_TIER2) in `codes`, in place: tier 2
    in numpy, then full rows. Returns (tier-2 certified, full rows, code counts of those examples)."""
    rows = np.flatnonzero(codes & kernels.NEEDS_TIER2)
    ens, ok = _tier2_numpy(pa, pb, rows)
    n3 = _finish_rows(pa, pb, codes, rows, ens, ok)
    return int(ok.sum()), n3, np.bincount(codes[rows], minlength=16)


#: examples per task of the all-pairs pass: every pair runs over these examples before the next
#: ones, so what they read of every model (summaries, score rows) stays in cache across pairs
ROWS_PER_TASK = 128
#: at most this many bytes of codes are held at once (pairs are processed in groups that fit)
GROUP_BYTES = 256 << 20
#: arguments handed to numpy's exp at a time: of open examples (2k at most each), and of full rows
#: (2C each); 4 MB and 2 MB of float64, per thread
ARGS_CAP = 1 << 19
FULL_ARGS_CAP = 1 << 18


def _kernel_scores(pm: PreparedModel) -> tuple | None:
    """(float32 scores or None, float16 bits or None) where the all-pairs kernels can read a model's
    logits (C-contiguous float16 or float32), else None (probabilities enter through np.log, which
    only numpy may compute; those examples go through numpy tier 2)."""
    x = pm.source.scores
    if pm.source.kind != "logits" or getattr(x, "ndim", 0) != 2:
        return None
    x = np.asarray(x)
    if not x.flags.c_contiguous:
        return None
    if x.dtype == np.float16:
        return None, x.view(np.uint16)
    if x.dtype == np.float32:
        return x, None
    return None


class _Models:
    """The all-pairs kernels' view of the models: the address table of every model's summaries and
    (kernel-readable) scores, and per-thread scratch arrays."""

    def __init__(self, prepared: list[PreparedModel]):
        self.n, self.c, self.k = prepared[0].n, prepared[0].source.n_classes, prepared[0].k
        arrays = []
        halfs, readable = np.zeros(len(prepared), bool), np.zeros(len(prepared), bool)
        for i, pm in enumerate(prepared):
            if pm.topi.shape != (self.n, self.k):
                raise DivergentError(
                    f"models {prepared[0].name!r} and {pm.name!r} were prepared with different k "
                    f"({self.k} and {pm.topi.shape[1]})", "prepare every model with the same k")
            arrs = [np.ascontiguousarray(pm.pred, np.int32), np.ascontiguousarray(pm.topi, np.int32),
                    np.ascontiguousarray(pm.topp, np.float64), np.ascontiguousarray(pm.thr, np.float64),
                    np.ascontiguousarray(pm.m, np.float64), np.ascontiguousarray(pm.s, np.float64)]
            x = _kernel_scores(pm)
            readable[i] = x is not None
            halfs[i] = x is not None and x[1] is not None
            arrays.append(tuple(arrs) + (x if x is not None else (None, None)))
        self.keep = arrays  # the kernels read these through their addresses
        self.addr = kernels.model_addresses(arrays)
        self.halfs, self.readable = halfs, readable
        self.temps = np.array([pm.source.temperature for pm in prepared], dtype=np.float64)
        self.labels = np.ascontiguousarray(prepared[0].labels, np.int64)
        self._local = threading.local()

    def _scratch(self, rows: int):
        sc = getattr(self._local, "scratch", None)
        if sc is None or sc["rows"] < rows:
            m, k, c = len(self.addr), self.k, self.c
            entries = max(1, ARGS_CAP // (2 * k))
            full = max(1, FULL_ARGS_CAP // (2 * c))
            sc = {"rows": rows, "full_chunk": full,
                  "stage": (np.empty((rows, m), np.int32), np.empty((rows, m, k), np.int32), np.empty((rows, m, k)),
                            np.empty((rows, m)), np.empty((rows, m)), np.empty((rows, m))),
                  "match": (np.empty(k, np.int64), np.empty(k, np.bool_), np.empty(k), np.empty(k)),
                  "raw": np.empty((kernels.ARGS_BATCH, 2 * k)), "local": np.empty((rows, 0), np.uint8),
                  "ent": np.empty((entries, 3), np.int64), "args": np.empty(entries * 2 * k),
                  "e": np.empty(entries * 2 * k), "full": np.empty((entries, 2), np.int64),
                  "fargs": np.empty(full * 2 * c), "fe": np.empty(full * 2 * c)}
            self._local.scratch = sc
        return sc

    def run(self, pair_a: np.ndarray, pair_b: np.ndarray, r0: int, r1: int, codes: np.ndarray) -> np.ndarray:
        """Codes of the pairs on examples r0..r1-1 into codes[:, r0:r1]; returns (P, 19): the code
        counts of the examples decided here and, in columns 16..18, how many per pair tier 2 and full
        rows decided, and how many were left (NEEDS_TIER2) to numpy."""
        n, c, k, addr = self.n, self.c, self.k, self.addr
        sc = self._scratch(r1 - r0)
        pred, topi, topp, thr, ms, ss = sc["stage"]
        pos_ab, in_a, pa_miss, pb_miss = sc["match"]
        ent, args, e, full, fargs, fe = sc["ent"], sc["args"], sc["e"], sc["full"], sc["fargs"], sc["fe"]
        if sc["local"].shape[1] < pair_a.size:
            sc["local"] = np.empty((sc["rows"], pair_a.size), np.uint8)
        local = sc["local"][:r1 - r0, :pair_a.size]
        out = np.zeros((pair_a.size, 19), dtype=np.int64)
        counts, n_tier2, n_full, n_open = out[:, :16], out[:, 16], out[:, 17], out[:, 18]
        kernels.stage_rows(r0, r1, n, k, addr, pred, topi, topp, thr, ms, ss)
        pos, end = 0, (r1 - r0) * pair_a.size
        while pos < end:
            pos, ne = kernels.pairs_tier1(r0, r1, pos, pair_a, pair_b, self.labels, k, self.readable, pred, topi,
                                          topp, thr, pos_ab, in_a, local, ent)
            if not ne:
                continue
            na = kernels.pairs_args(ne, ent, r0, pair_a, pair_b, n, c, k, addr, self.halfs, self.temps, topi, ms,
                                    pos_ab, in_a, sc["raw"], args)
            np.exp(args[:na], out=e[:na])  # numpy's exp: the reference's values on any machine
            nf = kernels.pairs_tier2(ne, ent, e, r0, pair_a, pair_b, self.labels, k, topi, topp, thr, ss, pos_ab,
                                     in_a, pa_miss, pb_miss, local, n_tier2, full)
            for f0 in range(0, nf, sc["full_chunk"]):
                part = full[f0:min(nf, f0 + sc["full_chunk"])]
                kernels.pairs_full_args(len(part), part, r0, pair_a, pair_b, n, c, addr, self.halfs, self.temps,
                                        ms, fargs)
                np.exp(fargs[:2 * c * len(part)], out=fe[:2 * c * len(part)])
                kernels.pairs_full(len(part), part, fe, r0, pair_a, pair_b, self.labels, c, ss, local, n_full)
        kernels.pairs_store(local, r0, codes, counts, n_open)
        return out


def all_pair_codes(prepared: list[PreparedModel], pairs: Iterable[tuple[int, int]] | None = None,
                   progress: bool = True, workers: int | None = None) -> Iterator[PairResult]:
    """PairResult for each pair (a < b over all pairs by default), in order.

    Pairs are processed in groups (at most GROUP_BYTES of codes); within a group every pair runs
    over a block of ROWS_PER_TASK examples before the next block, the blocks on `workers` threads
    (default: divergent.conventions.threads()). Each example of each pair is decided alone, so the
    results do not depend on `workers` or on the grouping."""
    from tqdm.auto import tqdm

    if pairs is None:
        m = len(prepared)
        pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
    pairs = [(int(a), int(b)) for a, b in pairs]
    bad = [ab for ab in pairs if not (0 <= ab[0] < len(prepared) and 0 <= ab[1] < len(prepared))]
    if bad:
        raise DivergentError(f"pair {bad[0]} names a model outside the {len(prepared)} prepared ones",
                             "give pairs as (a, b) indices into the list of prepared models")
    for i in range(1, len(prepared)):
        _check_pair(prepared[0], prepared[i])
    if not pairs:
        return
    workers = threads() if workers is None else max(1, int(workers))
    kernels.warmup()
    models = _Models(prepared)
    n = models.n
    group = max(1, GROUP_BYTES // max(1, n))
    bar = tqdm(total=len(pairs), desc="pairs", disable=not (progress and sys.stderr.isatty()), unit="pair")
    ex = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for g0 in range(0, len(pairs), group):
            gp = pairs[g0:g0 + group]
            pa_idx = np.array([a for a, _ in gp], dtype=np.int64)
            pb_idx = np.array([b for _, b in gp], dtype=np.int64)
            codes = np.empty((len(gp), n), dtype=np.uint8)
            tally = np.zeros((len(gp), 19), dtype=np.int64)  # code counts, tier 2, full rows, left open
            lock = threading.Lock()

            def rows_task(r0, pa_idx=pa_idx, pb_idx=pb_idx, codes=codes, tally=tally, lock=lock):
                t = models.run(pa_idx, pb_idx, r0, min(n, r0 + ROWS_PER_TASK), codes)
                with lock:  # integer counts: the sum does not depend on the order
                    tally += t

            _map(ex, rows_task, range(0, n, ROWS_PER_TASK))
            open_pairs = [p for p in range(len(gp)) if tally[p, 18]]
            fin = dict(zip(open_pairs, _map(ex, lambda p: _resolve_open(prepared[gp[p][0]], prepared[gp[p][1]], codes[p]),
                                            open_pairs)))
            for p, (a, b) in enumerate(gp):
                n2, n3, extra = fin.get(p, (0, 0, 0))
                yield PairResult(a, b, codes[p].copy(), int(tally[p, 16]) + n2, int(tally[p, 17]) + n3,
                                 tally[p, :16] + extra)
                bar.update(1)
    finally:
        if ex is not None:
            ex.shutdown()
        bar.close()


def _map(ex: ThreadPoolExecutor | None, fn, items) -> list:
    """fn over items on the executor (in the calling thread without one); results in order."""
    if ex is None:
        return [fn(x) for x in items]
    return list(ex.map(fn, items))
