"""Small public entry points that are not an analysis of their own (cards table, open/verify)."""
from __future__ import annotations

import pandas as pd

from .analyses._select import as_store
from .cards import category
from .errors import unknown


def cards_table(store, *, base: str | None = None) -> pd.DataFrame:
    """One row per model: its card fields, and its category relative to `base` when given."""
    store = as_store(store)
    rows = []
    cards = store.cards()
    if base is not None and base not in cards:
        raise unknown("base model", base, cards)
    for name, c in cards.items():
        row = {"model": name, "family": c.family, "depth": c.depth, "width": c.width, "objective": c.objective,
               "train_data": c.train_data, "subset": c.subset, "head": c.head, "seed": c.seed, "source": c.source,
               "temperature": store.temperature(name)}
        if base is not None:
            row["category"] = category(cards[base], c)
        rows.append(row)
    return pd.DataFrame(rows)


def open_store(path, *, create: bool = False):
    from .store import Store

    return Store.open(path, create=create)


class LinesTable(pd.DataFrame):
    """What :func:`lines` returns: a DataFrame of the per-model estimates (one row per model and
    shifted split: acc_id, acc_true, aline_s, aline_d, atc, lines_hold), carrying the other tables
    of :func:`divergent.analyses.lines.lines` as attributes: ``.lines`` (the fitted lines),
    ``.categories`` (the agreement line per pair category), ``.errors`` (each estimator's error),
    ``.meta``; ``.tables()`` maps all four names to their DataFrames."""

    _metadata = ["lines", "categories", "errors", "meta"]

    @property
    def _constructor(self):
        return LinesTable

    @property
    def estimates(self) -> pd.DataFrame:
        return pd.DataFrame(self)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"estimates": self.estimates, "lines": self.lines, "categories": self.categories, "errors": self.errors}


def lines(store, **kw) -> LinesTable:
    """Accuracy and agreement on the line (:func:`divergent.analyses.lines.lines`, same arguments)
    as a DataFrame of the per-model estimates with the other tables as attributes (:class:`LinesTable`)."""
    from .analyses.lines import lines as _lines

    res = _lines(store, **kw)
    out = LinesTable(res.estimates)
    out.lines, out.categories, out.errors, out.meta = res.lines, res.categories, res.errors, res.meta
    out.attrs.update(res.estimates.attrs)
    return out


def cka(store, **kw) -> pd.DataFrame:
    """Linear CKA of every pair of models with embeddings (:func:`divergent.analyses.cka.cka`, same
    arguments): model_a, model_b, category, cka, cka_lo, cka_hi."""
    from .analyses.cka import cka as _cka

    return _cka(store, **kw)


def shift_pairs(store, **kw) -> pd.DataFrame:
    """The base's pair metrics on a split and each of its shifted splits
    (:func:`divergent.analyses.shift.shift_pairs`, same arguments) as one DataFrame, with the
    category means and the findings as attributes (:class:`ShiftTable`)."""
    from .analyses.shift import shift_pairs as _sp

    res = _sp(store, **kw)
    out = ShiftTable(res.pairs)
    out.categories, out.findings, out.meta = res.categories, res.findings, res.meta
    out.attrs.update(res.pairs.attrs)
    return out


class ShiftTable(pd.DataFrame):
    """What :func:`shift_pairs` returns: the pairs of every split (columns split, shift,
    corruption, severity, then the pairs table's), with ``.categories`` (category means per split),
    ``.findings`` (does the ordering persist?) and ``.meta``."""

    _metadata = ["categories", "findings", "meta"]

    @property
    def _constructor(self):
        return ShiftTable
