"""Unit functions of the first stages: data -> train -> extract -> head -> calibrate -> pairs.

Each is ``fn(ctx, **params) -> dict`` (see executors.UnitContext), registered with
:func:`divergent.study.units.unit` under a name and a version: bump the version when the unit's
code or a module it declares in ``depends`` changes what it computes. Units never write the study
store: they stage entries (``divergent.store.stage_entry``) or write files under ``ctx.work``,
and the runner commits (splits, staged entries).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..conventions import HOLDOUT, TEST, TRAIN
from .units import Resources, spec, unit

SPLITS = (TRAIN, HOLDOUT, TEST)


def open_split(dataset: str, split: str, options: dict | None = None, train_index: np.ndarray | None = None):
    from ..data import open_dataset

    ds = open_dataset(dataset, split, **(options or {}))
    if split == TRAIN and train_index is not None:
        ds = ds.subset(train_index, split=TRAIN)
    return ds


def train_subset_index(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded, class-stratified subset of n train examples, in source order."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 7])
    classes = np.unique(labels)
    per = {c: int(round(n * (labels == c).sum() / len(labels))) for c in classes}
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per[c]] for c in classes])
    return np.sort(idx)


def images_of(ds) -> np.ndarray:
    arr = ds.array()
    if arr is None:
        arr = np.stack([np.asarray(ds.raw(i)) for i in range(len(ds))])
    return np.asarray(arr)


# ---------------------------------------------------------------- data

@unit(name="data", version=1, depends=("divergent.data",),
      resources=Resources(memory_mb=1024, reads=()))
def data_unit(ctx, *, dataset: str, train_subset: int, seed: int, options: dict) -> dict:
    """Register the study's splits: a stratified train subset, the holdout and test halves."""
    splits = []
    train_index = None
    for split in SPLITS:
        ds = open_split(dataset, split, options)
        if split == TRAIN:
            train_index = train_subset_index(ds.labels, train_subset, seed)
            ds = ds.subset(train_index, split=TRAIN)
        p = ctx.work / f"{split}.npz"
        np.savez(p, labels=np.asarray(ds.labels), ids=np.asarray(ds.ids).astype(str),
                 class_names=np.asarray(list(ds.class_names)).astype(str))
        arr = ds.array()  # in-memory sources (IDX, npz): keep the pixels so predict units skip re-reading
        if arr is not None and arr.nbytes < 256 * 2**20:
            np.save(ctx.work / f"{split}.images.npy", np.asarray(arr))
        splits.append({"name": split, "npz": str(p), "n": len(ds),
                       "dataset": getattr(ds, "source_dataset", "") or dataset})
    np.save(ctx.work / "train_index.npy", train_index)
    return {"splits": splits, "train_index": str(ctx.work / "train_index.npy"), "dataset": dataset}


def _train_index(ctx) -> np.ndarray:
    return np.load(ctx.dep("data")["train_index"])


# ---------------------------------------------------------------- train + predict (zoo recipes)

@unit(name="train", version=1, depends=("divergent.train",),
      resources=Resources(gpu=True, memory_mb=2048, reads=()))
def train_unit(ctx, *, recipe: dict) -> dict:
    """Train one recipe (resumable: train_recipe continues from its checkpoint)."""
    from ..train import Recipe, train_recipe
    from .._files import atomic_write_text
    from .._files import sha256_file as hash_file

    import shutil

    from ..train import load_trained
    from ..train.trainer import safe_dirname

    r = Recipe.from_dict(recipe)
    models_dir = Path(ctx.out) / "models"   # one directory, so distillation finds its teacher there
    mdir = models_dir / safe_dirname(r.name)
    # the version of this unit that trains the model: a bumped version trains it afresh instead of
    # loading the finished model (models from before versions were recorded count as current)
    stamp, version = mdir / "unit.json", spec("train").version
    trained_by = json.loads(stamp.read_text()).get("version") if stamp.exists() else None
    if (mdir / "model.pt").exists() and load_trained(mdir).recipe != r or trained_by not in (None, version):
        shutil.rmtree(mdir)  # the recipe or the training code changed since it was trained here: train it afresh
    mdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps({"unit": "train", "version": version}))
    trained = train_recipe(r, models_dir, device=ctx.device, progress=False)
    ckpt = Path(trained.checkpoint)
    return {"model": trained.name, "dir": str(ckpt.parent), "checkpoint_sha256": hash_file(ckpt),
            "train_wall_s": float(getattr(trained, "train_wall_s", 0.0))}


@unit(name="predict", version=1, depends=("divergent.train", "divergent.data"),
      resources=Resources(gpu=True, memory_mb=2048, reads=()))
def predict_unit(ctx, *, model: str, dataset: str, options: dict) -> dict:
    """Logits and embeddings of a trained zoo model on the study's splits, staged for the store."""
    from ..store import stage_entry
    from ..train import load_trained, predict

    trained = load_trained(ctx.dep("train")["dir"])
    staged, acc = [], {}
    tidx = _train_index(ctx)
    data_dir = Path(ctx.dep("data")["train_index"]).parent
    for split in SPLITS:
        z = np.load(data_dir / f"{split}.npz", allow_pickle=False)
        cached = data_dir / f"{split}.images.npy"
        images = np.load(cached) if cached.exists() else images_of(open_split(dataset, split, options, tidx))
        logits, feats = predict(trained, images, device=ctx.device)
        acc[split] = float((np.argmax(logits, 1) == z["labels"]).mean())
        staged.append(str(stage_entry(ctx.store, model, split, arrays={"logits": logits, "features": feats},
                                      card=trained.card, ids=z["ids"].astype(str), force=True)))
    return {"model": model, "staged": staged, "accuracy": acc}


# ---------------------------------------------------------------- extract (frozen backbones, pretrained)

@unit(name="extract", version=1, depends=("divergent.extract", "divergent.sources", "divergent.data"),
      resources=Resources(gpu=True, memory_mb=4096, reads=()))
def extract_unit(ctx, *, model: str, dataset: str, options: dict, head: str, input_size: int,
                 name: str | None = None) -> dict:
    """Extract a model on the study's splits into a private store (under `name` when the config
    renames it), then stage its arrays."""
    from ..extract import extract
    from ..store import Store, stage_entry

    priv = Path(ctx.work) / "store"
    tidx = _train_index(ctx)
    for split in SPLITS:
        ds = open_split(dataset, split, options, tidx)
        res = extract(priv, model, ds, split, head=head, device=ctx.device, progress=False,
                      input_size=input_size or None, workers=0, name=name)
    st = Store.open(priv)
    name = res["model"]   # the same store name on every split
    staged = []
    for split in SPLITS:
        arrays = {k: np.asarray(st.array(name, split, k)) for k in st.kinds(name, split)}
        staged.append(str(stage_entry(ctx.store, name, split, arrays=arrays, card=st.card(name),
                                      ids=np.asarray(st.split(split).ids).astype(str), force=True)))
    kinds = sorted(arrays)
    del st, arrays
    shutil.rmtree(priv)   # scratch: its arrays are staged for the study's store (kept once, there)
    return {"model": name, "staged": staged, "kinds": kinds}


@unit(name="head", version=1, depends=("divergent.probes",),
      resources=Resources(gpu=True, memory_mb=2048, reads=("store-models",)))
def head_unit(ctx, *, model: str, grid: list | None = None, seed: int = 0) -> dict:
    """Fit a linear head (probes.fit_head) on a private copy of the model's embeddings; stage logits."""
    from ..store import Store, stage_entry

    model = ctx.dep("extract")["model"]
    main = Store.open(ctx.store)
    priv = Store.create(Path(ctx.work) / "store")
    with priv.writer() as w:
        for split in SPLITS:
            sd = main.split(split)
            w.add_split(split, labels=sd.labels, class_names=list(sd.class_names), ids=sd.ids, dataset=sd.dataset)
            w.put(model, split, features=np.asarray(main.array(model, split, "features")), card=main.card(model))
    priv = priv.reload()
    from ..probes.heads import fit_head

    info = fit_head(priv, model, fit_on=TRAIN, select_on=HOLDOUT, grid=grid, seed=seed)
    priv = priv.reload()
    staged = []
    for split in SPLITS:
        staged.append(str(stage_entry(ctx.store, model, split,
                                      arrays={"logits": np.asarray(priv.array(model, split, "logits")),
                                              "features": np.asarray(priv.array(model, split, "features"))},
                                      card=priv.card(model), force=True)))
    shutil.rmtree(priv.root)   # scratch copy: the logits are staged for the study's store
    return {"model": model, "staged": staged, "lam": float(info.get("lam", np.nan)),
            "select_accuracy": float(info.get("select_accuracy", np.nan))}


# ---------------------------------------------------------------- calibrate, pairs

@unit(name="calibrate", version=1, depends=("divergent.analyses.calibration", "divergent.analyses._select",
                                           "divergent.metrics.calibration", "divergent.metrics.probs"),
      resources=Resources(memory_mb=2048))
def calibrate_unit(ctx, *, fit_on: str = HOLDOUT, models: list[str] | None = None) -> dict:
    """Temperature scaling of every model on the holdout (runs in the runner's process: it writes
    the temperatures into the store through the store's writer, while no unit is running)."""
    from ..analyses.calibration import calibrate
    from ..store import Store

    if models is not None:  # a model whose unit failed is not in the store: calibrate the others
        have = set(Store.open(ctx.store).models)
        models = [m for m in models if m in have]
    table = calibrate(ctx.store, fit_on=fit_on, models=models, report_on=TEST, progress=False)
    p = Path(ctx.work) / "calibration.parquet"
    table.to_parquet(p, index=False)
    temps = {str(r.model): float(r.temperature) for r in table.itertuples() if np.isfinite(r.temperature)}
    return {"table": str(p), "temps": temps}


@unit(name="pairs", version=1, depends=("divergent.analyses.pairs", "divergent.analyses._select",
                                       "divergent.metrics", "divergent.engine"),
      resources=Resources(memory_mb=2048))
def pairs_unit(ctx, *, base: str, split: str, n_boot: int, seed: int, models: list[str] | None = None) -> dict:
    """The pairs table (base vs every model, with intervals) and the model table, in one unit (the
    study plans the same tables as blocks: pairs_inputs_unit, pairs_block_unit, pairs_merge_unit)."""
    from ..analyses.pairs import model_table, pairs
    from ..store import Store

    if models is not None:
        have = set(Store.open(ctx.store).models)
        models = [m for m in models if m in have]
    pt = pairs(ctx.store, split=split, base=base, models=models, n_boot=n_boot, seed=seed,
                   calibrated=True, progress=False)
    mt = model_table(ctx.store, split=split, base=base, calibrated=True)
    if models is not None:
        mt = mt[mt["model"].isin(models)].reset_index(drop=True)
    return _write_pairs(ctx, pt, mt, base)


def _write_pairs(ctx, pt, mt, base: str) -> dict:
    p1, p2 = Path(ctx.work) / "pairs.parquet", Path(ctx.work) / "model_table.parquet"
    pt.to_parquet(p1, index=False)
    mt.to_parquet(p2, index=False)
    acc = dict(zip(mt["model"], mt["accuracy"].astype(float)))
    return {"pairs": str(p1), "model_table": str(p2), "accuracy": acc, "base": base}


@unit(name="pairs-inputs", version=1, depends=("divergent.analyses.pairs",),
      resources=Resources(memory_mb=512))
def pairs_inputs_unit(ctx, *, base: str, split: str, models: list[str]) -> dict:
    """What one block of the pairs stage reads from the store (hashes, temperatures, cards of the
    base and the block's models; analyses.pairs.counts_inputs). Its output changes only when one
    of those models does, so the block unit after it stays cached when another model changes."""
    from ..analyses.pairs import counts_inputs

    return {"inputs": counts_inputs(ctx.store, split=split, models=[base, *models])}


@unit(name="pairs-base", version=1, depends=("divergent.analyses.pairs", "divergent.analyses._select",
                                            "divergent.engine"),
      resources=Resources(memory_mb=2048, reads=("store-models",)))
def pairs_base_unit(ctx, *, base: str, split: str) -> dict:
    """The base's engine summaries on `split` (analyses.pairs.model_summary), computed once for the
    whole pairs stage and handed to every block (on Ray: shipped as this unit's output file)."""
    from .._files import sha256_file
    from ..analyses.pairs import model_summary

    got = model_summary(ctx.store, split=split, model=base)
    if got is None:   # a decision-only base: nothing to prepare
        return {"summary": None}
    key, summ = got
    p = Path(ctx.work) / "summary.npz"
    np.savez(p, **summ)
    return {"summary": str(p), "sha256": sha256_file(p), "key": key}


def _base_summary(ctx, base: str) -> dict:
    """`prepared` for pair_counts from the pairs-base unit's output ({} without one, or when its
    file does not match its recorded sha256: the block then prepares the base itself)."""
    from .._files import sha256_file

    r = ctx.deps.get("pairs-base") or {}
    if not r.get("summary") or not Path(r["summary"]).exists() or sha256_file(Path(r["summary"])) != r.get("sha256"):
        return {}
    with np.load(r["summary"], allow_pickle=False) as z:
        return {base: (r["key"], {k: z[k] for k in z.files})}


@unit(name="pairs-block", version=2, depends=("divergent.analyses.pairs", "divergent.analyses._select",
                                             "divergent.metrics", "divergent.engine"),
      resources=Resources(memory_mb=2048, reads=("store-models",)))
def pairs_block_unit(ctx, *, base: str, split: str, models: list[str]) -> dict:
    """One block of the pairs stage: the outcome-code counts of the base against each of `models`
    (those in the store; analyses.pairs.pair_counts), with the base's summaries from the pairs-base
    unit (prepared once for every block), and their rows of the model table. The bootstrap runs
    on the whole table, in pairs_merge_unit."""
    from ..analyses.pairs import model_table, pair_counts, pairs_from_counts
    from ..store import Store

    have = set(Store.open(ctx.store).models)
    block = [m for m in models if m in have and m != base]
    if not block:   # every model of the block failed: the other blocks still make a table
        return {"counts": None, "model_table": None, "models": []}
    ct = pair_counts(ctx.store, split=split, base=base, models=[base, *block], calibrated=True, progress=False,
                     prepared=_base_summary(ctx, base))
    reused = ct.attrs.pop("summaries_reused", [])
    mt = model_table(ctx.store, split=split, base=base, calibrated=True, models=[base, *block],
                     pairs_table=pairs_from_counts(ct, n_boot=0))
    p1, p2 = Path(ctx.work) / "counts.parquet", Path(ctx.work) / "model_table.parquet"
    ct.to_parquet(p1, index=False)
    mt.to_parquet(p2, index=False)
    return {"counts": str(p1), "model_table": str(p2), "models": block, "base_summary_reused": base in reused}


@unit(name="pairs-merge", version=1, depends=("divergent.analyses.pairs", "divergent.metrics"),
      resources=Resources(memory_mb=2048, reads=()))
def pairs_merge_unit(ctx, *, base: str, split: str, n_boot: int, seed: int) -> dict:
    """The pairs table and the model table of the blocks (its dependencies pairs-block:<k>): the
    blocks' counts in block order (the order of the one-unit table: the blocks cut the plan's list
    of models in turn), bootstrapped at once (analyses.pairs.pairs_from_counts: the intervals'
    resamples depend on the whole table); the model table in the store's (sorted) model order."""
    import pandas as pd

    from ..analyses.pairs import pairs_from_counts
    from ..errors import DivergentError

    blocks = sorted((k for k in ctx.deps if k.startswith("pairs-block:")), key=lambda k: int(k.rpartition(":")[2]))
    parts = [ctx.deps[k] for k in blocks if ctx.deps[k].get("counts")]
    if not parts:
        raise DivergentError("fewer than two models to compare", "add models, widen --acc-band, or check names")
    counts = [pd.read_parquet(r["counts"]) for r in parts]
    ct = pd.concat(counts, ignore_index=True)
    ct.attrs = {**counts[0].attrs, **{k: sum(c.attrs.get(k, 0) for c in counts)
                                      for k in ("engine_fallback_examples", "engine_gathered_examples")}}
    pt = pairs_from_counts(ct, n_boot=n_boot, seed=seed)
    rows = pd.concat([pd.read_parquet(r["model_table"]) for r in parts], ignore_index=True)
    rows = rows.drop_duplicates("model", keep="first").set_index("model", drop=False)
    mt = rows.loc[sorted(rows.index)].reset_index(drop=True)
    return _write_pairs(ctx, pt, mt, base)


def write_json(path: Path, obj) -> str:
    Path(path).write_text(json.dumps(obj, indent=1, default=str))
    return str(path)
