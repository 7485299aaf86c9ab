"""Unit functions of the analysis stages: specialization (angles), greedy ensembles, feature
combination, downstream transfer, findings, and the report. Each reads its inputs, calls the
analyses (divergent.analyses) or probes, and writes tables under ctx.work. Each is registered with
:func:`divergent.study.units.unit`: bump its version when its code or a module it declares in
``depends`` changes what it computes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..conventions import HOLDOUT, TEST, TRAIN
from .config import AnalysisSection
from .units import Resources, unit


def load_pairs(ctx) -> tuple[pd.DataFrame, str, dict]:
    d = ctx.dep("pairs")
    return pd.read_parquet(d["pairs"]), d["base"], d["accuracy"]


def load_representatives(ctx) -> tuple[pd.DataFrame, str, dict, dict[str, str]]:
    """The pairs table, the base, the accuracies and one representative model per category."""
    from ..analyses.ensembles import representatives as reps_of

    pairs, base, acc = load_pairs(ctx)
    return pairs, base, acc, reps_of(pairs, base, acc)


def band_of(a: AnalysisSection, base_acc: float) -> tuple[float, float]:
    """The accuracy band of the findings: base accuracy +- band_halfwidth ('auto'), or the fixed band."""
    if a.acc_band == "auto":
        h = a.band_halfwidth
        return (max(0.0, base_acc - h), min(1.0, base_acc + h))
    return tuple(a.acc_band)


def _write(ctx, tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Each table as ctx.work/<name>.parquet; name -> path."""
    out = {}
    for name, df in tables.items():
        p = Path(ctx.work) / f"{name}.parquet"
        df.to_parquet(p, index=False)
        out[name] = str(p)
    return out


# ---------------------------------------------------------------- angles and specialization (Figs. 3-4)

@unit(name="angles", version=1, depends=("divergent.analyses.specialization", "divergent.analyses.ensembles",
                                        "divergent.analyses.class_groups", "divergent.analyses._select",
                                        "divergent.metrics"),
      resources=Resources(memory_mb=2048))
def angles_unit(ctx, *, split: str, groups, n_boot: int, seed: int) -> dict:
    from ..analyses.specialization import representative_angles
    from ..store import Store

    pairs, base, acc, reps = load_representatives(ctx)
    tables = representative_angles(Store.open(ctx.store), base, reps, split, groups=None if groups == "none" else groups,
                                   n_boot=n_boot, seed=seed)
    return {**_write(ctx, tables), "representatives": reps}


# ---------------------------------------------------------------- greedy ensembles (Fig. 5)

@unit(name="greedy", version=1, depends=("divergent.analyses.ensembles", "divergent.analyses.specialization",
                                        "divergent.analyses._select", "divergent.metrics", "divergent.engine"),
      resources=Resources(memory_mb=2048))
def greedy_unit(ctx, *, high_accuracy: str, max_size: int) -> dict:
    from ..analyses.ensembles import lower_accuracy_greedy
    from ..store import Store

    pairs, base, acc = load_pairs(ctx)
    cats = dict(zip(pairs["model_b"], pairs["category"]))
    df, members, pool = lower_accuracy_greedy(Store.open(ctx.store), high_accuracy or base, list(acc),
                                              max_size=max_size, cats=cats)
    return {**_write(ctx, {"greedy": df}), "members": members, "pool": pool}


# ---------------------------------------------------------------- feature combination (Fig. 6)

@unit(name="features", version=1, depends=("divergent.analyses.ensembles", "divergent.analyses._select",
                                          "divergent.probes", "divergent.metrics.probs", "divergent.metrics.ranking"),
      resources=Resources(gpu=True, memory_mb=2048))
def features_unit(ctx, *, category: str, fractions: list, seeds: list, dims_steps: list, grid: list) -> dict:
    """Random-subset combination at a fixed budget (probes.feature_combination) and the
    variance-ranked dims curve (probes.ranked_features) for the base and the representative of one
    category; the best single and best combined probes (by holdout) for the findings."""
    from ..probes.features import pair_feature_study
    from ..store import Store

    store = Store.open(ctx.store)
    pairs, base, acc, reps = load_representatives(ctx)
    if category not in reps:
        return {"skipped": f"no {category} model in the zoo"}
    other = reps[category]
    for m in (base, other):
        for s in (TRAIN, HOLDOUT, TEST):
            if not store.has(m, s, "features"):
                return {"skipped": f"{m!r} has no embeddings on {s!r}"}
    rows, drows, best = pair_feature_study(store, base, other, category=category, fractions=fractions, seeds=seeds,
                                           dims_steps=dims_steps, grid=grid)
    w = Path(ctx.work)
    rows.to_parquet(w / "feature_combination.parquet", index=False)
    drows.to_parquet(w / "dims_curve.parquet", index=False)
    np.savez(w / "best.npz", single=best["single_correct"], combined=best["combined_correct"])
    return {"feature_combination": str(w / "feature_combination.parquet"), "dims_curve": str(w / "dims_curve.parquet"),
            "best": str(w / "best.npz"), "model_b": other, "category": category,
            "single": best["single"], "single_holdout": best["single_holdout"],
            "combined": best["combined"], "combined_holdout": best["combined_holdout"]}


# ---------------------------------------------------------------- downstream transfer (Fig. 7)

def _downstream_embeddings(ctx, model: str, task: str, ds, split: str, kind: dict) -> np.ndarray:
    """Embeddings of a study model on a downstream split (trained zoo model or frozen backbone)."""
    if kind["kind"] == "recipe":
        from PIL import Image

        from ..train import load_trained, predict

        trained = load_trained(ctx.deps[f"train:{model}"]["dir"])
        size = 28 if trained.recipe.dataset.startswith("fashion") else 32
        imgs = []
        for i in range(len(ds)):
            im = ds.image(i).convert("L" if size == 28 else "RGB").resize((size, size), Image.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.uint8))
        _, f = predict(trained, np.stack(imgs), device=ctx.device)
        return np.asarray(f)
    from ..extract import extract
    from ..store import Store

    priv = Path(ctx.work) / f"store-{task}"
    res = extract(priv, kind["spec"], ds, split, head="features", device=ctx.device, progress=False,
                    workers=0, input_size=kind.get("input_size") or None)
    return np.asarray(Store.open(priv).array(res["model"], split, "features"))


def downstream_store(ctx, task: str, models: list[str], kinds: dict) -> tuple[object, list[str], list[dict]]:
    """A private store (under ctx.work) with splits '<task>/<split>' holding the models' downstream
    embeddings, the layout probes.transfer reads; models whose extraction fails are reported."""
    from ..data import open_dataset
    from ..store import Store

    path = Path(ctx.work) / f"downstream-{task}"
    shutil.rmtree(path, ignore_errors=True)  # a re-run starts afresh
    st = Store.create(path)
    errors, ok = [], []
    ds = {s: open_dataset(task, s) for s in (TRAIN, HOLDOUT, TEST)}
    with st.writer() as w:
        for s, d in ds.items():
            meta = getattr(d, "meta", None) or {}
            w.add_split(f"{task}/{s}", labels=np.asarray(d.labels), class_names=list(d.class_names),
                        ids=np.asarray(d.ids).astype(str), dataset=task,
                        meta={"difficult": meta["difficult"]} if "difficult" in meta else None)
        for m in models:
            try:
                feats = {s: _downstream_embeddings(ctx, m, task, d, s, kinds[m]) for s, d in ds.items()}
            except Exception as exc:  # noqa: BLE001 - record a failing model and carry on
                errors.append(dict(embedding=m, kind="single", task=task, metric="", score=np.nan,
                                   error=f"{type(exc).__name__}: {exc}"))
                continue
            for s, f in feats.items():
                w.put(m, f"{task}/{s}", features=f, force=True)
            ok.append(m)
    return st.reload(), ok, errors


@unit(name="transfer", version=2, depends=("divergent.analyses.ensembles", "divergent.analyses._select",
                                          "divergent.probes", "divergent.metrics.probs", "divergent.metrics.ranking",
                                          "divergent.train", "divergent.extract", "divergent.sources", "divergent.data"),
      resources=Resources(gpu=True, memory_mb=2048, reads=()))
def transfer_unit(ctx, *, tasks: list, grid: list, kinds: dict) -> dict:
    """Linear evaluation (probes.transfer) of single and pairwise-stacked embeddings of the base and
    one model per category on downstream tasks never seen upstream; single-label tasks report top-1
    accuracy, multi-label tasks (digit mosaics) VOC 2007 11-point mAP. The best single and best
    stacked embeddings (by holdout) of the first single-label task feed claim 5."""
    from ..probes.transfer import transfer, transfer_rows

    pairs, base, acc, reps = load_representatives(ctx)
    models = [m for m in [base, *[m for m in reps.values() if m != base]] if m in kinds]
    rows, best = [], None
    for task in tasks:
        st, ok, errors = downstream_store(ctx, task, models, kinds)
        rows += errors
        if not ok:
            continue
        tab, z = transfer(st, ok, task=task, pairs=True, grid=grid, warn=False, return_scores=True)
        task_rows, task_best = transfer_rows(tab, z, task=task, upstream_acc=acc,
                                             labels=np.asarray(st.split(f"{task}/{TEST}").labels))
        rows += task_rows
        if best is None:
            best = task_best
    w = Path(ctx.work)
    pd.DataFrame(rows).to_parquet(w / "transfer.parquet", index=False)
    out = {"transfer": str(w / "transfer.parquet")}
    if best is not None:
        np.savez(w / "best.npz", single=best["single_correct"], combined=best["combined_correct"])
        out.update(best=str(w / "best.npz"), single=best["single"], combined=best["combined"], task=best["task"])
    return out


# ---------------------------------------------------------------- findings and report

@unit(name="findings", version=2, depends=("divergent.analyses.findings", "divergent.analyses.ensembles",
                                          "divergent.analyses.pairs", "divergent.analyses.specialization",
                                          "divergent.analyses.class_groups", "divergent.analyses._select",
                                          "divergent.metrics", "divergent.engine"),
      resources=Resources(memory_mb=2048))
def findings_unit(ctx, *, split: str, n_boot: int, seed: int, max_size: int, high_accuracy: str) -> dict:
    from ..analyses.findings import study_findings
    from ..store import Store

    pairs, base, acc = load_pairs(ctx)
    band = band_of(ctx.config.analysis, acc[base])
    f, n_in_band = study_findings(
        Store.open(ctx.store), pairs, base, acc, band, split=split, greedy_members=ctx.dep("greedy")["members"],
        high_accuracy=high_accuracy, max_size=max_size,
        features=[v for k, v in ctx.deps.items() if k.startswith("features:")],
        transfer=next((v for k, v in ctx.deps.items() if k.startswith("transfer")), None), n_boot=n_boot, seed=seed)
    return {**_write(ctx, {"findings": f}), "acc_band": list(band), "n_in_band": n_in_band}


def _read(d: dict | None, key: str):
    return pd.read_parquet(d[key]) if d and d.get(key) else None


def _method(row) -> str:
    obj = {"supervised": "Sup.", "contrastive": "Cont.", "distillation": "Distill.", "autoencoder": "AE",
           "masked-image": "Masked", "pseudo-label": "Pseudo-label"}.get(row["objective"], row["objective"])
    return f"{obj} / {row['train_data']}"


def unit_seconds(out) -> dict[str, float]:
    """Wall seconds of every unit that has run in this study directory (from its record)."""
    import json

    secs = {}
    for rec in sorted((Path(out) / ".study" / "units").glob("*/record.json")):
        r = json.loads(rec.read_text())
        if "unit" in r and "seconds" in r:
            secs[r["unit"]] = float(r["seconds"])
    return secs


def zoo_columns(ctx, models: list[str]) -> pd.DataFrame:
    """Card fields and cost of each model: depth, width, subset, seed, and how long it took to make
    (training for zoo recipes; extraction + linear head for frozen backbones and pretrained models)."""
    from ..store import Store

    store, secs = Store.open(ctx.store), unit_seconds(ctx.out)
    rows = []
    for m in models:
        card = store.card(m)
        prov = card.provenance or {}
        if "train_wall_s" in prov:
            cost, what = float(prov["train_wall_s"]), "training"
        else:
            parts = [secs[u] for u in (f"extract:{m}", f"head:{m}") if u in secs]
            cost, what = (float(sum(parts)) if parts else float("nan")), "extraction + head"
        rows.append({"model": m, "depth": card.depth, "width": card.width, "subset": card.subset,
                     "seed": card.seed, "cost_s": cost, "cost_of": what})
    return pd.DataFrame(rows, columns=["model", "depth", "width", "subset", "seed", "cost_s", "cost_of"])


@unit(name="report", version=3, depends=("divergent.report",),
      resources=Resources(memory_mb=1024, reads=("store", "records")))
def report_unit(ctx, *, title: str = "") -> dict:
    from ..report import ReportTables, build_report
    from .environment import table as environment_table

    pairs, base, acc = load_pairs(ctx)
    mt = pd.read_parquet(ctx.dep("pairs")["model_table"])
    models = pd.DataFrame({"model": mt["model"], "method": mt.apply(_method, axis=1), "head": mt["head"],
                           "temperature": mt["temperature"].astype(float), "accuracy": mt["accuracy"].astype(float),
                           "category": ["base" if m == base else c for m, c in zip(mt["model"], mt["category"])],
                           "family": mt["family"], "objective": mt["objective"], "train_data": mt["train_data"]})
    models = models.merge(zoo_columns(ctx, list(models["model"])), on="model", how="left")
    ang = ctx.deps.get("angles")
    feats = [v for k, v in ctx.deps.items() if k.startswith("features:") and "feature_combination" in v]
    tr = next((v for k, v in ctx.deps.items() if k.startswith("transfer")), None)
    fnd = ctx.dep("findings")
    missing = {}
    if not feats:
        missing["features"] = "feature analyses were disabled or no model had embeddings"
    if tr is None or not tr.get("transfer"):
        missing["transfer"] = "no downstream task configured (analysis.transfer = [])"
    gal = ctx.deps.get("gallery")
    if gal is None:
        missing["gallery"] = ("the gallery was turned off (analysis.gallery = 0)" if ctx.config.analysis.gallery == 0
                              else "the gallery unit did not finish (see study.log)")
    cfg = ctx.config
    t = ReportTables(
        models=models, pairs=pairs, findings=_read(fnd, "findings"),
        angles=_read(ang, "angles"), class_specialization=_read(ang, "class_specialization"),
        group_specialization=_read(ang, "group_specialization"), greedy=_read(ctx.deps.get("greedy"), "greedy"),
        feature_combination=pd.concat([pd.read_parquet(f["feature_combination"]) for f in feats], ignore_index=True) if feats else None,
        dims_curve=pd.concat([pd.read_parquet(f["dims_curve"]) for f in feats], ignore_index=True) if feats else None,
        transfer=_read(tr, "transfer"), gallery=_read(gal, "gallery"), confusion_diff=_read(gal, "confusion_diff"),
        environment=environment_table(ctx.out), base=base, missing=missing,
        meta={"acc_band": tuple(fnd["acc_band"]), "dataset": cfg.data.dataset, "study": cfg.study.name,
              "split": cfg.data.split, "fit_on": cfg.data.fit_on, "gallery_note": (gal or {}).get("note", "")},
    )
    if t.transfer is not None and "score" in t.transfer:
        t.transfer = t.transfer[np.isfinite(t.transfer["score"].astype(float))].reset_index(drop=True)
    target = cfg.analysis.dims_target
    from .shift_stages import report_tables as shift_tables

    path = build_report(t, ctx.out, title=title or None, target=None if target == "auto" else float(target),
                        shift=shift_tables(ctx))
    return {"report": str(path)}
