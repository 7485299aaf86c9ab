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
