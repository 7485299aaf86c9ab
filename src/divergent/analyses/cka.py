"""Representation similarity from a store: linear CKA between the embeddings of every model pair.

Reads the ``features`` arrays (the pre-logit embeddings extraction stores) of one split and
computes linear CKA (Kornblith et al. 2019) for every pair, exactly and streamed over the
examples (divergent.metrics.cka), with percentile intervals from a bootstrap over the examples
(the same resamples for every pair). :func:`cka_error_inconsistency` joins the CKA table with
the pairs' error inconsistency and gives their Spearman correlation. Definitions: docs/shift.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..cards import category as card_category
from ..conventions import CI_LEVEL, TEST
from ..errors import DivergentError, unknown
from ..metrics import cka as cm
from ..metrics.bootstrap import percentile_interval, shared_resamples
from ..metrics.relationships import spearman
from ._select import as_store, resolve_models

#: default bootstrap resamples for CKA intervals
CKA_N_BOOT = 200
COLUMNS = ["model_a", "model_b", "category", "cka", "cka_lo", "cka_hi"]


def feature_models(store, split: str, models=None) -> list[str]:
    """Models with features on ``split`` (named models without them are an error)."""
    if split not in store.splits:
        raise unknown("split", split, store.splits)
    names = resolve_models(store, models, split=split, need=None)
    lacking = [m for m in names if not store.has(m, split, "features")]
    if models is not None and lacking:
        raise DivergentError(f"model {lacking[0]!r} has no features on split {split!r}",
                             "extract it again (extraction stores the embedding) or leave it out of --models")
    names = [m for m in names if m not in lacking]
    if len(names) < 2:
        raise DivergentError(f"{len(names)} model(s) have features on split {split!r}; CKA compares pairs",
                             "extract or import features (the `features` array) of at least two models")
    return names


def _cka(store, split, models, unbiased, n_boot, level, seed):
    store = as_store(store)
    names = feature_models(store, split, models)
    check = getattr(store, "ensure_checked", None)
    if check is not None:
        check([store.info(m, split, "features") for m in names])
    feats = [store.array(m, split, "features") for m in names]
    plist = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    point = cm.cka_pairs(feats, plist, unbiased=unbiased)
    n = feats[0].shape[0]
    boots, idx = None, None
    if n_boot:
        idx = list(shared_resamples(n, n_boot=n_boot, seed=seed))
        boots = cm.bootstrap_cka(feats, plist, cm.resample_weights(n, idx), unbiased=unbiased)
    cards = {m: store.card(m) for m in names}
    rows = []
    for t, (i, j) in enumerate(plist):
        lo, hi = percentile_interval(boots[t], level) if boots is not None else (np.nan, np.nan)
        rows.append({"model_a": names[i], "model_b": names[j], "category": card_category(cards[names[i]], cards[names[j]]),
                     "cka": float(point[t]), "cka_lo": lo, "cka_hi": hi})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update({"split": split, "unbiased": unbiased, "n_boot": n_boot, "level": level, "seed": seed, "n": n,
                     "dims": {m: int(f.shape[1]) for m, f in zip(names, feats)}})
    return df, boots, idx


def cka(store, *, split: str = TEST, models=None, unbiased: bool = False, n_boot: int = CKA_N_BOOT,
        level: float = CI_LEVEL, seed: int = 0) -> pd.DataFrame:
    """Linear CKA of every pair of models with features on ``split``: columns model_a, model_b,
    category, cka, cka_lo, cka_hi (a ``level`` percentile interval over ``n_boot`` resamples of
    the examples; NaN with ``n_boot=0``). ``unbiased=True`` uses the unbiased HSIC of Song et al. (2012)."""
    return _cka(store, split, models, unbiased, n_boot, level, seed)[0]


def cka_error_inconsistency(store, *, split: str = TEST, models=None, unbiased: bool = False,
                            n_boot: int = CKA_N_BOOT, level: float = CI_LEVEL, seed: int = 0) -> pd.DataFrame:
    """The CKA table joined with each pair's error inconsistency (share of examples exactly one
    model gets right; needs predictions on ``split``), with their Spearman correlation in
    ``attrs['spearman']`` and its interval in ``attrs['spearman_lo']`` / ``attrs['spearman_hi']``
    (the same example resamples for CKA and error inconsistency)."""
    from ._select import predictions

    store = as_store(store)
    df, boots, idx = _cka(store, split, models, unbiased, n_boot, level, seed)
    names = list(dict.fromkeys(df["model_a"].tolist() + df["model_b"].tolist()))
    no_pred = [m for m in names if not any(store.has(m, split, k) for k in ("logits", "probs", "pred"))]
    if no_pred:
        raise DivergentError(f"model {no_pred[0]!r} has features but no predictions on {split!r}",
                             "error inconsistency needs predictions: leave it out of --models or import them")
    y = np.asarray(store.split(split).labels)
    correct = {m: predictions(store, m, split) == y for m in names}
    incons = np.stack([correct[a] != correct[b] for a, b in zip(df["model_a"], df["model_b"])])  # (P, N)
    df = df.copy()
    df["error_inconsistency"] = incons.mean(axis=1)
    rho = float(spearman(df["cka"].to_numpy(float), df["error_inconsistency"].to_numpy(float)))
    lo = hi = np.nan
    if boots is not None:
        n = incons.shape[1]
        W = np.stack([np.bincount(ix, minlength=n) for ix in idx]).astype(np.float64)
        ei = (W @ incons.T.astype(np.float64)) / n  # (B, P)
        lo, hi = percentile_interval(spearman(boots.T, ei), level)
    df.attrs.update({"spearman": rho, "spearman_lo": lo, "spearman_hi": hi})
    return df
