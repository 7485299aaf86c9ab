"""Evaluation of trained zoo models on the holdout/test halves (evaluation only; nothing is fitted here).

Used for the table in docs/zoo.md: accuracy on `test` (the seeded stratified half of the official
test set, docs/conventions.md), the category derived from the cards, and the training wall time.
"""
from __future__ import annotations

import numpy as np

from ..cards import category
from ..conventions import HOLDOUT, TEST
from ..errors import DivergentError


def eval_split(dataset: str, split: str = TEST, shift=None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of the holdout or test half of the official test set; with a shift
    (a divergent.data.shift.Shift or a spec naming one, e.g. 'gaussian_noise:3'), of its corrupted
    copy, the same pixels `divergent extract --shift` gives every model (generated once, cached)."""
    if split not in (HOLDOUT, TEST):
        raise DivergentError(f"eval_split serves {HOLDOUT!r} and {TEST!r}, not {split!r}")
    from .data import SOURCES, images_of

    if dataset not in SOURCES:
        raise DivergentError(f"no evaluation reader for dataset {dataset!r}", f"use one of {', '.join(SOURCES)}")
    if shift is not None:
        from ..data import open_dataset
        from ..data.shift import parse_shifts, shifted

        shifts = parse_shifts(shift)
        if len(shifts) != 1:
            raise DivergentError(f"eval_split takes one shift; {shift!r} names {len(shifts)}", "loop over the shifts")
        ds = shifted(open_dataset(SOURCES[dataset], split), shifts[0])
        return np.ascontiguousarray(ds.array()), np.asarray(ds.labels, dtype=np.int64)
    ti = images_of(SOURCES[dataset], split, dataset)
    return ti.images, ti.labels


def zoo_table(trained: list, split: str = TEST, shift=None):
    """One row per model: name, family, objective, head, category vs trained[0], accuracy, wall time
    (accuracy on the shifted copy of the split when a shift is given: column `<split>~<shift>_accuracy`)."""
    import pandas as pd

    from .trainer import predict

    if not trained:
        raise DivergentError("zoo_table needs at least one trained model")
    images, labels = eval_split(trained[0].recipe.dataset, split, shift)
    if shift is not None:
        from ..data.shift import parse_shifts

        split = parse_shifts(shift)[0].split_name(split)
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


def random_init_probe(recipe, split: str = TEST) -> float:
    """Accuracy of a linear head fitted on the features of the *untrained* encoder of `recipe`
    (same data, same head fit) — the floor a label-free Framework model must beat to mean anything."""
    import torch

    from .data import load_split
    from .objectives import fit_linear_head
    from .trainer import _batched, _modules, _normalizer, _to_nchw_uint8, training_indices

    data = load_split(recipe.dataset)
    idx = training_indices(recipe)
    model, _ = _modules(recipe, "cpu")
    model.eval()
    norm = _normalizer(recipe.dataset, "cpu")
    feats = _batched(model, _to_nchw_uint8(data.images[idx], recipe.dataset), norm, "cpu", want="features")
    W, b = fit_linear_head(feats, torch.from_numpy(data.labels[idx]), n_classes=10, l2=recipe.probe_l2)
    x, y = eval_split(recipe.dataset, split)
    f = _batched(model, _to_nchw_uint8(x, recipe.dataset), norm, "cpu", want="features")
    return float(((f @ W.t() + b).argmax(1).numpy() == y).mean())


def main(argv: list[str] | None = None) -> None:
    """python -m divergent.train.evaluate ZOO OUT_DIR [THREADS]: train (or load) a zoo, print a markdown table."""
    import sys
    import time

    import torch

    from .recipes import zoo
    from .trainer import train_recipe

    args = list(sys.argv[1:] if argv is None else argv)
    name, out = args[0], args[1]
    threads = int(args[2]) if len(args) > 2 else None
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    trained = [train_recipe(r, out, progress=False) for r in zoo(name)]
    total = time.perf_counter() - t0
    df = zoo_table(trained)
    framework = [tm.recipe for tm in trained if tm.recipe.head == "linear-probe"]
    if framework:
        print(f"random-init encoder + linear head ({framework[0].family}): "
              f"{random_init_probe(framework[0]):.4f}")
    print(f"zoo {name}: {len(trained)} models, wall {total:.1f} s this call, "
          f"sum of recorded training time {df.train_wall_s.sum():.1f} s")
    print(markdown(df))


def markdown(df) -> str:
    """A pandas DataFrame as a GitHub markdown table (no tabulate dependency)."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
