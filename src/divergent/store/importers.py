"""Import predictions made elsewhere: .npz arrays, or CSV/Parquet decision tables (e.g. timm's inference.py)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..cards import ModelCard
from ..errors import DivergentError
from .store import Store

NPZ_KINDS = ("logits", "probs", "pred", "scores", "features")
ID_COLUMNS = ("id", "ids", "filename", "file", "path", "image")


def import_predictions(store, file, *, split: str, model: str, card: ModelCard | dict | str | None = None,
                       renormalize: bool = False, force: bool = False, dataset: str = "",
                       id_col: str | None = None, pred_col: str = "index", score_col: str = "prob",
                       label_col: str | None = None, class_names: list[str] | None = None,
                       strip_id_prefix: str | None = None) -> dict:
    """Add one model's predictions on one split from `file` (.npz, .csv, .parquet).

    A split that does not exist yet is created from the file's labels, ids and class names.
    Otherwise rows are aligned to the split by id (when the file has ids) and labels must match.
    """
    path = Path(file)
    if not path.exists():
        raise DivergentError(f"no such file: {path}")
    store = store if isinstance(store, Store) else Store.open(store, create=True)
    if isinstance(card, (str, Path)):
        card = ModelCard.load(card)
    if path.suffix == ".npz":
        data = _read_npz(path)
    elif path.suffix in (".csv", ".parquet", ".pq"):
        data = _read_table(path, id_col=id_col, pred_col=pred_col, score_col=score_col, label_col=label_col,
                           class_names=class_names or (store.split(split).class_names if split in store.splits else None))
    else:
        raise DivergentError(f"cannot import {path.name}: unknown file type", "give a .npz, .csv or .parquet file")
    ids = data.pop("ids", None)
    if ids is not None and strip_id_prefix:
        ids = np.asarray([str(i).removeprefix(strip_id_prefix) for i in ids])
    labels = data.pop("labels", None)
    names = data.pop("class_names", None) or class_names
    arrays = {k: v for k, v in data.items() if k in NPZ_KINDS}
    with store.writer(command=f"import {path} --split {split} --model {model}") as w:
        if split not in w._m["splits"]:
            if labels is None:
                raise DivergentError(f"split {split!r} does not exist and {path.name} has no labels to create it",
                                     "add a `labels` array (npz) or --label-col (CSV), or create the split first")
            if labels.ndim == 1:
                n_classes = _n_classes(arrays, labels, names)
                names = names or [str(c) for c in range(n_classes)]
            if ids is None:
                ids = np.asarray([str(i) for i in range(len(labels))])
            w.add_split(split, labels=labels, class_names=names, ids=ids, dataset=dataset)
        elif names is not None and list(names) != w.store.split(split).class_names:
            raise DivergentError(f"class names in {path.name} differ from split {split!r}'s",
                                 "map the model's classes to the split's, or import into another split")
        w.put(model, split, card=card, force=force, renormalize=renormalize, ids=ids, labels=labels,
              meta={"imported_from": path.name}, **arrays)
        if renormalize and w._m["models"][model]["splits"][split]["meta"].get("renormalized"):
            c = ModelCard.from_dict(w._m["models"][model]["card"])
            w.set_card(model, c.replace(notes=(c.notes + " probabilities renormalised on import").strip()))
    return {"model": model, "split": split, "kinds": sorted(arrays)}


def _n_classes(arrays: dict, labels: np.ndarray, names) -> int:
    for k in ("logits", "probs"):
        if k in arrays:
            return int(arrays[k].shape[1])
    if names:
        return len(names)
    return int(labels.max()) + 1


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise DivergentError(f"{path.name} could not be read without pickle ({exc})",
                             "save plain numeric/string arrays (np.savez with str ids, not objects)") from None
    unknown_keys = sorted(set(data) - set(NPZ_KINDS) - {"labels", "ids", "class_names"})
    if unknown_keys:
        raise DivergentError(f"{path.name} has unknown arrays {unknown_keys}",
                             f"use keys labels, ids, class_names and any of {', '.join(NPZ_KINDS)}")
    if "class_names" in data:
        data["class_names"] = [str(c) for c in data["class_names"].tolist()]
    if "ids" in data:
        data["ids"] = np.asarray([str(i) for i in data["ids"].tolist()])
    if not any(k in data for k in NPZ_KINDS):
        raise DivergentError(f"{path.name} holds no predictions", f"add one of {', '.join(NPZ_KINDS)}")
    return data


def _list_cell(v):
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            return ast.literal_eval(v) if re.fullmatch(r"\[[\d\s,.eE+-]*\]", v) else json.loads(v)
        return [float(x) for x in v.split()] if " " in v else [float(v)]
    if isinstance(v, (list, tuple, np.ndarray)):
        return list(v)
    return [v]


def _columns(df: pd.DataFrame, prefix: str) -> np.ndarray | None:
    if prefix in df.columns:
        return np.asarray([_list_cell(v) for v in df[prefix]], dtype=np.float64)
    cols = sorted((c for c in df.columns if re.fullmatch(rf"{re.escape(prefix)}_?\d+", str(c))),
                  key=lambda c: int(re.findall(r"\d+$", str(c))[0]))
    if cols:
        return df[cols].to_numpy(dtype=np.float64)
    return None


def _read_table(path: Path, *, id_col, pred_col, score_col, label_col, class_names) -> dict:
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    out: dict = {}
    if id_col is None:
        id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
    elif id_col not in df.columns:
        raise DivergentError(f"{path.name} has no column {id_col!r}", f"columns are: {', '.join(map(str, df.columns))}")
    if id_col is not None:
        out["ids"] = np.asarray([str(x).replace("\\", "/") for x in df[id_col]])
    pred = _columns(df, pred_col)
    if pred is None:
        raise DivergentError(f"{path.name} has no prediction column {pred_col!r} (or {pred_col}_0, {pred_col}_1, ...)",
                             f"name it with --pred-col; columns are: {', '.join(map(str, df.columns))}")
    if not np.all(pred == np.round(pred)):
        raise DivergentError(f"prediction column {pred_col!r} of {path.name} does not hold integer class ids")
    out["pred"] = pred.astype(np.int64)
    scores = _columns(df, score_col)
    if scores is not None:
        if scores.shape != pred.shape:
            raise DivergentError(f"{path.name}: {score_col!r} has shape {scores.shape}, predictions {pred.shape}")
        out["scores"] = scores
    if label_col is not None:
        if label_col not in df.columns:
            raise DivergentError(f"{path.name} has no label column {label_col!r}")
        lab = df[label_col]
        if lab.dtype == object:
            if not class_names:
                raise DivergentError("labels are class names but the class list is unknown",
                                     "pass --class-names or import into an existing split")
            index = {c: i for i, c in enumerate(class_names)}
            bad = sorted(set(lab) - set(index))
            if bad:
                raise DivergentError(f"unknown class names in labels: {bad[:5]}")
            out["labels"] = np.asarray([index[x] for x in lab], dtype=np.int64)
        else:
            out["labels"] = lab.to_numpy(dtype=np.int64)
    return out
