"""How human-like a model's decisions are: accuracy difference, observed consistency and error
consistency against human observers, as model-vs-human computes its benchmark table
(Geirhos et al. 2021, ``plotting/plot.py``: ``get_raw_benchmark_df`` + ``format_benchmark_df``).

For every split (dataset), every model and every human observer of that split, and every
condition of the split (its ``meta['conditions']``; one condition when it has none): the squared
accuracy difference, the observed consistency and the error consistency of the two decision
vectors (:func:`divergent.metrics.consistency.by_condition`). ``aggregate='model-vs-human'`` then
averages over conditions, then over human observers, then over datasets — the benchmark's
default datasets that the store holds, with its excluded conditions dropped — and adds a
``humans`` row: the same three numbers over every pair of human observers of a dataset
(averaged over conditions, then pairs, then datasets). ``aggregate='none'`` returns the
per-condition rows.
"""
from __future__ import annotations

import fnmatch

import numpy as np
import pandas as pd

from ..errors import DivergentError
from ..metrics.consistency import by_condition
from ._select import as_store, predictions, resolve_models

METRICS = ("accuracy_difference", "observed_consistency", "error_consistency")
AGGREGATES = ("model-vs-human", "none")


def _matches(name: str, patterns: list[str]) -> bool:
    last = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(last, p) for p in patterns)


def _patterns(p) -> list[str]:
    if isinstance(p, str):
        return [x.strip() for x in p.split(",") if x.strip()]
    return list(p)


def _splits(store, splits, aggregate: str) -> list[str]:
    if splits is not None:
        names = _patterns(splits)
        for s in names:
            store.split(s)  # unknown split -> error with suggestions
        return names
    if aggregate == "model-vs-human":
        from ..store.formats.model_vs_human import constants

        default = set(constants()["default_datasets"])
        hit = [s for s in store.splits if (store.split(s).dataset or s) in default]
        if hit:
            return hit
    return list(store.splits)


def consistency_rows(store, *, humans="subject-*", models=None, splits=None, exclude: bool = True,
                     aggregate: str = "model-vs-human") -> pd.DataFrame:
    """One row per (model, human, dataset, condition); model-vs-human's excluded conditions dropped
    when `exclude` (for model-vs-human's datasets). Human-human pairs have kind 'human'."""
    from ..store.formats.model_vs_human import constants

    store = as_store(store)
    hp = _patterns(humans)
    excluded = constants()["excluded_conditions"] if exclude else {}
    rows = []
    for split in _splits(store, splits, aggregate):
        sd = store.split(split)
        names = resolve_models(store, None, split=split, need="pred")
        hum = [m for m in names if _matches(m, hp)]
        if not hum:
            continue
        mods = [m for m in (resolve_models(store, models, split=split, need="pred") if models is not None else names)
                if m not in hum]
        dataset = sd.dataset or split
        conds = sd.meta.get("conditions")
        conds = np.asarray(conds, dtype=str) if conds is not None else np.full(sd.n, "", dtype="<U1")
        if len(conds) != sd.n:
            raise DivergentError(f"split {split!r}: {len(conds)} conditions for {sd.n} examples",
                                 "re-import the split (its meta['conditions'] holds one condition per example)")
        keep = ~np.isin(conds, list(excluded.get(dataset, [])))
        correct = {m: (predictions(store, m, split) == sd.labels)[keep] for m in hum + mods}
        c = conds[keep]
        pairs = [("model", m, h) for m in mods for h in hum]
        pairs += [("human", a, b) for i, a in enumerate(hum) for b in hum[i + 1:]]
        for kind, a, b in pairs:
            r = by_condition(correct[a], correct[b], c)
            for j, cond in enumerate(r["condition"]):
                rows.append({"kind": kind, "model": a, "human": b, "dataset": dataset, "split": split,
                             "condition": cond, "n": int(r["n"][j]), "acc_model": r["acc_a"][j],
                             "acc_human": r["acc_b"][j], **{k: float(r[k][j]) for k in METRICS}})
    if not rows:
        raise DivergentError(f"no split holds both human observers matching {', '.join(hp)} and models to compare",
                             "import model-vs-human's raw data (divergent import STORE DIR --format model-vs-human), "
                             "or name the human observers with --humans")
    return pd.DataFrame(rows)


def consistency(store, *, humans="subject-*", models=None, splits=None, aggregate: str = "model-vs-human",
                exclude: bool = True) -> pd.DataFrame:
    """model-vs-human's human-likeness table (one row per model, and a 'humans' row), or the
    per-condition rows with aggregate='none'."""
    if aggregate not in AGGREGATES:
        from ..errors import unknown

        raise unknown("aggregation", aggregate, AGGREGATES)
    raw = consistency_rows(store, humans=humans, models=models, splits=splits, exclude=exclude, aggregate=aggregate)
    if aggregate == "none":
        return raw
    key = ["model", "human", "dataset"]
    mod = raw[raw["kind"] == "model"]
    per_human = mod.groupby(key, as_index=False)[list(METRICS)].mean()  # over conditions
    per_dataset = per_human.groupby(["model", "dataset"], as_index=False)[list(METRICS)].mean()  # over humans
    table = per_dataset.groupby("model", as_index=False).agg(
        **{k: (k, "mean") for k in METRICS}, n_datasets=("dataset", "nunique"))  # over datasets
    table["n_humans"] = table["model"].map(mod.groupby("model")["human"].nunique())
    hum = raw[raw["kind"] == "human"]
    if len(hum):
        hp = hum.groupby(key, as_index=False)[list(METRICS)].mean()
        hd = hp.groupby("dataset", as_index=False)[list(METRICS)].mean()
        row = {"model": "humans", **{k: float(hd[k].mean()) for k in METRICS}, "n_datasets": int(hd["dataset"].nunique()),
               "n_humans": int(pd.concat([hum["model"], hum["human"]]).nunique())}
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table.attrs.update({"aggregate": aggregate, "datasets": sorted(raw["dataset"].unique()), "excluded_conditions": exclude})
    return table
