"""Linear heads into the store: an L-BFGS probe on a model's stored embeddings -> logits for every split.

This is how a frozen backbone trained on other data (an ImageNet EfficientNet-Lite, an
iNaturalist MobileNet, open_nsfw) becomes a zoo member, as CLIP-S "L-BFGS" is in the
paper's Table 1. By default the head is stored under the *same* model name: the model's
features stay and its logits are added; its card gets ``head="linear-probe"`` and
``extra["linear_head"]`` records lam, C, the grid, the fit/selection splits, the fit
subset and the probe's holdout accuracy. (``extra``, not ``hparams``, so that the head's
lam does not make two reinits of a backbone differ in "hyperparameters".) Pass
``name=`` to store the head as a new model instead.
"""
from __future__ import annotations

import numpy as np

from ..analyses._select import as_store
from ..conventions import HOLDOUT, TEST, TRAIN, check_fit_split
from ..errors import DivergentError
from ._io import embeddings, split_data, stratified_subset
from .lbfgs import resolve_grid, sweep_probe


class CollapsedFeaturesWarning(UserWarning):
    """Embeddings vary in only a handful of dimensions: a probe on them says little (and is slow)."""


def check_not_collapsed(model: str, split: str, X: np.ndarray) -> int:
    """Refuse constant embeddings; warn when at most 1 % (and fewer than 16) of the dims vary.

    Returns the number of varying dimensions. A backbone fed images far below its training
    resolution can collapse like this (EfficientNet-Lite2 at 32 px: 6 of 1,280 dims vary), and the
    L-BFGS sweep then runs for minutes to fit noise.
    """
    import warnings

    X = np.asarray(X)
    spread = X.max(axis=0) - X.min(axis=0)
    scale = float(np.abs(X).max()) if X.size else 0.0
    varying = int((spread > 1e-6 * max(scale, 1e-30)).sum())
    if varying == 0:
        raise DivergentError(f"{model!r} embeddings are constant on {split!r}: nothing for a linear head to fit",
                             "check the extraction (input size, preprocessing, embedding layer) of this model")
    if varying < 16 and varying <= X.shape[1] // 100:
        warnings.warn(f"{model!r} embeddings vary in only {varying} of {X.shape[1]} dimensions on {split!r} "
                      "(collapsed features: is the input resolution far below the model's?)",
                      CollapsedFeaturesWarning, stacklevel=3)
    return varying


def fit_head(store, model: str, fit_on: str = TRAIN, select_on: str = HOLDOUT, grid=None, *,
             name: str | None = None, max_train: int | None = None, seed: int = 0,
             splits: list[str] | None = None, force: bool = False, tol: float = 1e-5,
             max_iter: int = 1000, device: str | None = None, allow_fit_on_eval: bool = False) -> dict:
    """Fit a linear head on ``model``'s embeddings and write its logits for every split.

    Returns a dict: model, name, lam, C, n_fit, select_accuracy, converged, ``sweep`` (one
    row per lam) and ``splits`` (one row per written split: split, n, accuracy).
    Logits are written for every split with this model's features, the fit split's dataset
    and its (single-label) label space, or for the given ``splits``. Existing logits are only replaced with ``force``.
    """
    store = as_store(store)
    if select_on == fit_on:
        raise DivergentError(f"lam would be selected on the split it is fitted on ({fit_on!r})",
                             "fit on train (--fit-on train) and select on the holdout (--select-on holdout)")
    check_fit_split(fit_on, TEST, allow_fit_on_eval)
    check_fit_split(select_on, TEST, allow_fit_on_eval)
    fit_sd = split_data(store, fit_on)
    sel_sd = split_data(store, select_on)
    if list(sel_sd.class_names) != list(fit_sd.class_names):
        raise DivergentError(f"splits {fit_on!r} and {select_on!r} have different label spaces",
                             "select on a split of the same dataset as the fit split")
    out = name or model
    if splits is None:
        splits = [s for s in store.splits if store.has(model, s, "features") and _same_space(store.split(s), fit_sd)]
    for s in splits:
        if not _same_space(split_data(store, s), fit_sd):
            raise DivergentError(f"split {s!r} has another label space than {fit_on!r}",
                                 "write the head only to splits of the fit split's dataset")
    if out in store.models and not force:
        clash = [s for s in splits if store.has(out, s, "logits")]
        if clash:
            raise DivergentError(
                f"{out!r} already has logits on {clash}; a linear head would replace them",
                "store the head as a new model (--name M+lbfgs) or pass --force to replace them",
            )
    read = {(model, s, "features"): store.content_hash(model, s, "features") if store.has(model, s, "features") else None
            for s in {fit_on, select_on, *splits}}
    X = embeddings(store, model, fit_on)
    y = np.asarray(fit_sd.labels, dtype=np.int64)
    idx = stratified_subset(y, max_train, seed)
    Xs = embeddings(store, model, select_on)
    K = len(fit_sd.class_names)
    check_not_collapsed(model, fit_on, X[idx])
    sw = sweep_probe(X[idx], y[idx], Xs, np.asarray(sel_sd.labels, dtype=np.int64), grid, n_classes=K,
                     normalize=False, tol=tol, max_iter=max_iter, device=device)
    fit = sw.best
    logits = {s: fit.decision_function(embeddings(store, model, s)) for s in splits}
    rows = []
    for s, z in logits.items():
        lab = np.asarray(store.split(s).labels)
        rows.append(dict(model=out, split=s, n=int(z.shape[0]), accuracy=float((z.argmax(1) == lab).mean())))
    values, refine = resolve_grid(grid)
    sel_acc = float(sw.table.loc[sw.table.selected, "select_score"].iloc[0])
    record = dict(
        type="linear-probe", solver="lbfgs", lam=fit.lam, C=fit.C, objective="mean CE + lam/2 ||W||^2",
        grid=[float(v) for v in values], refined=bool(refine), lams_fitted=[float(v) for v in sw.table.lam],
        fit_on=fit_on, select_on=select_on, n_fit=int(idx.size), max_train=max_train, seed=seed,
        select_accuracy=sel_acc, converged=bool(fit.converged), status=fit.status, n_iter=fit.n_iter,
        features_of=model, l2_normalized=True,
    )
    base = store.card(model)
    card = base.replace(name=out, head="linear-probe", extra={**(base.extra or {}), "linear_head": record})
    with store.writer() as w:
        w.require_unchanged(read, f"the linear head of {model!r}")  # features replaced during the fit: refuse
        for s, z in logits.items():
            w.put(out, s, logits=z, card=card, force=force)
        w.set_card(out, card)
    import pandas as pd

    return dict(model=model, name=out, lam=fit.lam, C=fit.C, n_fit=int(idx.size), select_accuracy=sel_acc,
                converged=bool(fit.converged), sweep=sw.table, splits=pd.DataFrame(rows))


def _same_space(sd, fit_sd) -> bool:
    """Same dataset, same class names, single-label: the head's logits mean something there."""
    return (list(sd.class_names) == list(fit_sd.class_names) and np.asarray(sd.labels).ndim == 1
            and (sd.dataset or "") == (fit_sd.dataset or ""))
