"""Downstream transfer (Section 4.7): linear evaluation of single embeddings and stacked pairs.

The downstream dataset lives in the same store as extra splits named ``<task>/<split>``
(``digits/train``, ``digits/holdout``, ``digits/test``; ``digits-mosaic/...``; ``voc/...``),
each holding the models' features of that dataset's images; ``task=None`` uses the plain
split names (a separate store holding only the downstream dataset). Nothing about the
upstream splits is used, so the two stay decoupled.

Single-label splits have (N,) labels; a multi-label split has the store's (N, K) multi-hot
labels and, optionally, VOC "difficult" flags in ``meta["difficult"]`` (an (N, K) 0/1 list
or [row, class] pairs; difficult labels are dropped from the probe's loss and from AP). Single-label tasks report top-1 accuracy; multi-label tasks the VOC 2007
11-point mAP (``map11``, the paper's metric) and the all-point mAP (``map_all``).
A pair is the concatenation of the two L2-normalised embeddings (stacked generalisation).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..analyses._select import as_store
from ..conventions import HOLDOUT, TEST, TRAIN, check_fit_split
from ..errors import DivergentError
from ..metrics.ranking import top1_correct, voc07_map, voc_map
from ._io import embeddings, split_data, stratified_subset, targets
from .lbfgs import sweep_probe


def split_name(task: str | None, split: str) -> str:
    return split if not task else f"{task}/{split}"


def transfer(store, models, task: str | None = None, pairs: bool = True, *, fit_on: str = TRAIN,
             select_on: str = HOLDOUT, split: str = TEST, grid=None, max_train: int | None = None,
             seed: int = 0, allow_fit_on_eval: bool = False, return_scores: bool = False, **probe_kw):
    """Linear evaluation of each model's embedding (and every pair, concatenated) on a task.

    Returns a tidy DataFrame, one row per (embedding, metric): task, kind ('single'/'pair'),
    a, b, models, dims, metric, value, select_score, lam, lam_edge (lowest / highest when the
    selected lam is at the end of the grid fitted), converged. With ``return_scores``
    the result is ``(table, scores)``: scores[models] is the (N, K) probe decision values on
    ``split`` of that embedding ("a" or "a+b"), for per-example comparisons.
    """
    store = as_store(store)
    import pandas as pd

    models = list(models)
    if not models:
        raise DivergentError("no models given", "pass at least one model with downstream embeddings")
    if len(set(models)) != len(models):
        raise DivergentError(f"models repeat: {models}")
    if select_on == fit_on:
        raise DivergentError("lam would be selected on the fit split", "use --fit-on train --select-on holdout")
    check_fit_split(fit_on, split, allow_fit_on_eval)
    check_fit_split(select_on, split, allow_fit_on_eval)
    names = {s: split_name(task, s) for s in (fit_on, select_on, split)}
    sds = {s: split_data(store, n) for s, n in names.items()}
    tg = {s: targets(sd) for s, sd in sds.items()}
    multilabel = tg[fit_on][0].ndim == 2
    if any((t[0].ndim == 2) != multilabel for t in tg.values()):
        raise DivergentError(f"the splits of task {task!r} mix single- and multi-label targets")
    K = len(sds[fit_on].class_names)
    if multilabel:
        idx = np.arange(sds[fit_on].n) if max_train is None else np.sort(
            np.random.default_rng(seed).permutation(sds[fit_on].n)[:max_train])
    else:
        idx = stratified_subset(tg[fit_on][0], max_train, seed)
    emb = {m: {s: embeddings(store, m, names[s]) for s in names} for m in models}

    def evaluate(ms):
        X = {s: np.concatenate([emb[m][s] for m in ms], axis=1) for s in names}
        yf, df = tg[fit_on]
        ys, ds = tg[select_on]
        sw = sweep_probe(
            X[fit_on][idx], yf[idx], X[select_on], ys, grid, multilabel=multilabel,
            mask_fit=None if df is None else ~df[idx], mask_sel=None if ds is None else ~ds,
            n_classes=None if multilabel else K, normalize=False, **probe_kw)
        z = sw.best.decision_function(X[split])
        if scores is not None:
            scores["+".join(ms)] = z
        yt, dt = tg[split]
        if multilabel:
            vals = {"map11": voc07_map(z, yt, dt), "map_all": voc_map(z, yt, dt)}
        else:
            vals = {"accuracy": float((z.argmax(1) == yt).mean())}
        sel = float(sw.table.loc[sw.table.selected, "select_score"].iloc[0])
        base = dict(task=task, kind="single" if len(ms) == 1 else "pair", a=ms[0],
                    b=ms[1] if len(ms) > 1 else None, models="+".join(ms), dims=int(X[split].shape[1]),
                    split=names[split], select_metric=sw.metric, select_score=sel, lam=sw.best.lam,
                    lam_edge=lam_edge(sw.best.lam, sw.table.lam), converged=bool(sw.table.converged.all()))
        return [dict(base, metric=k, value=v) for k, v in vals.items()]

    rows, scores = [], ({} if return_scores else None)
    for m in models:
        rows += evaluate([m])
    if pairs:
        for ma, mb in itertools.combinations(models, 2):
            rows += evaluate([ma, mb])
    return (pd.DataFrame(rows), scores) if return_scores else pd.DataFrame(rows)


#: the probe metric reported per downstream task kind (multi-label: the paper's VOC 2007 11-point mAP)
TRANSFER_METRIC = {False: "accuracy", True: "map11"}


def lam_edge(lam: float, fitted) -> str:
    """'lowest' / 'highest' when the selected lam is the smallest / largest value fitted (the
    optimum may lie beyond the grid: widen it), else ''."""
    vals = np.asarray(list(fitted), dtype=np.float64)
    if vals.size < 2:
        return ""
    return "lowest" if lam <= vals.min() else "highest" if lam >= vals.max() else ""


def transfer_rows(tab, scores: dict, *, task: str, upstream_acc: dict, labels) -> tuple[list[dict], dict | None]:
    """The study's rows of one downstream task from `transfer(..., return_scores=True)`: one per
    single or stacked embedding with its score in the task's metric (top-1 accuracy; VOC 2007
    11-point mAP for multi-label tasks), holdout score, mean upstream accuracy of its members, dims
    and lambda; and, for a single-label task, the best single and best stacked embeddings by holdout
    score (ties to the earlier embedding) with their per-example correctness on `labels`."""
    multilabel = bool(tab["metric"].isin(["map11", "map_all"]).any())
    metric = TRANSFER_METRIC[multilabel]
    t = tab[tab["metric"] == metric]
    rows = []
    for r in t.itertuples():
        members = r.models.split("+")
        rows.append(dict(embedding=r.models, kind="single" if r.kind == "single" else "stacked", task=task,
                         metric=metric, score=float(r.value), holdout_score=float(r.select_score),
                         upstream_acc=float(np.mean([upstream_acc[m] for m in members])), dims=int(r.dims),
                         lam=float(r.lam), lam_edge=str(getattr(r, "lam_edge", ""))))
    best = None
    if not multilabel:
        pick = {k: t[t["kind"] == k] for k in ("single", "pair")}
        if all(len(v) for v in pick.values()):
            s, c = (v.loc[v["select_score"].astype(float).idxmax(), "models"] for v in pick.values())
            best = dict(task=task, single=s, combined=c, single_correct=top1_correct(scores[s], labels),
                        combined_correct=top1_correct(scores[c], labels))
    return rows, best
