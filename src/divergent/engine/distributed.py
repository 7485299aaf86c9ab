"""All pairs in blocks of models: the executor-agnostic part of the distributed all-pairs engine.

The models (in the caller's order) are cut into groups of `size`; the pairs whose two models fall in
groups (I, J) form the block (I, J), at most size x size pairs. Each model's summaries (`prepare`) are
computed once, as one task, and handed to every block that reads the model (on Ray through the
object store); each block is one task, the pure function `block_counts`, which runs
`pairs.all_pair_codes` over its pairs and returns their code counts and tier counts. The driver
merges the blocks' rows back into the caller's pair order (`merge`). Every example of every pair is
decided alone, so the counts are bitwise those of one `all_pair_codes` over every pair.

A runner says where the tasks run: `LocalRunner` (in this process, for tests and one machine) or
`RayRunner` (a connected Ray cluster). With a cache (`get(deps)` / `put(deps, arrays)`, e.g. a
store's `derived_cache`), each block's result is kept under a key made of everything it depends on
(the models' content keys, the pairs, k, the engine version): a rerun computes nothing, and a
changed model recomputes only the blocks that read it.

Scores travel to the tasks as arrays (through the object store: no shared filesystem assumed) or,
where every node mounts the same files (`RayRunner(shared_fs=True)`), as the path of the file
behind a memory-mapped array, which the tasks map themselves.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..errors import DivergentError
from .pairs import all_pair_codes
from .prepare import DEFAULT_K, ModelSource, PreparedModel, prepare

#: part of every block's cache key: bump when what a block computes changes
BLOCK_VERSION = "1"
#: models per group: a block reads at most 2 x DEFAULT_BLOCK models and computes DEFAULT_BLOCK^2 pairs
DEFAULT_BLOCK = 32
#: columns of a block's result rows: 16 code counts, tier-2 examples, full-row examples
N_COLS = 18

#: the per-example arrays of PreparedModel that a block needs (everything but the source and labels)
_SUMMARY = tuple(f.name for f in fields(PreparedModel) if f.name not in ("source", "labels", "k", "extra"))


@dataclass(frozen=True)
class Block:
    """One task of the all-pairs run: its pairs (indices into the caller's model list, in the
    caller's order) and where they sit in the caller's pair list."""

    key: tuple[int, int]                 # (group of a, group of b)
    models: tuple[int, ...]              # the models it reads, ascending
    pairs: tuple[tuple[int, int], ...]
    positions: tuple[int, ...]

    def local_pairs(self) -> list[tuple[int, int]]:
        at = {m: i for i, m in enumerate(self.models)}
        return [(at[a], at[b]) for a, b in self.pairs]


def plan_blocks(pairs: Sequence[tuple[int, int]], size: int = DEFAULT_BLOCK) -> list[Block]:
    """The blocks of `pairs` for groups of `size` models, ordered by (group a, group b)."""
    size = check_block_size(size)
    groups: dict[tuple[int, int], list[int]] = {}
    for p, (a, b) in enumerate(pairs):
        groups.setdefault((int(a) // size, int(b) // size), []).append(p)
    out = []
    for key in sorted(groups):
        pos = groups[key]
        bp = tuple((int(pairs[p][0]), int(pairs[p][1])) for p in pos)
        out.append(Block(key, tuple(sorted({m for ab in bp for m in ab})), bp, tuple(pos)))
    return out


def check_block_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DivergentError(f"block size must be a positive integer, got {size!r}",
                             f"pass a number of models per group, e.g. --block {DEFAULT_BLOCK}")
    return int(size)


# ---------------------------------------------------------------- the pure task functions

@dataclass(frozen=True)
class MappedFile:
    """Scores that the tasks memory-map where they run (a shared filesystem): the file, and where
    the array lies in it."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]


def mapped_file(x) -> MappedFile | None:
    """The file behind a whole memory-mapped array (np.load(..., mmap_mode="r"), a store's arrays),
    else None (a plain array, or a view of part of a mapping)."""
    import mmap

    if isinstance(x, np.memmap) and getattr(x, "filename", None) and isinstance(x.base, mmap.mmap) \
            and x.flags.c_contiguous:
        return MappedFile(str(x.filename), int(x.offset), x.dtype.str, tuple(int(v) for v in x.shape))
    return None


def open_scores(scores):
    """Scores as the tasks read them: an array as given, a MappedFile memory-mapped here."""
    if isinstance(scores, MappedFile):
        try:
            return np.memmap(scores.path, dtype=np.dtype(scores.dtype), mode="r", offset=scores.offset,
                             shape=scores.shape)
        except (OSError, ValueError) as exc:
            import socket

            raise DivergentError(f"node {socket.gethostname()}: cannot read the scores file {scores.path} ({exc})",
                                 "with a shared filesystem every node must see the store under the same path; "
                                 "otherwise run without it (the scores travel through the object store)") from exc
    return scores


def summary(pm: PreparedModel) -> dict[str, np.ndarray]:
    """The per-example summaries of a prepared model (what crosses the object store)."""
    return {name: getattr(pm, name) for name in _SUMMARY}


def attach(summ: dict[str, np.ndarray], source: ModelSource, labels: np.ndarray) -> PreparedModel:
    """A PreparedModel from its summaries and its scores (tiers 2 and 3 read the scores)."""
    return PreparedModel(source, labels, int(summ["topi"].shape[1]), **{n: summ[n] for n in _SUMMARY})


def prepare_summary(scores, labels: np.ndarray, temperature: float, kind: str, name: str,
                    k: int = DEFAULT_K, workers: int = 1) -> dict[str, np.ndarray]:
    """One model's prepare task: its summaries (the pure function behind every runner)."""
    src = ModelSource(open_scores(scores), float(temperature), kind, name)
    return summary(prepare(src, labels, k=k, workers=workers))


def block_counts(labels: np.ndarray, local_pairs: list[tuple[int, int]], metas: list[tuple[float, str, str]],
                 *parts, workers: int = 1) -> np.ndarray:
    """One block's task: rows (P, 18) of its pairs — the 16 code counts, the tier-2 and full-row
    examples — from the models' (scores, summaries) given in `parts` as scores_0, summary_0,
    scores_1, ... and their (temperature, kind, name) in `metas`."""
    models = [attach(parts[2 * i + 1], ModelSource(open_scores(parts[2 * i]), t, kind, name), labels)
              for i, (t, kind, name) in enumerate(metas)]
    out = np.zeros((len(local_pairs), N_COLS), dtype=np.int64)
    for i, r in enumerate(all_pair_codes(models, local_pairs, progress=False, workers=workers)):
        out[i, :16] = r.counts
        out[i, 16] = r.n_gather
        out[i, 17] = r.n_fallback
    return out


def merge(n_pairs: int, blocks: Sequence[Block], results: Sequence[np.ndarray]) -> np.ndarray:
    """The blocks' rows in the caller's pair order, (n_pairs, 18)."""
    out = np.zeros((n_pairs, N_COLS), dtype=np.int64)
    seen = np.zeros(n_pairs, dtype=bool)
    for blk, res in zip(blocks, results):
        res = np.asarray(res)
        if res.shape != (len(blk.pairs), N_COLS):
            raise DivergentError(f"block {blk.key} returned {res.shape} rows for {len(blk.pairs)} pairs")
        pos = np.asarray(blk.positions, dtype=np.int64)
        out[pos] = res
        seen[pos] = True
    if not seen.all():
        raise DivergentError(f"{int((~seen).sum())} pair(s) were in no block")
    return out


# ---------------------------------------------------------------- runners

class LocalRunner:
    """Runs the tasks in this process, each on `task_threads` threads (default: all of them)."""

    name = "local"

    def __init__(self, task_threads: int | None = None):
        from ..conventions import threads

        self.task_threads = threads() if task_threads is None else max(1, int(task_threads))

    def put(self, x):
        return x

    def submit(self, fn, *args, **kwargs):
        return fn(*args, workers=self.task_threads, **kwargs)

    def wait(self, handles: list) -> tuple[list, list]:
        return list(range(len(handles))), []

    def get(self, handle):
        return handle


class RayRunner:
    """Runs the tasks on a connected Ray cluster (divergent.study.ray_cluster.connect), each with
    `task_threads` CPUs and threads; arrays travel through the object store, or, with `shared_fs`
    (every node mounts the files under the same path), memory-mapped score files as their path. A
    task whose worker or node dies is rerun (`max_retries`), with the same result."""

    name = "ray"

    def __init__(self, ray, task_threads: int = 1, memory: int | None = None, max_retries: int = 3,
                 shared_fs: bool = False, gpus: float = 0):
        self.ray = ray
        self.shared_fs = bool(shared_fs)  # memory-mapped scores travel as their file's path
        self.task_threads = max(1, int(task_threads))
        self._remote = {}
        self.options = {"num_cpus": self.task_threads, "max_retries": int(max_retries)}
        if gpus:
            self.options["num_gpus"] = gpus
        if memory:
            self.options["memory"] = int(memory)

    def put(self, x):
        ref = mapped_file(x) if self.shared_fs else None
        return ref if ref is not None else self.ray.put(x)

    def submit(self, fn, *args, **kwargs):
        r = self._remote.get(fn)
        if r is None:
            r = self._remote[fn] = self.ray.remote(fn).options(**self.options)
        return r.remote(*args, workers=self.task_threads, **kwargs)

    def wait(self, handles: list) -> tuple[list, list]:
        """Indices of finished handles (at least one), and of the others."""
        at = {h: i for i, h in enumerate(handles)}
        self.ray.wait(list(handles), num_returns=1)
        done, _ = self.ray.wait(list(handles), num_returns=len(handles), timeout=0)
        fin = sorted(at[h] for h in done)
        return fin, sorted(set(range(len(handles))) - set(fin))

    def get(self, handle):
        return self.ray.get(handle)


# ---------------------------------------------------------------- the driver

@dataclass
class PairCounts:
    """What `pair_counts` returns: per pair (caller's order) its 16 code counts and tier counts, and
    what the run did."""

    counts: np.ndarray       # (P, 16) int64
    n_gather: np.ndarray     # (P,) tier-2 examples
    n_fallback: np.ndarray   # (P,) full-row examples
    blocks: int = 0
    computed: int = 0        # blocks computed (the others came from the cache)
    prepared: int = 0        # models prepared
    seconds: dict = field(default_factory=dict)


def pair_counts(sources: Sequence[ModelSource], labels: np.ndarray, pairs: Sequence[tuple[int, int]] | None = None, *,
                size: int = DEFAULT_BLOCK, runner=None, cache=None, model_keys: Sequence[dict] | None = None,
                cache_deps: dict | None = None, k: int = DEFAULT_K) -> PairCounts:
    """Code counts of `pairs` (default: every a < b) of `sources`, computed in blocks of `size` x
    `size` models on `runner` (default: this process).

    With `cache` and `model_keys` (one dict per source naming its content: hash, kind, temperature),
    each block's rows are looked up before anything runs and stored after; `cache_deps` adds what all
    blocks depend on (the labels' hash, ...)."""
    m = len(sources)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if pairs is None:
        pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
    pairs = [(int(a), int(b)) for a, b in pairs]
    bad = [ab for ab in pairs if not (0 <= ab[0] < m and 0 <= ab[1] < m)]
    if bad:
        raise DivergentError(f"pair {bad[0]} names a model outside the {m} given",
                             "give pairs as (a, b) indices into the list of sources")
    if cache is not None and (model_keys is None or len(model_keys) != m):
        raise DivergentError("a block cache needs one content key per model", "pass model_keys=[...] with the cache")
    runner = runner or LocalRunner()
    t0 = time.perf_counter()
    blocks = plan_blocks(pairs, size)

    def deps(blk: Block) -> dict:
        return {"version": BLOCK_VERSION, "k": int(k), **(cache_deps or {}),
                "models": [model_keys[i] for i in blk.models], "pairs": [list(p) for p in blk.local_pairs()]}

    results: list[np.ndarray | None] = [None] * len(blocks)
    if cache is not None:
        for i, blk in enumerate(blocks):
            hit = cache.get(deps(blk))
            rows = None if hit is None else hit.get("rows")
            if rows is not None and rows.shape == (len(blk.pairs), N_COLS) and rows.dtype == np.int64:
                results[i] = rows
    todo = [i for i, r in enumerate(results) if r is None]
    need = sorted({mi for i in todo for mi in blocks[i].models})
    if todo:
        y = runner.put(labels)
        scores = {mi: runner.put(sources[mi].scores) for mi in need}
        summ = {mi: runner.submit(prepare_summary, scores[mi], y, sources[mi].temperature, sources[mi].kind,
                                  sources[mi].name, k) for mi in need}
        handles = []
        for i in todo:
            blk = blocks[i]
            metas = [(float(sources[mi].temperature), sources[mi].kind, sources[mi].name) for mi in blk.models]
            parts = [x for mi in blk.models for x in (scores[mi], summ[mi])]
            handles.append(runner.submit(block_counts, y, blk.local_pairs(), metas, *parts))
        left = list(range(len(todo)))
        while left:
            fin, rest = runner.wait([handles[j] for j in left])
            for f in fin:
                j = left[f]
                rows = np.array(runner.get(handles[j]), dtype=np.int64)  # a private, writable copy
                results[todo[j]] = rows
                if cache is not None:
                    cache.put(deps(blocks[todo[j]]), {"rows": rows})
                handles[j] = None  # the driver keeps no reference: the object store may free it
            left = [left[f] for f in rest]
    out = merge(len(pairs), blocks, results)
    return PairCounts(out[:, :16].copy(), out[:, 16].copy(), out[:, 17].copy(), blocks=len(blocks),
                      computed=len(todo), prepared=len(need), seconds={"total": time.perf_counter() - t0})
