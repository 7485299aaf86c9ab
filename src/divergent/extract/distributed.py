"""Extraction on a cluster: one unit per (model, split); a large split in shards of rows.

`extract_distributed` runs `divergent.extract.run.extract` for each model with a remote pass: the
rows still missing are cut into shards (whole batches, so every batch is the one a single pass
computes: on CPU the arrays are bitwise those of a local extraction), each shard is a task
(`extract_rows`) that loads the model and opens the dataset on its node, and the driver writes
the shards' outputs as the extraction's resumable chunk files (divergent.extract.chunks), in row
order, as they arrive. A killed driver resumes from those chunks; the driver stays the store's
one writer (it plans the head, stages and commits as a local extraction does). Models run
concurrently on driver threads, each submitting its shards.

Datasets and model weights are not shipped: every node must reach them under the same path. The
driver loads each model once (on its own device) to plan the head; the shards run on the device
the driver resolved (a CUDA device asks Ray for a GPU per shard).
"""
from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import DivergentError

#: images per shard (rounded up to whole batches)
DEFAULT_SHARD = 8192


def shard_ranges(start: int, n: int, shard: int, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) covering start..n-1, each a whole number of batches (the last may be short)."""
    if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) or shard < 1:
        raise DivergentError(f"shard size must be a positive number of images, got {shard!r}",
                             f"pass e.g. --shard {DEFAULT_SHARD}")
    step = max(1, -(-int(shard) // batch_size)) * batch_size
    return [(r0, min(n, r0 + step)) for r0 in range(start, n, step)]


def extract_rows(model: str, data, split: str, r0: int, r1: int, *, device: str, runtime: str, batch_size: int,
                 input_size: int | None = None, on_error: str = "fail", dataset_options: dict | None = None,
                 shift=None, shift_from=None, trusted: tuple[str, ...] = (), chunk_images: int = 2048,
                 workers: int = 1) -> dict:
    """One shard's task: the model's head outputs and embeddings on rows r0..r1-1 of the split, by
    the same pass as a local extraction (`extract.run._run_pass`), in a scratch folder of this node.
    `workers`: torch threads."""
    from ..sources import resolve
    from ..sources.registry import trust_modules
    from .chunks import ChunkDir
    from .run import _load_runner, _run_pass, open_data

    try:
        import torch

        torch.set_num_threads(max(1, int(workers)))
    except ImportError:
        pass
    if trusted:
        trust_modules(*trusted)
    ds = open_data(data, split, on_error, dataset_options, shift, shift_from)
    part = ds.subset(np.arange(r0, r1))
    runner = _load_runner(resolve(model), device, ds.class_names, input_size, runtime)
    with tempfile.TemporaryDirectory(prefix="divergent-shard-") as tmp:
        chunks = ChunkDir(tmp, "shard")
        done = chunks.open()
        bs, seconds = _run_pass(runner, part, chunks, done, batch_size, 0, chunk_images, False, f"{model}[{r0}:{r1}]")
        head, emb = chunks.load(done)
    return {"r0": r0, "r1": r1, "head": head, "emb": emb, "batch_size": bs, "seconds": seconds,
            "batch_sizes": sorted({c["batch_size"] for c in done})}


class RemotePass:
    """extract()'s pass (`run_pass=`): the missing rows as shards on `runner`, written back in order."""

    def __init__(self, runner, model: str, data, split: str, *, shard: int = DEFAULT_SHARD, input_size=None,
                 on_error: str = "fail", dataset_options=None, shift=None, shift_from=None, trusted=()):
        self.runner, self.model, self.data, self.split, self.shard = runner, model, data, split, shard
        self.kw = dict(input_size=input_size, on_error=on_error, dataset_options=dataset_options, shift=shift,
                       shift_from=shift_from, trusted=tuple(trusted))
        self.shards = 0

    def __call__(self, runner, ds, chunks, done, batch_size, workers, chunk_images, progress, desc, min_batch=1):
        n = len(ds)
        start = done[-1]["start"] + done[-1]["count"] if done else 0
        bs = done[-1]["batch_size"] if done else batch_size
        t0 = time.perf_counter()
        ranges = shard_ranges(start, n, self.shard, bs)
        self.shards = len(ranges)
        handles = [self.runner.submit(extract_rows, self.model, self.data, self.split, r0, r1, device=runner.device,
                                      runtime=runner.runtime, batch_size=bs, chunk_images=chunk_images, **self.kw)
                   for r0, r1 in ranges]
        arrived: dict[int, dict] = {}
        nxt, left = start, list(range(len(handles)))
        while left:
            fin, rest = self.runner.wait([handles[j] for j in left])
            for f in fin:
                res = self.runner.get(handles[left[f]])
                handles[left[f]] = None
                arrived[int(res["r0"])] = res
                while nxt in arrived:  # chunk files stay contiguous from row 0: a rerun resumes from them
                    res = arrived.pop(nxt)
                    path = chunks.write(nxt, res["batch_size"], res["head"], res["emb"])
                    done.append({"file": path, "start": nxt, "count": int(res["r1"]) - nxt,
                                 "batch_size": res["batch_size"]})
                    nxt, bs = int(res["r1"]), res["batch_size"]
            left = [left[r] for r in rest]
        if nxt != n:
            raise DivergentError(f"{desc}: the shards ended at row {nxt} of {n}")
        return bs, time.perf_counter() - t0


def extract_distributed(store_path, models, data, split: str = "test", *, runner, shard: int = DEFAULT_SHARD,
                        concurrent: int = 4, progress: bool = False, shift=None, shift_seed: int = 0,
                        shift_from=None, trusted: tuple[str, ...] = (), **kw):
    """extract_many on `runner` (divergent.engine.distributed.RayRunner or LocalRunner): one unit per
    (model, split), large splits in shards of `shard` images; `concurrent` models at a time on the
    driver. Failures are recorded, not fatal (as extract_many). Returns extract_many's table plus
    the number of shards of each unit."""
    import pandas as pd

    from ..sources import expand_models
    from .run import extract, record_failure

    names = expand_models(models)
    shard_ranges(0, 0, shard, 1)  # checks the shard size before anything runs
    shifts = [None]
    if shift is not None:
        from ..data.shift import parse_shifts

        shifts = parse_shifts(shift, seed=shift_seed)
    data = str(data)

    def one(sh, m):
        t0 = time.perf_counter()
        rp = RemotePass(runner, m, data, split, shard=shard, input_size=kw.get("input_size"),
                        on_error=kw.get("on_error", "fail"), dataset_options=kw.get("dataset_options"),
                        shift=sh, shift_from=shift_from, trusted=trusted)
        try:
            row = extract(store_path, m, data, split, progress=False, shift=sh, shift_from=shift_from, run_pass=rp, **kw)
            row.setdefault("error", None)
        except Exception as exc:  # noqa: BLE001 - bulk runs record a failing model and carry on
            where = split if sh is None else sh.split_name(split)
            row = record_failure(store_path, m, where, exc, time.perf_counter() - t0, progress=progress)
        row["shards"] = rp.shards
        return row

    jobs = [(sh, m) for sh in shifts for m in names]
    with ThreadPoolExecutor(max_workers=max(1, min(int(concurrent), len(jobs) or 1))) as ex:
        rows = list(ex.map(lambda j: one(*j), jobs))
    cols = ["model", "split", "status", "error", "stored", "n", "head", "batch_size", "seconds", "images_per_s",
            "shards"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols + [c for c in df.columns if c not in cols]]
