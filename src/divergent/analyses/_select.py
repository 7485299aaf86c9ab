"""Shared selection helpers for analyses: open a store, resolve model names/patterns, accuracy bands."""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DivergentError, unknown
from ..metrics.probs import log_probs_from_probs, reference_probs
from ..store import Store

#: rows of probabilities computed at once
BLOCK = 4096


def as_store(store) -> Store:
    """A Store (or any object with the store's read API) as is; a path is opened."""
    if isinstance(store, (str, os.PathLike)):
        return Store.open(Path(store))
    return store


def resolve_models(store: Store, models=None, *, split: str | None = None, need: str | None = "scores") -> list[str]:
    """Model names from a list, comma string or wildcard patterns (None = every model).

    With `split`, keep models that have predictions on it; `need='scores'` requires
    logits/probabilities, `need='pred'` accepts decision-only models too.
    """
    if split is not None:
        store.split(split)  # unknown split -> error with suggestions
    if models is None:
        names = store.models
    else:
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        names = []
        for pat in models:
            if any(ch in pat for ch in "*?["):
                hit = [m for m in store.models if fnmatch.fnmatchcase(m, pat)]
                if not hit:
                    raise DivergentError(f"no model matches {pat!r}", "list models with `divergent cards STORE`")
                names += hit
            elif pat in store.models:
                names.append(pat)
            else:
                raise unknown("model", pat, store.models)
        names = list(dict.fromkeys(names))
    if split is None or need is None:
        return names
    out = []
    for m in names:
        if store.has_scores(m, split) or (need == "pred" and store.has(m, split, "pred")):
            out.append(m)
    return out


def predictions(store: Store, model: str, split: str) -> np.ndarray:
    """Top-1 class ids (the argmax of the scores, ties to the lowest index; T does not change it)."""
    return store.predictions(model, split)


def reference_prob_blocks(store: Store, model: str, split: str, temperature: float, *, block: int = BLOCK
                          ) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, float64 probabilities) blocks of a model's scores on a split at `temperature`, by
    the reference arithmetic (stored probabilities enter as float32 logits log(p)). The
    temperature comes from :func:`temperatures`, which refuses a missing or same-split fit."""
    kind, arr = store.scores(model, split)
    for s in range(0, arr.shape[0], block):
        x = np.asarray(arr[s : s + block])
        yield s, reference_probs(log_probs_from_probs(x) if kind == "probs" else x, temperature)


def accuracies(store: Store, models: list[str], split: str) -> dict[str, float]:
    labels = store.split(split).labels
    return {m: float(np.mean(predictions(store, m, split) == labels)) for m in models}


def percent_to_fraction(x: float) -> float:
    """x percent as a fraction, read as the decimal written: 99.9 -> 0.999 (the double nearest
    0.999), where 99.9 / 100 gives 0.9990000000000001 and would miss an accuracy of exactly 0.999."""
    from decimal import Decimal

    return float(Decimal(repr(float(x))).scaleb(-2))


def fraction(x: float) -> float:
    """An accuracy given as a fraction (0.78) or a percent (78, anything above 1) as a fraction."""
    x = float(x)
    return percent_to_fraction(x) if x > 1.0 else x


def parse_band(band) -> tuple[float, float] | None:
    """'0.74,0.78' or '74,78' or (lo, hi) -> fractions (lo, hi); None passes through."""
    if band is None or band == "":
        return None
    if isinstance(band, str):
        try:
            lo, hi = (float(x) for x in band.split(","))
        except ValueError:
            raise DivergentError(f"cannot read accuracy band {band!r}", "write it as LO,HI, e.g. 0.74,0.78 or 74,78") from None
    else:
        lo, hi = (float(x) for x in band)
    if hi > 1.0 or lo > 1.0:
        lo, hi = percent_to_fraction(lo), percent_to_fraction(hi)
    if not (0.0 <= lo <= hi <= 1.0):
        raise DivergentError(f"accuracy band {band!r} is not an interval within [0, 1]", "e.g. --acc-band 0.74,0.78")
    return lo, hi


def in_band(acc: dict[str, float], band) -> list[str]:
    b = parse_band(band)
    if b is None:
        return list(acc)
    return [m for m, a in acc.items() if b[0] <= a <= b[1]]


def temperatures(store: Store, models: list[str], *, calibrated: bool, split: str) -> dict[str, float]:
    """Each model's temperature (1.0 when uncalibrated); refuses a missing or same-split fit."""
    if not calibrated:
        return {m: 1.0 for m in models}
    out, missing = {}, []
    for m in models:
        cal = store.calibration(m)
        if cal is None:
            missing.append(m)
            continue
        if cal.get("fit_on") == split:
            raise DivergentError(
                f"the temperature of {m!r} was fitted on {split!r}, the split being evaluated",
                "refit with `divergent calibrate STORE --fit-on holdout` and evaluate on test")
        out[m] = float(cal["temperature"])
    if missing:
        raise DivergentError(
            f"{len(missing)} model(s) have no temperature yet (e.g. {missing[:3]})",
            "run `divergent calibrate STORE --fit-on holdout` first, or pass --uncalibrated (calibrated=False)")
    return out


class NamedTables:
    """An analysis result holding named tables: ``TABLES`` lists them; ``result.tables()`` maps each
    name to its DataFrame and ``result[name]`` reads one (an unknown name is refused)."""

    TABLES: tuple[str, ...] = ()

    def tables(self) -> dict:
        return {name: getattr(self, name) for name in self.TABLES}

    def __getitem__(self, name: str):
        if name not in self.TABLES:
            raise unknown("table", name, self.TABLES)
        return getattr(self, name)
