"""One streaming pass per model: exact per-example summaries that the pair and greedy engines use.

From the full float64 reference probabilities of each row block (bitwise those of
metrics.probs.reference_probs) we keep pred, p[label], the top-k class ids and probs, the
largest prob outside the top-k, the largest prob of a wrong class, and the row max m / row
sum s of the softmax so that any single p[c] can be recomputed bitwise from the stored scores.
The full probability matrix is never kept.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import DivergentError
from . import kernels
from ..metrics.probs import as_logits32, log_probs_from_probs
from .rows import block_probs, check_kind, gather_probs

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
    p, mb, sb = block_probs(x, kind, T)
    topi, topp, thr, plabel, unot, m, s = out
    kernels.topk_rows(p, y, k, topi, topp, thr, plabel, unot)
    m[:] = mb
    s[:] = sb
    return int(np.sum(~(np.isfinite(mb) & np.isfinite(sb) & (sb > 0)))) + int(np.sum(~np.isfinite(p).all(axis=1)))


def _summaries_fused(x, kind, T, y, k, out):
    topi, topp, thr, plabel, unot, m, s = out
    x = np.asarray(x)
    if kind == "logits" and x.dtype == np.float16 and x.flags.c_contiguous:
        # decoded exactly in the kernel; no float32 copy of the block
        return kernels.fused_topk_rows(_DUMMY_F, x.view(np.uint16), True, kernels.HALF_TABLE, np.float64(T), y, k,
                                       topi, topp, thr, plabel, unot, m, s)
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


def prepare(scores, labels, temperature: float = 1.0, kind: str = "logits", k: int = DEFAULT_K,
            block: int = DEFAULT_BLOCK, name: str = "", path: str = "auto") -> PreparedModel:
    """Stream once over `scores` (N, C) and return the exact summaries of the model.

    path: "numpy" computes each block with the reference's own numpy operations; "fused" with one
    numba pass per row (exp from the same libm, numpy's pairwise row sum); "auto" uses "fused"
    when its first block is bitwise identical to the numpy path, else "numpy".
    """
    src = scores if isinstance(scores, ModelSource) else ModelSource(scores, float(temperature), kind, name)
    n, c = src.n, src.n_classes
    if c < 2:
        raise DivergentError(f"{src.name or 'model'} has {c} class(es); the engine needs at least 2")
    if path not in ("auto", "fused", "numpy"):
        raise DivergentError(f"unknown path {path!r}", "use auto, fused or numpy")
    y = _check_labels(labels, n, c)
    k = int(min(max(2, k), c))
    topi = np.empty((n, k), dtype=np.int32)
    topp = np.empty((n, k), dtype=np.float64)
    thr, plabel, unot, m, s = (np.empty(n, dtype=np.float64) for _ in range(5))
    used = path
    if used == "auto" and not fused_exp_matches_numpy():
        used = "numpy"
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        x = src.scores[r0:r1]
        out = (topi[r0:r1], topp[r0:r1], thr[r0:r1], plabel[r0:r1], unot[r0:r1], m[r0:r1], s[r0:r1])
        if used == "auto":
            bad = _summaries_numpy(x, src.kind, src.temperature, y[r0:r1], k, out)
            check = tuple(np.empty_like(a) for a in out)
            _summaries_fused(x, src.kind, src.temperature, y[r0:r1], k, check)
            same = all(np.array_equal(a, b) for a, b in zip(out, check))
            used = "fused" if same else "numpy"
        elif used == "fused":
            bad = _summaries_fused(x, src.kind, src.temperature, y[r0:r1], k, out)
        else:
            bad = _summaries_numpy(x, src.kind, src.temperature, y[r0:r1], k, out)
        if bad:
            ok = np.isfinite(m[r0:r1]) & np.isfinite(s[r0:r1]) & (s[r0:r1] > 0) & np.isfinite(topp[r0:r1]).all(axis=1)
            row = r0 + int(np.flatnonzero(~ok)[0]) if (~ok).any() else r0
            raise DivergentError(
                f"{src.name or 'model'}: row {row} has non-finite scores (NaN, +inf, or all-zero probabilities)",
                "re-extract the model's outputs; the store must hold finite logits",
            )
    pm = PreparedModel(src, y, k, topi[:, 0].copy(), topi, topp, thr, plabel, unot, m, s)
    pm.extra["path"] = used
    return pm


def prepare_many(sources: list[ModelSource], labels, k: int = DEFAULT_K, workers: int = 2,
                 block: int = DEFAULT_BLOCK, progress: bool = False, path: str = "auto") -> list[PreparedModel]:
    """prepare() for many models, `workers` at a time (numpy and the kernels release the GIL)."""
    from tqdm.auto import tqdm

    kernels.warmup()
    bar = tqdm(total=len(sources), desc="prepare", disable=not (progress and sys.stderr.isatty()), unit="model")

    def one(src):
        out = prepare(src, labels, k=k, block=block, path=path)
        bar.update(1)
        return out

    try:
        if workers <= 1:
            return [one(s) for s in sources]
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(one, sources))
    finally:
        bar.close()
