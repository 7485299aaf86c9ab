"""The one-pass extraction: a model over a dataset split -> logits/probs and embeddings in the store.

``extract`` runs one model; ``extract_many`` runs several (a list or wildcard pattern), recording
a failing model with its error and carrying on. Work is staged in chunks under
``STORE/.staging/extract/`` and committed by the store's one writer, so runs resume after a kill
and several extraction processes can share one store.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cards import ModelCard
from ..errors import DivergentError
from ..sources.registry import expand_models, resolve
from ..sources.spec import ModelSpec
from .mapping import ClassMapping, apply_mapping, imagenet_head, load_mapping, mapping_path
from .chunks import ChunkDir, fingerprint

HEAD_POLICIES = ("auto", "logits", "features")


# ----------------------------------------------------------------------------- data side
class _Prepared:
    """Picklable map-style dataset for DataLoader workers: index -> (i, uint8 HWC, error)."""

    def __init__(self, ds, transform, start: int):
        self.ds, self.transform, self.start = ds, transform, start
        reader = getattr(ds, "_reader", None)
        self.arrays = reader is not None and not getattr(reader, "decodes", True)

    def __len__(self) -> int:
        return len(self.ds) - self.start

    def __getitem__(self, k: int):
        i = self.start + k
        try:
            img = self.ds.raw(i) if self.arrays else self.ds.image(i)
            return i, self.transform(img), None
        except DivergentError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - reported with the image id in the main process
            return i, None, f"{type(exc).__name__}: {exc}"


def _collate(items):
    import torch

    errors = [(i, e) for i, _, e in items if e is not None]
    if errors:
        return None, errors
    return torch.from_numpy(np.stack([a for _, a, _ in items])), None


def _worker_init(_):
    import torch

    torch.set_num_threads(1)


def _default_workers(device: str = "cuda") -> int:
    """Decode workers only on cores the model does not use: on CPU, cores minus torch's threads
    (0 on a 2-core machine with torch's default 2 threads: decoding inline is then faster than a
    process competing with the model); with a GPU, cores - 1 (at most 8)."""
    cores = os.cpu_count() or 1
    if str(device).startswith("cuda"):
        return max(0, min(8, cores - 1))
    import torch

    return max(0, min(8, cores - torch.get_num_threads()))


def _loader(ds, transform, start: int, batch_size: int, workers: int, pin: bool):
    from torch.utils.data import DataLoader

    prep = _Prepared(ds, transform, start)
    return DataLoader(prep, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
                      worker_init_fn=_worker_init if workers else None, pin_memory=pin,
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------------- store side
def _with_writer(st, fn, *, timeout: float = 600.0):
    """Run fn(writer) under the store's lock, waiting for other writers up to the wait in force
    (`divergent.store.lock_wait`, the CLI's --wait), else `timeout` seconds."""
    from ..store import writer_wait

    with st.writer(command="divergent extract", wait=writer_wait(timeout)) as w:
        return fn(w)


def _check_shift(st, split: str, record: dict | None, ds=None) -> None:
    """A shifted split already in the store must carry the same shift record (seed, library
    version); its unshifted base, when stored, must have the same labels for the same ids.
    Checked before anything is written."""
    from ..data.shift import check_split_meta, parse_split_name

    if record is None:
        return
    if split in st.splits:
        check_split_meta(split, st.split(split).meta.get("shift"), record)
    base, _ = parse_split_name(split)
    if ds is not None and base in st.splits:
        sd = st.split(base)
        pos = {str(i): k for k, i in enumerate(sd.ids)}
        if set(pos) != set(map(str, ds.ids)):
            raise DivergentError(
                f"split {split!r} would not have the examples of the stored split {base!r} ({len(ds.ids)} vs {len(sd.ids)})",
                f"shift the dataset the store's {base!r} split was made from (same source, split rule and seed)")
        theirs = np.asarray(sd.labels)[[pos[str(i)] for i in ds.ids]]
        if not np.array_equal(theirs, np.asarray(ds.labels)):
            raise DivergentError(f"the labels of {split!r} differ from the stored split {base!r} for the same ids",
                                 f"shift the dataset the store's {base!r} split was made from")


def _ensure_split(st, split: str, ds) -> None:
    """The split must exist with the dataset's classes and ids, or is created from the dataset."""
    if split not in st.splits:
        def add(w):
            if split in w.store.splits:
                return
            meta = {"source": dict(getattr(ds, "meta", {}) or {}), "dataset_name": getattr(ds, "name", "")}
            if "shift" in meta["source"]:
                meta["shift"] = meta["source"].pop("shift")
            if getattr(ds, "skipped", None):
                meta["skipped"] = [list(s) for s in ds.skipped]
            w.add_split(split, labels=ds.labels, class_names=list(ds.class_names), ids=ds.ids,
                        dataset=getattr(ds, "source_dataset", "") or getattr(ds, "name", ""), meta=meta)
        _with_writer(st, add)
        st = st.reload()
    sd = st.split(split)
    if list(sd.class_names) != list(ds.class_names):
        raise DivergentError(
            f"the dataset's classes differ from split {split!r} of the store: "
            f"{list(ds.class_names)[:5]}... vs {list(sd.class_names)[:5]}...",
            "extract into a store (or split name) made from this dataset, or fix the class list (classes=)",
        )
    if len(sd.ids) != len(ds.ids) or not np.array_equal(np.asarray(sd.ids, dtype=str), np.asarray(ds.ids, dtype=str)):
        missing = sorted(set(map(str, sd.ids)) - set(map(str, ds.ids)))[:3]
        extra = sorted(set(map(str, ds.ids)) - set(map(str, sd.ids)))[:3]
        raise DivergentError(
            f"the dataset's examples differ from split {split!r} of the store ({len(ds.ids)} vs {len(sd.ids)} examples; "
            f"missing e.g. {missing}, extra e.g. {extra})",
            "use the same dataset source, split rule and seed as the store's split (or skip policy)",
        )


# ----------------------------------------------------------------------------- outputs
def _softmax64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float32).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _renorm(p: np.ndarray) -> tuple[np.ndarray, int]:
    p = np.clip(p.astype(np.float64), 0, None)
    s = p.sum(axis=1, keepdims=True)
    empty = s[:, 0] <= 0
    out = np.where(empty[:, None], 1.0 / p.shape[1], p / np.where(s > 0, s, 1.0))
    return out, int(empty.sum())


@dataclass
class HeadPlan:
    """How the model's head outputs become store arrays (decided before the pass)."""

    store: str  # "logits", "probs" or "none"
    reason: str
    n_out: int | None
    drop_background: int | None = None
    mapping: dict[int, str] | None = None
    reorder: list[int] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def plan_head(spec: ModelSpec, n_out: int | None, labels: list[str] | None, class_names: list[str],
              mapping=None, head: str = "auto", mapping_rule: str | None = None) -> HeadPlan:
    """Decide whether the head fits the split's label space (directly, reordered, or through a mapping)."""
    if head not in HEAD_POLICIES:
        raise DivergentError(f"unknown head policy {head!r}", f"use one of {', '.join(HEAD_POLICIES)}")
    c = len(class_names)
    if n_out is None or spec.output == "none" or head == "features":
        if mapping is not None:
            raise DivergentError(f"{spec.name} has no classification head to map", "drop --mapping; its features are stored")
        return HeadPlan("none", "features only: the model has no classification head" if head != "features" else "features only (asked)", n_out)
    bg = spec.background_class
    k = n_out - (1 if bg is not None else 0)
    own = list(labels) if labels else None
    if own is not None and bg is not None and len(own) == n_out:
        own = own[:bg] + own[bg + 1:]
    info = {"model_outputs": n_out, "background_class_dropped": bg}
    if mapping is not None:
        m = (load_mapping(mapping, rule=mapping_rule) if not isinstance(mapping, dict)
             else ClassMapping(mapping, rule=mapping_rule or getattr(mapping, "rule", "sum")))
        apply_mapping(np.full((1, k), 1.0 / k), m, list(class_names))  # validate before the long pass
        return HeadPlan("probs", "class mapping", n_out, bg, m, info=info)
    auto = imagenet_head(n_out, bg, spec.label_space, labels, list(class_names))
    if auto is not None:
        ibg, cols, iinfo = auto
        return HeadPlan("probs" if (spec.output == "probs" or ibg is not None) else "logits",
                        f"ImageNet head: columns of the split's {iinfo['label_space']} classes", n_out, ibg,
                        reorder=cols, info={**info, "background_class_dropped": ibg, **iinfo})
    if k == c:
        if own is None or [s.lower() for s in own] == [s.lower() for s in class_names]:
            return HeadPlan("probs" if (spec.output == "probs" or bg is not None) else "logits", "head fits the split", n_out, bg, info=info)
        if sorted(s.lower() for s in own) == sorted(s.lower() for s in class_names):
            pos = {s.lower(): j for j, s in enumerate(own)}
            order = [pos[s.lower()] for s in class_names]
            return HeadPlan("probs" if (spec.output == "probs" or bg is not None) else "logits",
                            "head fits the split (columns reordered by class name)", n_out, bg, reorder=order, info=info)
        why = f"the model's {k} classes ({own[:3]}...) are not the split's ({list(class_names)[:3]}...)"
    else:
        why = f"the model outputs {k} classes{' after dropping the background class' if bg is not None else ''}; the split has {c}"
    if head == "logits":
        raise DivergentError(f"{spec.name}: {why}", "pass a class-mapping file (--mapping) or store features only (--head features)")
    return HeadPlan("none", f"features only: {why}", n_out, info=info)


def finish_head(plan: HeadPlan, spec: ModelSpec, raw: np.ndarray, class_names: list[str]) -> tuple[str | None, np.ndarray | None, dict]:
    """Apply background drop, mapping and reordering; return (kind, array, card info)."""
    info = dict(plan.info, stored=plan.store, reason=plan.reason, output=spec.output)
    if plan.store == "none" or raw is None:
        return None, None, info
    x = raw.astype(np.float32)
    if plan.drop_background is not None or plan.mapping is not None or spec.output == "probs":
        p = _softmax64(x) if spec.output == "logits" else x.astype(np.float64)
        if plan.drop_background is not None:
            info["background_mass_mean"] = float(p[:, plan.drop_background].mean())
            p = np.delete(p, plan.drop_background, axis=1)
        p, empty = _renorm(p)
        info["renormalized"] = True
        if empty:
            info["rows_without_mass"] = empty
        if plan.mapping is not None:
            p, minfo = apply_mapping(p, plan.mapping, class_names)
            info["mapping"] = minfo
        if plan.reorder is not None:
            cut = len(plan.reorder) < p.shape[1]
            p = p[:, plan.reorder]
            if cut:  # a subset of the head's classes (ImageNet-R/-A): renormalise over them
                p, _ = _renorm(p)
        return "probs", p.astype(np.float32), info
    if plan.reorder is not None:
        x = x[:, plan.reorder]
    return "logits", x, info


# ----------------------------------------------------------------------------- the pass
def _run_pass(runner, ds, chunks: ChunkDir, done: list[dict], batch_size: int, workers: int,
              chunk_images: int, progress: bool, desc: str, min_batch: int = 1) -> tuple[int, float]:
    """Compute and stage the remaining chunks; OOM halves the batch. Returns (batch size, seconds)."""
    from tqdm.auto import tqdm

    from ..sources.preprocess import ImageTransform

    n = len(ds)
    start = done[-1]["start"] + done[-1]["count"] if done else 0
    bs = done[-1]["batch_size"] if done else batch_size
    transform = ImageTransform(runner.preprocess)
    pin = runner.device.startswith("cuda")
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=start, unit="img", unit_scale=True, desc=desc, dynamic_ncols=True,
               disable=None if progress else True, smoothing=0.1)
    try:
        while start < n:
            per_chunk = max(1, chunk_images // bs) * bs
            heads, embs, got = [], [], 0
            try:
                loader = _loader(ds, transform, start, bs, workers, pin)
                it = iter(loader)
                for batch, errors in it:
                    if errors:
                        i, msg = errors[0]
                        raise DivergentError(
                            f"image {ds.ids[i]!s} could not be read: {msg}",
                            "fix or remove the file, or pass on_error='skip' (--on-error skip) to leave bad images out and record them")
                    h, e = runner(batch)
                    if h is not None:
                        heads.append(h)
                    embs.append(e)
                    got += len(e)
                    bar.update(len(e))
                    if got >= per_chunk or start + got >= n:
                        f = chunks.write(start, bs, np.concatenate(heads) if heads else None, np.concatenate(embs))
                        done.append({"file": f, "start": start, "count": got, "batch_size": bs})
                        start += got
                        heads, embs, got = [], [], 0
                del it, loader
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not _is_oom(exc) or bs <= min_batch:
                    raise
                bar.update(-got)
                bs = max(min_batch, bs // 2)
                bar.write(f"{desc}: out of memory; retrying from image {start} with batch size {bs}")
                _free_cuda()
    finally:
        bar.close()
    return bs, time.perf_counter() - t0


def _free_cuda():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def open_data(data, split, on_error, dataset_options, shift=None, shift_from=None, progress: bool = False):
    """The dataset split (opened unless it is one already), shifted when a shift is given."""
    if not isinstance(data, (str, os.PathLike)):
        ds = data  # an ImageDataset already opened (bulk runs reuse it)
    else:
        from ..data import open_dataset

        ds = open_dataset(os.fspath(data), split, on_error=on_error, **(dataset_options or {}))
    if shift is None or "shift" in getattr(ds, "meta", {}):
        return ds
    from ..data.shift import open_shifted

    return open_shifted(ds, shift, shift_from=shift_from, progress=progress)


def _one_shift(shift, seed: int):
    """A single Shift from a Shift or a spec naming exactly one (None stays None)."""
    if shift is None:
        return None
    from ..data.shift import parse_shifts

    got = parse_shifts(shift, seed=seed)
    if len(got) != 1:
        raise DivergentError(f"the shift {shift!r} names {len(got)} shifted splits; extract() runs one",
                             "use extract_many (or the CLI's --shift), which runs every shift")
    return got[0]


def extract(store_path, model: str, data, split: str = "test", *, batch_size: int = 256, device: str = "auto",
            workers: int | None = None, force: bool = False, mapping=None, progress: bool = True,
            name: str | None = None, head: str = "auto", input_size: int | None = None, on_error: str = "fail",
            dataset_options: dict | None = None, chunk_images: int = 2048, runtime: str = "auto",
            mapping_rule: str | None = None, shift=None, shift_seed: int = 0, shift_from=None,
            run_pass=None) -> dict[str, Any]:
    """Extract one model's head outputs and pre-logit embeddings on one split into a store.

    model: a built-in name (``divergent models list``) or a source spec (``timm:resnet18@random``).
    data: a dataset source for :func:`divergent.data.open_dataset` (or an opened ImageDataset).
    head: ``auto`` (logits when the head fits the split's classes, else features only),
    ``logits`` (a head that does not fit is an error), ``features`` (embeddings only).
    mapping: a CSV/TOML class-mapping file, a built-in mapping name (``model-vs-human-16``) or a dict,
    from the model's classes to the split's; mapping_rule: sum (default) or mean of each target's sources.
    input_size: run at another input resolution (the stored name gets ``@<size>px``).
    runtime: torch models on CPU run through ONNX Runtime when certified equal on the first batch
    (``auto``, the default), always in eager torch (``torch``), or must use ONNX Runtime (``onnxruntime``).
    shift: a corruption of the split (``divergent.data.shift``): a Shift or a spec naming one
    (``"gaussian_noise:3"``, seeded with shift_seed); the model then runs on the corrupted copy,
    stored as split ``<split>~<corruption>-<severity>`` with the same ids and labels; shift_from reads
    the pixels from a pre-generated CIFAR-10-C / ImageNet-C folder instead of generating them.
    run_pass: computes the chunks still missing, with _run_pass's arguments (default: _run_pass, in
    this process; divergent.extract.distributed computes them as shards of rows on other nodes).
    Returns a summary dict (model, split, status, stored kinds, n, seconds, images_per_s).
    """
    from ..store import Store, stage_entry

    spec = resolve(model)
    store_name = name or (f"{spec.name}@{input_size}px" if input_size else spec.name)
    if head not in HEAD_POLICIES:
        raise DivergentError(f"unknown head policy {head!r}", f"use one of {', '.join(HEAD_POLICIES)}")
    sh = _one_shift(shift, shift_seed)
    from ..data.shift import expected_meta, parse_split_name

    given = getattr(data, "meta", {}).get("shift") if not isinstance(data, (str, os.PathLike)) else None
    base_split = parse_split_name(data.split)[0] if given else split
    record = given
    if sh is not None:
        record = expected_meta(sh, shift_from)
        split = sh.split_name(base_split)
    elif given:
        split = data.split  # an ImageDataset shifted by the caller (divergent.data.shift)
    from ..store.layout import MANIFEST

    if record and (Path(store_path) / MANIFEST).exists():
        _check_shift(Store.open(store_path), split, record)  # refused before the store is touched
    st = Store.open(store_path, create=True)
    already = split in st.splits and store_name in st.models and st.kinds(store_name, split)
    if already and not force:
        return {"model": store_name, "split": split, "status": "skipped", "stored": st.kinds(store_name, split),
                "reason": "already extracted (pass force=True / --force to redo)"}
    ds = open_data(data, base_split if record else split, on_error, dataset_options, sh, shift_from, progress)
    if record:
        if ds.split != split:
            raise DivergentError(f"the dataset passed is split {ds.split!r}, not {split!r}",
                                 "pass the unshifted split (it is shifted here) or the matching shifted one")
        _check_shift(st, split, ds.meta.get("shift"), ds)
    _ensure_split(st, split, ds)
    st = st.reload()
    runner = _load_runner(spec, device, ds.class_names, input_size, runtime)
    # probe the output sizes on one image before the long pass, so a misfit fails fast
    from ..sources.preprocess import ImageTransform

    probe_img = ds.raw(0) if getattr(getattr(ds, "_reader", None), "decodes", True) is False else ds.image(0)
    ph, pe = runner(_as_batch(runner, ImageTransform(runner.preprocess)(probe_img)))
    plan = plan_head(spec, None if ph is None else ph.shape[1], runner.labels, list(ds.class_names), mapping, head,
                     mapping_rule=mapping_rule)
    workers = _default_workers(runner.device) if workers is None else int(workers)
    fp = fingerprint(model=store_name, spec=spec.to_dict(), pre=runner.preprocess.to_dict(), split=split,
                     n=len(ds), ids=fingerprint(ids=list(map(str, ds.ids))), device=runner.device, amp=runner.amp,
                     runtime=runner.runtime,
                     store_head=plan.store != "none",
                     **({"shift": ds.meta["shift"]} if "shift" in getattr(ds, "meta", {}) else {}))
    from ..store import extract_job_dir

    chunks = ChunkDir(extract_job_dir(store_path, store_name, split), fp)
    done = chunks.open()
    resumed_from = done[-1]["start"] + done[-1]["count"] if done else 0
    bs, seconds = (run_pass or _run_pass)(runner, ds, chunks, done, batch_size, workers, chunk_images, progress,
                                          store_name)
    raw_head, emb = chunks.load(done)
    kind, arr, head_info = finish_head(plan, spec, raw_head, list(ds.class_names))
    card = _card(spec, store_name, runner, plan, head_info, ds, split, bs, workers, mapping, input_size)
    card.extra["embedding_dim"] = int(emb.shape[1])
    arrays = {"features": emb.astype(np.float32)}
    if kind is not None:
        arrays[kind] = arr
    meta = {"extract": {"batch_sizes": sorted({c["batch_size"] for c in done}), "resumed_from": resumed_from,
                        "device": runner.device, "amp": runner.amp, "dataset": _ds_name(ds)}}
    stage = stage_entry(store_path, store_name, split, arrays=arrays, card=card, meta=meta, force=force)

    def commit(w):
        if not force and store_name in w.store.models and w.store.kinds(store_name, split):
            return False  # another process committed the same (model, split) meanwhile
        w.commit_staged(stage)
        return True

    import shutil

    try:
        committed = _with_writer(st, commit)
    except Exception:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    chunks.remove()
    if not committed:
        shutil.rmtree(stage, ignore_errors=True)
        return {"model": store_name, "split": split, "status": "skipped", "stored": sorted(arrays),
                "reason": "another process committed it first"}
    n_new = len(ds) - resumed_from
    return {"model": store_name, "split": split, "status": "done", "stored": sorted(arrays), "n": len(ds),
            "head": plan.reason, "batch_size": bs, "seconds": seconds,
            "images_per_s": n_new / seconds if seconds > 0 and n_new else None, "resumed_from": resumed_from}


def _as_batch(runner, arr: np.ndarray):
    if runner.kind == "torch":
        import torch

        return torch.from_numpy(arr[None].copy())
    return arr[None]


def _load_runner(spec, device, class_names, input_size, runtime="auto"):
    from ..sources.adapters import load

    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise DivergentError(f"unknown device {device!r}", "use auto, cpu or cuda[:N]")
    return load(spec, device=device, class_names=list(class_names), input_size=input_size, runtime=runtime)


def _ds_name(ds) -> str:
    return f"{getattr(ds, 'name', '')}:{getattr(ds, 'split', '')}"


def _card(spec: ModelSpec, store_name, runner, plan, head_info, ds, split, bs, workers, mapping, input_size) -> ModelCard:
    import platform

    head = "class-mapping" if plan.mapping is not None else ("none" if plan.store == "none" else spec.head)
    versions = {}
    for mod in ("torch", "timm", "onnxruntime", "open_clip", "transformers"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", "?")
    prov = dict(runner.provenance)
    prov.update(spec=spec.name, extracted_on=_ds_name(ds), split=split, batch_size=bs, workers=workers,
                device=runner.device, autocast=runner.amp, versions=versions, python=platform.python_version())
    if mapping is not None and not isinstance(mapping, dict):
        from .._files import sha256_file

        prov["mapping_file"] = str(mapping)
        prov["mapping_sha256"] = sha256_file(mapping_path(mapping))
    if plan.mapping is not None:
        prov["mapping_rule"] = getattr(plan.mapping, "rule", "sum")
    hparams = {"input_size": int(input_size)} if input_size else {}
    return ModelCard(
        name=store_name, family=spec.family, depth=spec.depth, width=spec.width, objective=spec.objective,
        train_data=spec.train_data, head=head, hparams=hparams, source=f"{spec.source}:{spec.name}" if ":" not in spec.name else spec.name,
        license=spec.license, preprocessing=runner.preprocess.to_dict(), provenance=prov, notes=spec.notes,
        extra={"head_info": head_info, "label_space": spec.label_space, "embedding": spec.embedding,
               "embedding_dim": None},
    )


def record_failure(store_path, model: str, split: str, exc: BaseException, seconds: float, *,
                   progress: bool = False) -> dict:
    """A bulk run's row for a model that failed, also appended (with its traceback) to the store's
    failures log (``store.layout.extract_failures_log``); call it from the ``except`` block."""
    import json

    from ..store.layout import extract_failures_log

    row = {"model": model, "split": split, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
           "seconds": seconds}
    log = extract_failures_log(store_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps({**row, "time": time.time(), "traceback": traceback.format_exc(limit=5)}) + "\n")
    if progress:
        print(f"[extract] {model}: FAILED: {row['error'].splitlines()[0]}", file=sys.stderr)
    return row


def extract_many(store_path, models, data, split: str = "test", *, progress: bool = True, on_error: str = "fail",
                 dataset_options: dict | None = None, shift=None, shift_seed: int = 0, shift_from=None, **kw):
    """Extract several models (list, comma-separated, or wildcard patterns); failures are recorded, not fatal.

    shift: shifts to run instead of the plain split (``divergent.data.shift.parse_shifts``: a spec,
    list or pattern such as ``"all:3"``); every model runs on every shifted split, each generated once.
    Returns a DataFrame with one row per (model, split): model, split, status (done/skipped/failed),
    error, stored, n, seconds, images_per_s. Failures are also appended to
    STORE/.staging/extract/failures.jsonl.
    """

    import pandas as pd

    names = expand_models(models)
    shifts = [None]
    if shift is not None:
        from ..data.shift import parse_shifts

        shifts = parse_shifts(shift, seed=shift_seed)
    base = None
    opened: dict = {}
    rows = []
    for sh, m in ((sh, m) for sh in shifts for m in names):
        t0 = time.perf_counter()
        where = split if sh is None else sh.split_name(split)
        try:
            if base is None:
                base = open_data(data, split, on_error, dataset_options)
            if sh not in opened:  # each shifted split is made once, for every model
                opened.clear()
                opened[sh] = base if sh is None else open_data(base, split, on_error, dataset_options, sh, shift_from, progress)
            ds = opened[sh]
            row = extract(store_path, m, ds, split, progress=progress, on_error=on_error, shift=sh,
                          shift_from=shift_from, **kw)
            row.setdefault("error", None)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - bulk runs record a failing model and carry on
            row = record_failure(store_path, m, where, exc, time.perf_counter() - t0, progress=progress)
        rows.append(row)
    cols = ["model", "split", "status", "error", "stored", "n", "head", "batch_size", "seconds", "images_per_s"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols + [c for c in df.columns if c not in cols]]
