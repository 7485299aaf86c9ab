"""Store-level temperature calibration (Section 3.2): fit T per model on the holdout, record it."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._files import crash_point
from ..conventions import HOLDOUT, TEST, check_fit_split
from ..errors import DivergentError
from ..metrics.calibration import ece, fit_temperature, nll
from ..metrics.probs import log_probs_from_probs, reference_probs
from ..store import Store
from ._select import as_store, resolve_models


def _logits_of(store: Store, model: str, split: str) -> np.ndarray:
    kind, arr = store.scores(model, split)
    return np.asarray(arr, dtype=np.float32) if kind == "logits" else log_probs_from_probs(arr)


def _scores_sha(store: Store, model: str, split: str) -> str | None:
    for kind in ("logits", "probs"):
        if store.has(model, split, kind):
            return store.content_hash(model, split, kind)
    return None


def _fit_row(store: Store, m: str, fit_on: str, report_on: str | None) -> tuple[dict, str | None]:
    """Fit the temperature of `m` on `fit_on` (and report on `report_on`); records what it read."""
    split = store.split(fit_on)
    sha = _scores_sha(store, m, fit_on)
    z = _logits_of(store, m, fit_on)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_temperature(z, split.labels)
    for w in caught:
        warnings.warn(f"{m}: {w.message}", stacklevel=3)
    row = {"model": m, "temperature": fit.temperature, "at_bound": fit.at_bound,
           "nll_before": fit.nll_before, "nll_after": fit.nll_after,
           "ece_before": ece(reference_probs(z, 1.0), split.labels),
           "ece_after": ece(reference_probs(z, fit.temperature), split.labels), "missing_reason": ""}
    if report_on is not None and store.has_scores(m, report_on):
        ze, lab = _logits_of(store, m, report_on), store.split(report_on).labels
        row.update({f"nll_before_{report_on}": nll(ze, lab, 1.0), f"nll_after_{report_on}": nll(ze, lab, fit.temperature),
                    f"ece_before_{report_on}": ece(reference_probs(ze, 1.0), lab),
                    f"ece_after_{report_on}": ece(reference_probs(ze, fit.temperature), lab)})
    return row, sha


def calibrate(store, *, fit_on: str = HOLDOUT, models=None, report_on: str | None = None,
              allow_fit_on_eval: bool = False, progress: bool = True) -> pd.DataFrame:
    """Fit a temperature per model by minimising NLL on `fit_on`, store it, return a table.

    Columns: model, temperature, at_bound, nll_before, nll_after, ece_before, ece_after
    (on `fit_on`; lower is better), plus the same on `report_on` when given.
    Decision-only models are listed with a reason instead of a temperature.
    The fits run without the store's lock; under the lock, a model whose `fit_on` scores were
    replaced meanwhile (e.g. by `import --force`) is fitted again on what the store holds then, so
    a temperature is always recorded with the hash of the scores it was fitted on.
    """
    store = as_store(store)
    if fit_on == TEST:
        check_fit_split(fit_on, TEST, allow_fit_on_eval)
    if report_on is not None:
        check_fit_split(fit_on, report_on, allow_fit_on_eval)
    names = resolve_models(store, models, split=fit_on, need=None)
    split = store.split(fit_on)
    if split.multilabel:
        raise DivergentError(f"split {fit_on!r} is multi-label; temperature scaling needs single-label data")
    rows, fits = [], {}
    from tqdm.auto import tqdm

    for m in tqdm(names, desc="calibrate", disable=not progress, leave=False):
        if not store.has_scores(m, fit_on):
            rows.append({"model": m, "temperature": np.nan, "missing_reason": "decision-only model (no probabilities)"})
            continue
        row, sha = _fit_row(store, m, fit_on, report_on)
        rows.append(row)
        fits[m] = (row, sha)
    crash_point("calibrate-fitted")
    with store.writer(command=f"calibrate --fit-on {fit_on}") as w:
        for m, (r, sha) in fits.items():
            if m not in w.store.models:
                r.update(temperature=np.nan, missing_reason="removed from the store during the fit")
                continue
            now = _scores_sha(w.store, m, fit_on)
            if now is None:
                r.update(temperature=np.nan, missing_reason=f"no scores on {fit_on!r} any more")
                continue
            if now != sha:  # replaced while we fitted: fit again on what the store holds now, under the lock
                new, sha = _fit_row(w.store, m, fit_on, report_on)
                r.clear()
                r.update(new)
            w.set_temperature(m, r["temperature"], fit_on=fit_on, fitted_on_sha256=sha, nll_before=r["nll_before"],
                              nll_after=r["nll_after"], ece_before=r["ece_before"], ece_after=r["ece_after"],
                              at_bound=r["at_bound"])
    return pd.DataFrame(rows)
