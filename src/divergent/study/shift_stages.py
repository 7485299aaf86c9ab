"""Unit functions of the shift and similarity stages (config key ``analysis.shifts``).

shift-data registers the shifted copies of the evaluated split (``test~<corruption>-<severity>``,
generated once by divergent.data.shift and cached); shift-predict runs each trained zoo model on
them (the trainer's prediction path), shift-extract each frozen backbone or pretrained model
(extraction of the shifted split, then the backbone's linear head); then lines (accuracy and
agreement on the line), cka (linear CKA of the embeddings on the evaluated split, and its relation
to error inconsistency) and shift-pairs (the paper's pair metrics on every shifted split). Each
is registered with :func:`divergent.study.units.unit`: bump its version when its code or a module
it declares in ``depends`` changes what it computes. They enter the study's
graph (:func:`add_model_units` before calibration, :func:`add_analysis_units` after the
pairs); :func:`report_tables` gathers their tables for the report (divergent.report.shift).
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..conventions import HOLDOUT, TRAIN
from ..errors import DivergentError
from .units import Resources, unit

#: the CKA bootstrap's resamples in the study at most (each costs O(n^2) per pair on the split's n
#: examples, so the study compares the base and one representative per category, not all pairs)
CKA_STUDY_N_BOOT = 100


def _shifts(specs: list, seed: int):
    from ..data.shift import parse_shifts

    return parse_shifts(list(specs), seed=seed)


def shifted_split_names(cfg) -> list[str]:
    """The shifted splits a study makes from its config (empty without ``analysis.shifts``)."""
    if not cfg.analysis.shifts:
        return []
    return [s.split_name(cfg.data.split) for s in _shifts(cfg.analysis.shifts, cfg.study.seed)]


def _write(ctx, tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    out = {}
    for name, df in tables.items():
        p = Path(ctx.work) / f"{name}.parquet"
        df.attrs = {}  # parquet keeps attrs as JSON metadata: numpy values in them would not serialise
        df.to_parquet(p, index=False)
        out[name] = str(p)
    return out


# ---------------------------------------------------------------- shifted splits

@unit(name="shift-data", version=1, depends=("divergent.data",), resources=Resources(memory_mb=2048, reads=()))
def shift_data_unit(ctx, *, dataset: str, options: dict, split: str, shifts: list, seed: int) -> dict:
    """Register the shifted copies of `split`: the same ids, labels and classes, the shift's record
    in the split's metadata; their pixels (generated once, cached by divergent.data.shift) are
    also kept under the unit's directory for the trained models."""
    from ..data.shift import shifted
    from .stages import images_of, open_split

    ds = open_split(dataset, split, options)
    splits = []
    for sh in _shifts(shifts, seed):
        sds = shifted(ds, sh)
        name = sds.split
        p = Path(ctx.work) / f"{name}.npz"
        np.savez(p, labels=np.asarray(sds.labels), ids=np.asarray(sds.ids).astype(str),
                 class_names=np.asarray(list(sds.class_names)).astype(str))
        np.save(Path(ctx.work) / f"{name}.images.npy", images_of(sds))
        splits.append({"name": name, "npz": str(p), "n": len(sds), "meta": {"shift": sds.meta["shift"]},
                       "dataset": getattr(ds, "source_dataset", "") or dataset,
                       "images": str(Path(ctx.work) / f"{name}.images.npy")})
    return {"splits": splits}


@unit(name="shift-predict", version=2, depends=("divergent.train", "divergent.data"),
      resources=Resources(gpu=True, memory_mb=2048, reads=()))
def shift_predict_unit(ctx, *, model: str) -> dict:
    """Logits of a trained zoo model on every shifted split, staged for the store (the study keeps
    no embeddings of shifted splits: nothing it computes reads them, and they would dominate its
    size; `divergent extract --shift` stores them for a CKA under shift)."""
    from ..store import stage_entry
    from ..train import load_trained, predict

    trained = load_trained(ctx.dep("train")["dir"])
    staged, acc = [], {}
    for s in ctx.dep("shift-data")["splits"]:
        z = np.load(s["npz"], allow_pickle=False)
        logits, _ = predict(trained, np.load(s["images"]), device=ctx.device)
        acc[s["name"]] = float((np.argmax(logits, 1) == z["labels"]).mean())
        staged.append(str(stage_entry(ctx.store, model, s["name"], arrays={"logits": logits},
                                      card=trained.card, ids=z["ids"].astype(str), force=True)))
    return {"model": model, "staged": staged, "accuracy": acc}


@unit(name="shift-extract", version=2, depends=("divergent.extract", "divergent.sources", "divergent.data",
                                               "divergent.probes"),
      resources=Resources(gpu=True, memory_mb=4096))
def shift_extract_unit(ctx, *, model: str, dataset: str, options: dict, split: str, head: str, input_size: int,
                       shifts: list, seed: int, grid: list | None = None, name: str | None = None) -> dict:
    """A frozen backbone or pretrained model on every shifted split: extraction of the corrupted
    pixels into a private store, then (for a backbone, head='features') the linear head of the
    head unit, refitted from the same embeddings, grid and seed and certified equal to it on
    `split`; the shifted logits (or probabilities) are staged, not the embeddings (see
    shift_predict_unit), and the private store is removed."""
    from ..data.shift import shifted
    from ..extract import extract
    from ..store import Store, stage_entry
    from .stages import open_split

    priv = Path(ctx.work) / "store"
    ds = open_split(dataset, split, options)
    names = []
    for sh in _shifts(shifts, seed):
        res = extract(priv, model, shifted(ds, sh), sh.split_name(split), head=head, device=ctx.device,
                      progress=False, input_size=input_size or None, workers=0, name=name)
        names.append(sh.split_name(split))
    st = Store.open(priv)
    stored = res["model"]
    if head == "features":
        st = _refit_head(ctx, st, stored, split, names, grid, seed)
    staged = []
    for s in names:
        arrays = {k: np.asarray(st.array(stored, s, k)) for k in st.kinds(stored, s) if k != "features"}
        staged.append(str(stage_entry(ctx.store, stored, s, arrays=arrays, card=Store.open(ctx.store).card(stored),
                                      ids=np.asarray(st.split(s).ids).astype(str), force=True)))
    del st, arrays
    shutil.rmtree(priv)   # scratch: what the study keeps is staged for its store
    return {"model": stored, "staged": staged}


def _refit_head(ctx, st, model: str, split: str, shifted_names: list[str], grid, seed: int):
    """The backbone's linear head on the shifted embeddings: fitted again exactly as the head unit
    did (train embeddings, lambda selected on the holdout, the same grid and seed), checked to give
    the study store's logits on `split` bit for bit, so the shifted logits come from the same head."""
    from ..probes.heads import fit_head
    from ..store import Store

    main = Store.open(ctx.store)
    with st.writer() as w:
        for s in (TRAIN, HOLDOUT, split):
            sd = main.split(s)
            w.add_split(s, labels=sd.labels, class_names=list(sd.class_names), ids=sd.ids, dataset=sd.dataset)
            w.put(model, s, features=np.asarray(main.array(model, s, "features")))
    st = st.reload()
    fit_head(st, model, fit_on=TRAIN, select_on=HOLDOUT, grid=grid, seed=seed, splits=[TRAIN, HOLDOUT, split,
                                                                                          *shifted_names])
    st = st.reload()
    mine, theirs = np.asarray(st.array(model, split, "logits")), np.asarray(main.array(model, split, "logits"))
    if not np.array_equal(mine, theirs):
        raise DivergentError(f"the linear head of {model!r} refitted for the shifted splits gives other logits on "
                             f"{split!r} than the study's head (max difference {np.abs(mine - theirs).max():.3g})",
                             "rerun the study with run.torch_threads = 1 (the head fit is deterministic there)")
    return st


# ---------------------------------------------------------------- analyses

def _present(ctx, models: list[str]) -> list[str]:
    from ..store import Store

    have = set(Store.open(ctx.store).models)
    return [m for m in models if m in have]


@unit(name="shift-pairs", version=2, depends=("divergent.analyses.shift", "divergent.analyses.pairs",
                                             "divergent.analyses.categories", "divergent.analyses.findings",
                                             "divergent.analyses.lines", "divergent.analyses._select",
                                             "divergent.metrics", "divergent.engine"),
      resources=Resources(memory_mb=2048))
def shift_pairs_unit(ctx, *, base: str, split: str, shifted: list, models: list, n_boot: int, seed: int) -> dict:
    """The base's pair metrics, their category means and the ordering findings on every split."""
    from ..analyses.shift import shift_pairs

    res = shift_pairs(ctx.store, base=base, split=split, shifted=shifted, models=_present(ctx, models),
                      n_boot=n_boot, seed=seed)
    return _write(ctx, {"shift_pairs": res.pairs, "shift_categories": res.categories, "shift_findings": res.findings})


@unit(name="lines", version=2, depends=("divergent.analyses.lines", "divergent.analyses._select", "divergent.metrics"),
      resources=Resources(memory_mb=2048))
def lines_unit(ctx, *, split: str, shifted: list, models: list, fit_on: str, n_boot: int, seed: int) -> dict:
    """Accuracy and agreement on the line on every shifted split, with ALine-S, ALine-D and ATC."""
    from ..analyses.lines import LinesDoNotHoldWarning, lines

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LinesDoNotHoldWarning)
        res = lines(ctx.store, split=split, shifted=shifted, models=_present(ctx, models), fit_on=fit_on,
                    n_boot=n_boot, seed=seed)
    notes = [str(w.message) for w in caught if issubclass(w.category, LinesDoNotHoldWarning)]
    return {**_write(ctx, {f"lines_{k}": v for k, v in res.tables().items()}), "warnings": notes}


@unit(name="cka", version=1, depends=("divergent.analyses.cka", "divergent.analyses.ensembles",
                                     "divergent.analyses._select", "divergent.metrics"),
      resources=Resources(memory_mb=4096))
def cka_unit(ctx, *, split: str, n_boot: int, seed: int) -> dict:
    """Linear CKA between the embeddings of the base and the representative of each category (the
    model closest to the base's accuracy, as for the feature analyses), every pair of them, joined
    with their error inconsistency (Spearman correlation with an interval from the same example
    resamples)."""
    from ..analyses.cka import cka_error_inconsistency
    from ..store import Store
    from .analysis_stages import load_representatives

    _, base, _, reps = load_representatives(ctx)
    st = Store.open(ctx.store)
    names = [m for m in dict.fromkeys([base, *reps.values()]) if st.has(m, split, "features")]
    if len(names) < 2:
        return {"skipped": f"{len(names)} model(s) have embeddings on {split!r}; CKA compares pairs"}
    df = cka_error_inconsistency(st, split=split, models=names, n_boot=n_boot, seed=seed)
    from ..cards import category

    base_card = st.card(base) if base in st.models else None
    df["category_to_base"] = [category(base_card, st.card(b)) if a == base and base_card is not None else
                              category(base_card, st.card(a)) if b == base and base_card is not None else ""
                              for a, b in zip(df["model_a"], df["model_b"])]
    rel = pd.DataFrame([{"split": split, "statistic": "spearman_cka_error_inconsistency", "n_pairs": len(df),
                         "estimate": float(df.attrs["spearman"]), "lo": float(df.attrs["spearman_lo"]),
                         "hi": float(df.attrs["spearman_hi"]), "n_boot": n_boot}])
    return _write(ctx, {"cka": df, "cka_relation": rel})


# ---------------------------------------------------------------- the graph and the report

def add_model_units(g, cfg, zp) -> list[str]:
    """Add the units that put every zoo model's predictions on the shifted splits into the store
    (nothing without ``analysis.shifts``); returns their ids. Calibration depends on them: the
    store clears a model's temperature when any of its scores are written."""
    from .graph import Unit
    from .plan import _store_name

    if not cfg.analysis.shifts:
        return []
    d, a, seed = cfg.data, cfg.analysis, cfg.study.seed
    shifts = [f"{s.corruption}:{s.severity}" for s in _shifts(a.shifts, seed)]
    g.add(Unit("shift-data", "data", shift_data_unit,
               dict(dataset=d.dataset, options=d.options, split=d.split, shifts=shifts, seed=seed),
               deps=("data",), cost=0.5 * len(shifts)))
    made = []
    for r in zp.recipes:
        u = g.add(Unit(f"shift-predict:{r['name']}", "extract", shift_predict_unit, dict(model=r["name"]),
                       deps=("shift-data", f"train:{r['name']}"), cost=0.2 * len(shifts)))
        made.append(u.id)
    for kind, entries in (("features", zp.backbones), ("logits", zp.pretrained)):
        for b in entries:
            deps = ("data", "shift-data", f"extract:{b['name']}") + ((f"head:{b['name']}",) if kind == "features" else ())
            u = g.add(Unit(f"shift-extract:{b['name']}", "extract", shift_extract_unit,
                           dict(model=b["spec"], dataset=d.dataset, options=d.options, split=d.split, head=kind,
                                input_size=b["input_size"], shifts=shifts, seed=seed,
                                grid=a.probe_grid if kind == "features" else None, **_store_name(b)),
                           deps=deps, cost=1.5 * len(shifts)))
            made.append(u.id)
    return made


def add_analysis_units(g, cfg, zp, made: list[str]) -> list[str]:
    """Add shift-pairs, lines and cka after the pairs (nothing without ``analysis.shifts``);
    returns the ids the report reads. `made`: the ids of :func:`add_model_units`."""
    from .graph import Unit
    from .plan import zoo_names

    if not cfg.analysis.shifts:
        return []
    d, a, seed = cfg.data, cfg.analysis, cfg.study.seed
    names, models = shifted_split_names(cfg), zoo_names(zp)
    ids = [g.add(Unit("shift-pairs", "analyses", shift_pairs_unit,
                      dict(base=zp.base, split=d.split, shifted=names, models=models, n_boot=a.n_boot, seed=seed),
                      deps=("pairs", "shift-data"), cost=0.5)).id,
           g.add(Unit("lines", "analyses", lines_unit,
                      dict(split=d.split, shifted=names, models=models, fit_on=d.fit_on, n_boot=a.n_boot, seed=seed),
                      deps=("pairs", "shift-data"), cost=0.5)).id,
           g.add(Unit("cka", "analyses", cka_unit, dict(split=d.split, n_boot=min(a.n_boot, CKA_STUDY_N_BOOT), seed=seed),
                      deps=("pairs",), cost=1.0)).id]
    return ids


def report_tables(ctx) -> dict[str, pd.DataFrame] | None:
    """The shift and similarity tables of the study's units (for divergent.report.shift), with the
    lines unit's warnings as a table; None when the study has no shifts."""
    if not ctx.config or not ctx.config.analysis.shifts:
        return None
    out: dict[str, pd.DataFrame] = {}
    for uid in ("shift-pairs", "lines", "cka"):
        res = ctx.deps.get(uid) or {}
        for k, v in res.items():
            if isinstance(v, str) and v.endswith(".parquet"):
                out[k] = pd.read_parquet(v)
        if uid == "lines" and res:
            out["lines_warnings"] = pd.DataFrame({"warning": res.get("warnings", [])}, dtype=object)
    return out
