"""Accuracy and agreement on the line under distribution shift, from a store, as DataFrames.

A shifted split is named ``<split>~<shift>`` (e.g. ``test~gaussian_noise-3``) and holds the same
examples (ids) and labels as ``<split>``. For every shifted split this fits, on the probit scale,
the accuracy line (shifted vs in-distribution accuracy, one point per model) and the agreement
line (one point per pair), with intervals from a bootstrap over the examples (the same resample
of ids for both splits and every model); estimates each model's shifted accuracy without shifted
labels by ALine-S, ALine-D (Baek et al. 2022) and ATC (Garg et al. 2022), and scores them
against the true shifted accuracy beside the naive in-distribution accuracy. Definitions:
docs/shift.md.
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..cards import CATEGORY_ORDER
from ..cards import category as card_category
from ..conventions import CI_LEVEL, HOLDOUT, N_BOOT, TEST, check_fit_split
from ..errors import DivergentError, unknown
from ..metrics import lines as lm
from ..metrics.bootstrap import percentile_intervals, shared_resamples
from ..store import align_ids
from ._select import NamedTables, as_store, predictions, reference_prob_blocks, resolve_models, temperatures

SHIFT_SEP = "~"
LINES = ("accuracy", "agreement")
METHODS = ("id_accuracy", "aline_s", "aline_d", "atc")
_PARAMS = ("slope", "bias", "r2")
#: resamples whose (B, pairs) float32 weights are multiplied at once
_BOOT_CHUNK = 50


class LinesDoNotHoldWarning(UserWarning):
    """The agreement line explains too little (R^2 < 0.8), or its slope or bias differs from the
    accuracy line's beyond both 95 % intervals: ALine's estimates are then not to be trusted."""


@dataclass
class LinesResult(NamedTables):
    """Tables of :func:`lines`: per-model estimates, fitted lines, per-category agreement fits,
    and each estimator's error against the true shifted accuracy."""

    estimates: pd.DataFrame
    lines: pd.DataFrame
    categories: pd.DataFrame
    errors: pd.DataFrame
    meta: dict = field(default_factory=dict)

    TABLES = ("estimates", "lines", "categories", "errors")


def shifted_splits(store, split: str, shifted=None) -> list[str]:
    """The store's shifted splits of ``split`` matching ``shifted`` (names, comma string or
    wildcards; default ``<split>~*``)."""
    if shifted is None:
        shifted = f"{split}{SHIFT_SEP}*"
    pats = [s.strip() for s in shifted.split(",") if s.strip()] if isinstance(shifted, str) else list(shifted)
    out = []
    for pat in pats:
        hit = [s for s in store.splits if fnmatch.fnmatchcase(s, pat)]
        if not hit:
            raise DivergentError(f"no split matches {pat!r}" + (f" (splits: {', '.join(store.splits)})" if store.splits else ""),
                                 f"shifted splits are named {split}{SHIFT_SEP}<shift>, e.g. {split}{SHIFT_SEP}gaussian_noise-3")
        out += hit
    out = list(dict.fromkeys(out))
    bad = [s for s in out if not s.startswith(split + SHIFT_SEP)]
    if bad:
        raise DivergentError(f"{bad[0]!r} is not a shifted version of {split!r}",
                             f"shifted splits of {split!r} are named {split}{SHIFT_SEP}<shift>")
    return out


def _aligned(store, split: str, sh: str) -> np.ndarray:
    """Row order that puts the shifted split into the order of ``split``; checks ids and labels."""
    sd, ss = store.split(split), store.split(sh)
    order = align_ids(np.asarray(ss.ids).astype(str), np.asarray(sd.ids).astype(str),
                      what=f"shifted split {sh!r} against {split!r}")
    if np.asarray(sd.labels).ndim != 1:
        raise DivergentError(f"split {split!r} is multi-label; accuracy on the line needs one label per example",
                             "pick a single-label split")
    if not np.array_equal(np.asarray(ss.labels)[order], np.asarray(sd.labels)):
        raise DivergentError(f"shifted split {sh!r} has other labels than {split!r} for the same ids",
                             "a shifted split must hold the same examples and labels as its source split")
    return order


def _scores(store, model: str, split: str, temperature: float, kind: str, block: int = 8192) -> np.ndarray:
    """ATC scores of a model on a split from its probabilities by the reference arithmetic."""
    return np.concatenate([lm.atc_score(p, kind)
                           for _, p in reference_prob_blocks(store, model, split, temperature, block=block)])


def _stats(acc_id, acc_sh, agr_id, agr_sh, cat_codes: np.ndarray, n_cat: int) -> dict[str, np.ndarray]:
    """Every statistic with an interval, for point estimates (1-D inputs) or resamples (B, .)."""
    fa = lm.fit_line(lm.probit(acc_id), lm.probit(acc_sh))
    fg = lm.fit_line(lm.probit(agr_id), lm.probit(agr_sh))
    out = {f"accuracy_{k}": fa[k] for k in _PARAMS} | {f"agreement_{k}": fg[k] for k in _PARAMS}
    x, y = lm.probit(agr_id), lm.probit(agr_sh)
    res_g = y - (fg["slope"][..., None] * x + fg["bias"][..., None])
    res_a = y - (fa["slope"][..., None] * x + fa["bias"][..., None])
    lead = x.shape[:-1]
    per = {k: np.full(lead + (n_cat,), np.nan) for k in ("cat_slope", "cat_bias", "cat_r2", "cat_mean_residual",
                                                          "cat_rms_residual", "cat_mean_residual_acc_line")}
    for c in range(n_cat):
        mk = cat_codes == c
        if mk.sum() >= 2:
            f = lm.fit_line(x[..., mk], y[..., mk])
            per["cat_slope"][..., c], per["cat_bias"][..., c], per["cat_r2"][..., c] = f["slope"], f["bias"], f["r2"]
        if mk.any():
            per["cat_mean_residual"][..., c] = res_g[..., mk].mean(axis=-1)
            per["cat_rms_residual"][..., c] = np.sqrt((res_g[..., mk] ** 2).mean(axis=-1))
            per["cat_mean_residual_acc_line"][..., c] = res_a[..., mk].mean(axis=-1)
    return out | per


def _boot(correct_id, correct_sh, agree_id, agree_sh, cat_codes, n_cat, *, n_boot, seed, level):
    """Intervals of :func:`_stats` over resamples of the examples, with counts as weights (exact:
    integer sums below 2^24 are exact in float32)."""
    n = correct_id.shape[1]
    mats = [np.asarray(a, dtype=np.float32) for a in (correct_id, correct_sh, agree_id, agree_sh)]
    draws: dict[str, list] = {}
    gen = shared_resamples(n, n_boot=n_boot, seed=seed)
    for start in range(0, n_boot, _BOOT_CHUNK):
        k = min(_BOOT_CHUNK, n_boot - start)
        W = np.stack([np.bincount(next(gen), minlength=n) for _ in range(k)]).astype(np.float32)
        vals = [(W @ m.T).astype(np.float64) / n for m in mats]
        for key, v in _stats(*vals, cat_codes, n_cat).items():
            draws.setdefault(key, []).append(v)
    return {key: percentile_intervals(np.concatenate(v, axis=0), level) for key, v in draws.items()}


def lines(store, *, split: str = TEST, shifted=None, models=None, fit_on: str = HOLDOUT, calibrated: bool = True,
          atc: bool = True, atc_score: str = "negent", n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0,
          r2_min: float = lm.R2_MIN, allow_fit_on_eval: bool = False) -> LinesResult:
    """Accuracy and agreement on the line for every shifted split of ``split`` (see module doc).

    ``shifted``: names or wildcards of shifted splits (default ``<split>~*``). ATC fits its
    threshold on ``fit_on`` (labelled, in-distribution) with calibrated probabilities (the stored
    temperatures; ``calibrated=False`` uses T = 1); ``atc=False`` skips it. Every shifted split
    needs >= 3 models with predictions on it and on ``split``. Warns
    (:class:`LinesDoNotHoldWarning`) and flags ``lines_hold = False`` where the lines do not hold.
    """
    store = as_store(store)
    if split not in store.splits:
        raise unknown("split", split, store.splits)
    if atc_score not in lm.ATC_SCORES:
        raise DivergentError(f"unknown ATC score {atc_score!r}", f"use one of {', '.join(lm.ATC_SCORES)}")
    shifts = shifted_splits(store, split, shifted)
    if atc:
        check_fit_split(fit_on, split, allow_fit_on_eval)
        if fit_on not in store.splits:
            raise DivergentError(f"ATC fits its threshold on split {fit_on!r}, which the store lacks",
                                 "extract the holdout split (or pass --fit-on SPLIT, or --no-atc)")
    base_names = resolve_models(store, models, split=split, need="pred")
    cards = {m: store.card(m) for m in base_names}
    labels = np.asarray(store.split(split).labels)
    pred_id = {m: predictions(store, m, split) for m in base_names}
    est_rows, line_rows, cat_rows, err_rows = [], [], [], []
    for sh in shifts:
        order = _aligned(store, split, sh)
        names = [m for m in base_names if store.has_scores(m, sh) or store.has(m, sh, "pred")]
        if len(names) < 3:
            raise DivergentError(f"{len(names)} model(s) have predictions on both {split!r} and {sh!r}; the lines need >= 3",
                                 f"extract more models on {sh!r} (or restrict --shifted)")
        p_id = np.stack([pred_id[m] for m in names])
        p_sh = np.stack([predictions(store, m, sh)[order] for m in names])
        c_id, c_sh = p_id == labels, p_sh == labels
        pairs = lm.pair_index(len(names))
        a_id = p_id[pairs[:, 0]] == p_id[pairs[:, 1]]
        a_sh = p_sh[pairs[:, 0]] == p_sh[pairs[:, 1]]
        cats = np.array([card_category(cards[names[i]], cards[names[j]]) for i, j in pairs])
        cat_names = [c for c in CATEGORY_ORDER if c in set(cats)] + sorted(set(cats) - set(CATEGORY_ORDER))
        cat_codes = np.array([cat_names.index(c) for c in cats])
        acc_id, acc_sh = c_id.mean(axis=1), c_sh.mean(axis=1)
        agr_id, agr_sh = a_id.mean(axis=1), a_sh.mean(axis=1)
        point = _stats(acc_id, acc_sh, agr_id, agr_sh, cat_codes, len(cat_names))
        ci = (_boot(c_id, c_sh, a_id, a_sh, cat_codes, len(cat_names), n_boot=n_boot, seed=seed, level=level)
              if n_boot else {k: (np.full_like(v, np.nan), np.full_like(v, np.nan)) for k, v in point.items()})
        fits = {ln: {k: point[f"{ln}_{k}"] for k in _PARAMS} for ln in LINES}
        why = lm.line_checks(fits, {k: (float(v[0]), float(v[1])) for k, v in ci.items() if not k.startswith("cat_")},
                             r2_min)
        hold = not why
        if not hold:
            warnings.warn(LinesDoNotHoldWarning(f"{sh!r}: the lines do not hold ({'; '.join(why)}); "
                                                "ALine estimates are unreliable here"), stacklevel=2)
        est_s = lm.aline_s(acc_id, agr_id, agr_sh)["estimate"]
        est_d = lm.aline_d(acc_id, agr_id, agr_sh, pairs)["estimate"]
        est_atc = np.full(len(names), np.nan)
        if atc:
            y_fit = np.asarray(store.split(fit_on).labels)
            scored = [m for m in names if store.has_scores(m, sh) and store.has_scores(m, fit_on)]
            temps = temperatures(store, scored, calibrated=calibrated, split=sh)
            for i, m in enumerate(names):
                if m in temps:
                    t = lm.atc_threshold(_scores(store, m, fit_on, temps[m], atc_score),
                                         predictions(store, m, fit_on) == y_fit)
                    est_atc[i] = lm.atc_estimate(_scores(store, m, sh, temps[m], atc_score), t)
        for i, m in enumerate(names):
            est_rows.append({"model": m, "split": split, "shifted_split": sh, "acc_id": acc_id[i], "acc_true": acc_sh[i],
                             "aline_s": est_s[i], "aline_d": est_d[i], "atc": est_atc[i], "lines_hold": hold})
        for ln in LINES:
            row = {"split": split, "shifted_split": sh, "line": ln,
                   "n_points": len(names) if ln == "accuracy" else len(pairs)}
            for k in _PARAMS:
                row[k] = float(point[f"{ln}_{k}"])
                row[f"{k}_lo"], row[f"{k}_hi"] = (float(x) for x in ci[f"{ln}_{k}"])
            row["lines_hold"], row["why_not"] = hold, "; ".join(why)
            line_rows.append(row)
        for c, cname in enumerate(cat_names):
            row = {"split": split, "shifted_split": sh, "category": cname, "n_pairs": int((cat_codes == c).sum())}
            for k in ("slope", "bias", "r2", "mean_residual", "rms_residual", "mean_residual_acc_line"):
                row[k] = float(point[f"cat_{k}"][c])
                row[f"{k}_lo"], row[f"{k}_hi"] = float(ci[f"cat_{k}"][0][c]), float(ci[f"cat_{k}"][1][c])
            cat_rows.append(row)
        for meth, est in zip(METHODS, (acc_id, est_s, est_d, est_atc)):
            e = np.abs(np.asarray(est) - acc_sh)
            ok = np.isfinite(e)
            err_rows.append({"split": split, "shifted_split": sh, "method": meth,
                             "mae": float(e[ok].mean()) if ok.any() else np.nan,
                             "max_abs_error": float(e[ok].max()) if ok.any() else np.nan,
                             "n_models": int(ok.sum()), "lines_hold": hold})
    meta = {"split": split, "shifted": shifts, "fit_on": fit_on if atc else None, "calibrated": calibrated,
            "atc_score": atc_score if atc else None, "n_boot": n_boot, "level": level, "seed": seed, "r2_min": r2_min}
    res = LinesResult(pd.DataFrame(est_rows), pd.DataFrame(line_rows), pd.DataFrame(cat_rows), pd.DataFrame(err_rows), meta)
    for df in res.tables().values():
        df.attrs.update(meta)
    return res
