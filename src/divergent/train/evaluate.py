"""Evaluation of trained zoo models on the holdout/test halves (evaluation only; nothing is fitted here).

Used for the table in docs/zoo.md: accuracy on `test` (the seeded stratified half of the official
test set, docs/conventions.md), the category derived from the cards, and the training wall time.
"""
from __future__ import annotations

import numpy as np

from ..cards import category
from ..conventions import HOLDOUT, TEST
from ..data.splits import stratified_halves
from ..errors import DivergentError


def eval_split(dataset: str, split: str = TEST) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of the holdout or test half of the official test set."""
    if split not in (HOLDOUT, TEST):
        raise DivergentError(f"eval_split serves {HOLDOUT!r} and {TEST!r}, not {split!r}")
    if dataset != "fashion-mnist":
        raise DivergentError(f"eval_split reads only fashion-mnist, not {dataset!r}",
                             "use divergent.data readers for other datasets")
    from .data import FMNIST_DIR, read_idx

    x = read_idx(FMNIST_DIR / "t10k-images-idx3-ubyte.gz")
    y = read_idx(FMNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    h, t = stratified_halves(y)
    idx = h if split == HOLDOUT else t
    return x[idx], y[idx]


def zoo_table(trained: list, split: str = TEST):
    """One row per model: name, family, objective, head, category vs trained[0], accuracy, wall time."""
    import pandas as pd

    from .trainer import predict

    if not trained:
        raise DivergentError("zoo_table needs at least one trained model")
    images, labels = eval_split(trained[0].recipe.dataset, split)
    base = trained[0].card
    rows = []
    for tm in trained:
        logits, _ = predict(tm, images)
        rows.append({
            "model": tm.name, "family": tm.card.family, "depth": tm.card.depth, "width": tm.card.width,
            "objective": tm.card.objective, "head": tm.card.head, "subset": tm.card.subset,
            "seed": tm.card.seed, "category": category(base, tm.card),
            f"{split}_accuracy": float((np.argmax(logits, axis=1) == labels).mean()),
            "train_examples": tm.card.provenance.get("train_examples"),
            "epochs": tm.recipe.epochs, "train_wall_s": tm.train_wall_s, "head_fit_s": tm.head_fit_s,
        })
    return pd.DataFrame(rows)
