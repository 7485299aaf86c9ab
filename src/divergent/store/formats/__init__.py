"""Import predictions (:func:`import_predictions`): this project's .npz / CSV / Parquet files
(divergent.store.importers), or other projects' files: model-vs-human raw data, imagenet-testbed
evaluations, timm's inference.py results (every output format).

Each reader turns its files into :class:`Entry` objects (one model's arrays on one split, plus
what a new split needs); :func:`write_entries` validates all of them against the store with the
store's own checks — in memory, nothing written — and only then writes them in one writer. A
bad file is a DivergentError with a fix and leaves the store as it was.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...cards import ModelCard
from ...conventions import check_name
from ...errors import DivergentError, unknown
from ..importers import _DryStore, _DryWriter, _check_rows, _new_split, _open_if_present, _read_card, import_file
from ..reader import Store

#: --format names -> module (each has read(path, **options) -> list[Entry])
FORMATS = {"model-vs-human": "model_vs_human", "imagenet-testbed": "imagenet_testbed", "timm": "timm_outputs"}


@dataclass
class Entry:
    """One model's arrays on one split, and the split's labels/ids/classes if it must be created."""

    split: str
    model: str
    arrays: dict
    labels: np.ndarray | None = None
    ids: np.ndarray | None = None
    class_names: list[str] | None = None
    dataset: str = ""
    split_meta: dict = field(default_factory=dict)
    card: ModelCard | None = None
    meta: dict = field(default_factory=dict)


def import_predictions(store, file, *, split: str | None = None, model: str | None = None,
                       card: ModelCard | dict | str | None = None,
                       renormalize: bool = False, force: bool = False, dataset: str = "",
                       id_col: str | None = None, pred_col: str = "index", score_col: str = "prob",
                       label_col: str | None = None, class_names: list[str] | None = None,
                       strip_id_prefix: str | None = None, format: str | None = None,
                       shift: str | None = None) -> dict | list[dict]:
    """Add one model's predictions on one split from `file` (.npz, .csv, .parquet).

    A split that does not exist yet is created from the file's labels, ids and class names.
    Otherwise rows are aligned to the split by id (when the file has ids) and labels must match.
    Nothing is created or written unless the whole import is valid. `format` reads another
    project's files instead (:func:`import_format`; a list of {model, split, kinds}).
    """
    if format is not None:
        return import_format(store, file, format=format, split=split, model=model, card=card, force=force,
                             dataset=dataset, id_col=id_col, pred_col=pred_col, score_col=score_col,
                             label_col=label_col, class_names=class_names, strip_id_prefix=strip_id_prefix,
                             renormalize=renormalize, shift=shift)
    return import_file(store, file, split=split, model=model, card=card, renormalize=renormalize, force=force,
                       dataset=dataset, id_col=id_col, pred_col=pred_col, score_col=score_col, label_col=label_col,
                       class_names=class_names, strip_id_prefix=strip_id_prefix)


def import_format(store, path, *, format: str, split: str | None = None, model: str | None = None,
                  card=None, force: bool = False, dataset: str = "", id_col: str | None = None,
                  pred_col: str = "index", score_col: str = "prob", label_col: str | None = None,
                  class_names=None, strip_id_prefix: str | None = None, renormalize: bool = False,
                  shift: str | None = None) -> list[dict]:
    """Read `path` in the named format and add what it holds to `store` (all or nothing).

    The CSV options name timm's renamed columns (--id-col: --filename-col, --pred-col: --index-col,
    --score-col: --output-col); --shift is imagenet-testbed's evaluation setting."""
    import importlib

    if format not in FORMATS:
        raise unknown("import format", format, FORMATS)
    options: dict = {}
    if format == "timm":
        options = {"filename_col": id_col or "filename", "index_col": pred_col,
                   "output_col": None if score_col == "prob" else score_col, "strip_id_prefix": strip_id_prefix}
        if label_col is not None:
            options["label_col"] = label_col
    else:
        given = [o for o, v in (("--id-col", id_col), ("--label-col", label_col), ("--class-names", class_names),
                                ("--strip-id-prefix", strip_id_prefix), ("--renormalize", renormalize or None))
                 if v is not None] + (["--pred-col"] if pred_col != "index" else []) + (["--score-col"] if score_col != "prob" else [])
        if given:
            raise DivergentError(f"--format {format} takes no {', '.join(given)}",
                                 "drop them: ids, labels and classes come from the files")
    if shift is not None:
        if format != "imagenet-testbed":
            raise DivergentError(f"--shift is for --format imagenet-testbed, not {format}", "drop --shift")
        options["shift"] = shift
    path = Path(path)
    if not path.exists():
        raise DivergentError(f"no such file or directory: {path}", "check the path to import")
    existing = store if isinstance(store, Store) else _open_if_present(Path(store))
    mod = importlib.import_module(f"{__name__}.{FORMATS[format]}")
    entries = mod.read(path, split=split, model=model, dataset=dataset, store=existing, **options)
    if card is not None:
        if len({e.model for e in entries}) != 1:
            raise DivergentError(f"--card names one model but {path.name} holds {len({e.model for e in entries})}",
                                 "import without --card (cards come from the files), or one model at a time")
        c = _read_card(card, entries[0].model)
        for e in entries:
            e.card = c
    root = existing.root if existing is not None else Path(store)
    return write_entries(root, entries, existing=existing, force=force, command=f"import {path} --format {format}")


class _Overlay(_DryStore):
    """A store's manifest copied into memory: new arrays live in memory, old ones are read from disk."""

    def __init__(self, store: Store | None, root: Path):
        super().__init__(root)
        if store is not None:
            self._m = copy.deepcopy(store.manifest)

    def _load(self, info: dict, verify: bool = False) -> np.ndarray:
        if info["path"] in self.memory:
            return self.memory[info["path"]]
        return Store._load(self, info, verify=verify)


def _apply(w, entries: list[Entry], *, force: bool) -> None:
    for e in entries:
        split = check_name(e.split, "split")
        model = check_name(e.model, "model")
        where = Path(e.meta.get("imported_from", e.split))
        _check_rows(where, e.arrays, e.labels, e.ids)
        if split not in w._m["splits"]:
            labels, names, ids = _new_split(where, split, e.arrays, e.labels, e.class_names, e.ids)
            w.add_split(split, labels=labels, class_names=names, ids=ids, dataset=e.dataset, meta=e.split_meta)
        elif e.class_names is not None and list(e.class_names) != w.store.split(split).class_names:
            raise DivergentError(f"{where.name}: class names differ from split {split!r}'s",
                                 "map the model's classes to the split's, or import into another split")
        card = e.card
        if card is None and model not in w._m["models"]:
            card = ModelCard(name=model)
        w.put(model, split, card=card, force=force, ids=e.ids, labels=e.labels, meta=e.meta, **e.arrays)


def write_entries(root, entries: list[Entry], *, existing: Store | None = None, force: bool = False,
                  command: str = "import") -> list[dict]:
    """Validate every entry in memory against the store (its splits, ids, labels, classes), then write."""
    root = Path(root)
    if not entries:
        raise DivergentError("nothing to import", "give files that hold predictions")
    dry = _DryWriter(_Overlay(existing, root), None)
    _apply(dry, entries, force=force)
    # validation done: now create or write
    st = existing if existing is not None else Store.create(root)
    with st.writer(command=command) as w:
        _apply(w, entries, force=force)
    return [{"model": e.model, "split": e.split, "kinds": sorted(e.arrays)} for e in entries]
