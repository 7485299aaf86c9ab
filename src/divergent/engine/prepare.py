"""One streaming pass per model: exact per-example summaries that the pair and greedy engines use.

From the full float64 reference probabilities of each row block (bitwise those of
metrics.probs.reference_probs) we keep pred, p[label], the top-k class ids and probs, the
largest prob outside the top-k, the largest prob of a wrong class, and the row max m / row
sum s of the softmax so that any single p[c] can be recomputed bitwise from the stored scores.
The full probability matrix is never kept.
"""
from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..conventions import threads
from ..errors import DivergentError
from . import kernels
from ..metrics.probs import as_logits32, log_probs_from_probs
from .rows import block_exp, block_probs, check_kind, gather_probs

DEFAULT_K = 6
DEFAULT_BLOCK = 512


@dataclass
class ModelSource:
    """Stored scores of one model on one split: logits (float16/32) or probabilities, and T."""

    scores: np.ndarray  # (N, C), may be a read-only np.memmap
    temperature: float = 1.0
    kind: str = "logits"
    name: str = ""

    def __post_init__(self):
        check_kind(self.kind)
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise DivergentError(
                f"temperature of {self.name or 'model'} must be a positive number, got {self.temperature!r}",
                "run `divergent calibrate STORE` or pass temperature=1.0 for uncalibrated models",
            )
        if getattr(self.scores, "ndim", 0) != 2:
            raise DivergentError(
                f"scores of {self.name or 'model'} must be an (N, C) array, got shape {getattr(self.scores, 'shape', None)}"
            )

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.scores.shape[1])

    def probs(self, rows=None) -> np.ndarray:
        """Exact reference probabilities of the given rows (a slice or index array)."""
        x = self.scores if rows is None else self.scores[rows]
        return block_probs(x, self.kind, self.temperature)[0]

    def blocks(self, block: int = DEFAULT_BLOCK):
        """Yield (start, stop, p, m, s) over row blocks."""
        for r0 in range(0, self.n, block):
            r1 = min(self.n, r0 + block)
            p, m, s = block_probs(self.scores[r0:r1], self.kind, self.temperature)
            yield r0, r1, p, m, s


@dataclass
class PreparedModel:
    """Exact per-example summaries of one model (see module docstring)."""

    source: ModelSource
    labels: np.ndarray  # (N,) int64
    k: int
    pred: np.ndarray  # (N,) int32
    topi: np.ndarray  # (N, k) int32, by prob desc then class id asc; topi[:, 0] == pred
    topp: np.ndarray  # (N, k) float64
    thr: np.ndarray  # (N,) largest prob outside the top-k (0 if k == C)
    plabel: np.ndarray  # (N,) p[label]
    unot: np.ndarray  # (N,) max over c != label of p[c]
    m: np.ndarray  # (N,) row max of z = float64(float32(l)) / T
    s: np.ndarray  # (N,) row sum of exp(z - m)
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.labels

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    def nll(self) -> float:
        with np.errstate(divide="ignore"):
            return float(-np.mean(np.log(self.plabel)))

    def gather(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact p[rows[i], cols[i, j]] (bitwise the full-row values), reading only those scores."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        x = self.source.scores[rows[:, None], cols]
        return gather_probs(x, self.source.kind, self.source.temperature, self.m[rows], self.s[rows])

    def full_probs(self, rows) -> np.ndarray:
        return self.source.probs(rows)


def _check_labels(labels, n: int, c: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise DivergentError(f"labels have shape {y.shape}, scores have {n} rows", "pass one label per example")
    if not np.issubdtype(y.dtype, np.integer):
        raise DivergentError(f"labels must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= c):
        raise DivergentError(f"labels must lie in [0, {c}), found {y.min()}..{y.max()}", "check the split's labels")
    return y


def _block32(x: np.ndarray, kind: str) -> np.ndarray:
    """float32 scores the reference arithmetic starts from (probs enter as log(float32(p)))."""
    if kind == "probs":
        return np.ascontiguousarray(as_logits32(log_probs_from_probs(np.asarray(x))))
    return np.ascontiguousarray(as_logits32(np.asarray(x)))


def _summaries_numpy(x, kind, T, y, k, out):
    """The numpy pass on a block: e, m, s by the reference's own numpy operations, then the top-k
    of p = e / s selected on e (see kernels.topk_from_exp)."""
    e, mb, sb = block_exp(x, kind, T)
    topi, topp, thr, plabel, unot, m, s = out
    kernels.topk_from_exp(e, sb, y, k, topi, topp, thr, plabel, unot)
    m[:] = mb
    s[:] = sb
    return int(np.sum(~(np.isfinite(mb) & np.isfinite(sb) & (sb > 0))))


def _summaries_fused(x, kind, T, y, k, out):
    topi, topp, thr, plabel, unot, m, s = out
    x = np.asarray(x)
    if kind == "logits" and x.dtype == np.float16 and x.flags.c_contiguous:
        # read through the table of every float16 value / T; no float32 copy of the block
        return kernels.fused_topk_rows(_DUMMY_F, x.view(np.uint16), True, kernels.scaled_half_table(T), np.float64(T),
                                       y, k, topi, topp, thr, plabel, unot, m, s)
    return kernels.fused_topk_rows(_block32(x, kind), _DUMMY_H, False, kernels.HALF_TABLE, np.float64(T), y, k,
                                   topi, topp, thr, plabel, unot, m, s)


_DUMMY_F = np.zeros((1, 1), np.float32)
_DUMMY_H = np.zeros((1, 1), np.uint16)


_EXP_CHECK: bool | None = None


def fused_exp_matches_numpy() -> bool:
    """One-time check that numba's exp is bitwise numpy's on 1M arguments spanning [-750, 0]
    (true where both call the same libm; false e.g. where numpy uses its own AVX-512 exp)."""
    global _EXP_CHECK
    if _EXP_CHECK is None:
        rng = np.random.default_rng(12345)
        z = np.concatenate([-rng.random(500_000) * 750.0, -rng.exponential(2.0, 500_000), [0.0, -0.0, -1e-300]])
        x32 = z.reshape(1, -1).astype(np.float32)
        e = np.empty(z.size)
        kernels.exp_into(z, e)
        _EXP_CHECK = bool(np.array_equal(e, np.exp(z))) and x32.size > 0
    return _EXP_CHECK


#: scores per task of the parallel pass (whole blocks: 8,192 rows at 1,000 classes)
CHUNK_SCORES = 1 << 23


class _Job:
    """One model's pass: validated inputs, the output arrays, the path, and its tasks."""

    def __init__(self, src: ModelSource, labels, k: int, block: int, path: str):
        n, c = src.n, src.n_classes
        if c < 2:
            raise DivergentError(f"{src.name or 'model'} has {c} class(es); the engine needs at least 2")
        if path not in ("auto", "fused", "numpy"):
            raise DivergentError(f"unknown path {path!r}", "use auto, fused or numpy")
        self.src, self.n, self.block = src, n, max(1, int(block))
        self.y = _check_labels(labels, n, c)
        self.k = k = int(min(max(2, k), c))
        self.topi = np.empty((n, k), dtype=np.int32)
        self.topp = np.empty((n, k), dtype=np.float64)
        self.thr, self.plabel, self.unot, self.m, self.s = (np.empty(n, dtype=np.float64) for _ in range(5))
        self.path = path
        if path == "auto" and not fused_exp_matches_numpy():
            self.path = "numpy"
        self.bad_block: int | None = None
        self.left = 0  # tasks not yet finished
        self.lock = threading.Lock()

    def out(self, r0: int, r1: int) -> tuple:
        return (self.topi[r0:r1], self.topp[r0:r1], self.thr[r0:r1], self.plabel[r0:r1], self.unot[r0:r1],
                self.m[r0:r1], self.s[r0:r1])

    def _compute(self, b0: int, b1: int, path: str, out: tuple) -> int:
        x, y = self.src.scores[b0:b1], self.y[b0:b1]
        if path == "numpy":
            return _summaries_numpy(x, self.src.kind, self.src.temperature, y, self.k, out)
        return _summaries_fused(x, self.src.kind, self.src.temperature, y, self.k, out)

    def run(self, r0: int, r1: int) -> None:
        """Rows r0..r1-1 by the job's path, block by block."""
        for b0 in range(r0, r1, self.block):
            b1 = min(r1, b0 + self.block)
            if self._compute(b0, b1, self.path, self.out(b0, b1)):
                with self.lock:
                    self.bad_block = b0 if self.bad_block is None else min(self.bad_block, b0)

    def decide(self) -> None:
        """"auto": the first block by numpy, and by the fused pass into scratch arrays; the fused
        pass is used for the other rows only if the two agree bitwise in every output."""
        b1 = min(self.n, self.block)
        self.path = "numpy"
        self.run(0, b1)
        check = tuple(np.empty_like(a) for a in self.out(0, b1))
        self._compute(0, b1, "fused", check)
        if all(np.array_equal(a, b) for a, b in zip(self.out(0, b1), check)):
            self.path = "fused"

    def tasks(self) -> list:
        """The first tasks of the job: the "auto" decision (which then adds the rest), or the chunks."""
        if self.path == "auto":
            return [self._decide_then_chunks]
        return self._chunks(0)

    def _decide_then_chunks(self) -> list:
        self.decide()
        return self._chunks(min(self.n, self.block))

    def _chunks(self, start: int) -> list:
        """Tasks over rows start..n-1, about CHUNK_SCORES scores each (whole blocks)."""
        step = max(self.block, CHUNK_SCORES // max(1, self.src.n_classes) // self.block * self.block)
        return [lambda r0=r0: self.run(r0, min(self.n, r0 + step)) for r0 in range(start, self.n, step)]

    def result(self) -> PreparedModel:
        if self.bad_block is not None:  # the first block with a non-finite row, as a serial pass meets it
            r0, r1 = self.bad_block, min(self.n, self.bad_block + self.block)
            ok = (np.isfinite(self.m[r0:r1]) & np.isfinite(self.s[r0:r1]) & (self.s[r0:r1] > 0)
                  & np.isfinite(self.topp[r0:r1]).all(axis=1))
            row = r0 + int(np.flatnonzero(~ok)[0]) if (~ok).any() else r0
            raise DivergentError(
                f"{self.src.name or 'model'}: row {row} has non-finite scores (NaN, +inf, or all-zero probabilities)",
                "re-extract the model's outputs; the store must hold finite logits",
            )
        pm = PreparedModel(self.src, self.y, self.k, self.topi[:, 0].copy(), self.topi, self.topp, self.thr,
                           self.plabel, self.unot, self.m, self.s)
        pm.extra["path"] = self.path
        return pm


def _run_jobs(jobs: list[_Job], workers: int, on_done=None) -> None:
    """Every job's tasks on `workers` threads (numpy and the kernels release the GIL), first in,
    first out; a task may add tasks (the "auto" decision adds the model's chunks). Each row is
    computed alone, into its own place, so the results do not depend on `workers`."""
    kernels.warmup()
    queue: deque = deque()
    cond = threading.Condition()
    state = {"running": 0, "error": None}

    def add(job, fns):
        with job.lock:
            job.left += len(fns)
        queue.extend((job, fn) for fn in fns)

    for job in jobs:
        add(job, job.tasks())

    def finish(job, more):
        add(job, more)
        with job.lock:
            job.left -= 1
            done = job.left == 0
        if done and on_done is not None:
            on_done(job)

    if workers <= 1:
        while queue:
            job, fn = queue.popleft()
            finish(job, fn() or [])
        return

    def worker():
        while True:
            with cond:
                while not queue and state["running"] and state["error"] is None:
                    cond.wait()
                if not queue or state["error"] is not None:
                    cond.notify_all()
                    return
                job, fn = queue.popleft()
                state["running"] += 1
            try:
                more = fn() or []
            except BaseException as exc:  # handed to the caller below
                more = []
                with cond:
                    state["error"] = state["error"] or exc
            with cond:
                finish(job, more)
                state["running"] -= 1
                cond.notify_all()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if state["error"] is not None:
        raise state["error"]


def prepare(scores, labels, temperature: float = 1.0, kind: str = "logits", k: int = DEFAULT_K,
            block: int = DEFAULT_BLOCK, name: str = "", path: str = "auto", workers: int | None = None) -> PreparedModel:
    """Stream once over `scores` (N, C) and return the exact summaries of the model.

    path: "numpy" computes each block with the reference's own numpy operations; "fused" with one
    numba pass per row (exp from the same libm, numpy's pairwise row sum); "auto" uses "fused"
    when its first block is bitwise identical to the numpy path, else "numpy".
    workers: threads over row chunks (default: divergent.conventions.threads()); the result does
    not depend on it.
    """
    src = scores if isinstance(scores, ModelSource) else ModelSource(scores, float(temperature), kind, name)
    job = _Job(src, labels, k, block, path)
    _run_jobs([job], threads() if workers is None else int(workers))
    return job.result()


def prepare_many(sources: list[ModelSource], labels, k: int = DEFAULT_K, workers: int | None = None,
                 block: int = DEFAULT_BLOCK, progress: bool = False, path: str = "auto") -> list[PreparedModel]:
    """prepare() for many models: row chunks of every model on `workers` threads (default:
    divergent.conventions.threads()); the results do not depend on `workers`."""
    from tqdm.auto import tqdm

    jobs = [_Job(s, labels, k, block, path) for s in sources]
    bar = tqdm(total=len(sources), desc="prepare", disable=not (progress and sys.stderr.isatty()), unit="model")
    try:
        _run_jobs(jobs, threads() if workers is None else int(workers), on_done=lambda j: bar.update(1))
    finally:
        bar.close()
    return [j.result() for j in jobs]
