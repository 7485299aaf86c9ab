"""timm's ``inference.py`` results, in every ``--results-format``: csv, json (``orient='index'``,
keyed by file name), json-records (one JSON object per line), json-split (``columns`` + ``data``)
and parquet (the file name as the index).

Columns (timm's defaults; renamed with --filename-col / --index-col / --label-col / --output-col):
``filename``; ``index`` (with ``--include-index``) and/or ``label`` (a class description such as
``tench, Tinca tinca``, or a WordNet id with ``--label-type name``); ``prob`` or ``logit``
(``--output-type logit``). With ``--topk K`` each cell holds K values (a list, or with
``--results-separate-col`` the columns ``index_0`` ... ``index_{K-1}``); with ``--topk 0`` the
outputs are the full score vector (no index or label column) and become the model's
probabilities or logits. Decisions (top-k ids) become ``pred`` with their ``scores``.

timm has no labels: the split must exist already (extract or import a labelled file first).
File names are base names unless timm ran with ``--fullname``: they are matched to the split's ids
by the whole id, else by its last path part when that is unique in the split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DivergentError
from ...sources.timm_names import card_from_name
from . import Entry

_FIX_FORMAT = "give a file written by timm's inference.py (--results-format csv, json, json-records, json-split or parquet)"


def _frame(path: Path, filename_col: str) -> pd.DataFrame:
    from ..importers import _read_frame, _why

    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        df = _read_frame(path)
        if filename_col not in df.columns and df.index.name == filename_col:
            df = df.reset_index()  # parquet: timm writes df.set_index(filename_col)
        return df
    if suffix not in (".json", ".jsonl"):
        raise DivergentError(f"cannot import {path.name}: unknown file type {path.suffix or '(none)'!r}", _FIX_FORMAT)
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        raise DivergentError(f"{path.name} is empty", _FIX_FORMAT)
    try:
        if text.startswith("{") and "\n{" in text and not text.startswith("{\n"):
            raise ValueError("json lines")
        obj = json.loads(text)
    except ValueError:
        try:  # json-records: one object per line
            return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])
        except ValueError as exc:
            raise DivergentError(f"{path.name} is not readable JSON ({_why(exc)})",
                                 f"it may be truncated: {_FIX_FORMAT}") from None
    if isinstance(obj, dict) and "columns" in obj and "data" in obj:  # json-split
        try:
            return pd.DataFrame(obj["data"], columns=obj["columns"])
        except (ValueError, TypeError) as exc:
            raise DivergentError(f"{path.name}: 'data' does not fit 'columns' ({_why(exc)})", _FIX_FORMAT) from None
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values()):  # json (orient=index)
        df = pd.DataFrame.from_dict(obj, orient="index")
        df.index.name = filename_col
        return df.reset_index()
    if isinstance(obj, list) and all(isinstance(v, dict) for v in obj):
        return pd.DataFrame(obj)
    raise DivergentError(f"{path.name} is JSON but not one of timm's layouts (index, records, split)", _FIX_FORMAT)


def _label_ids(df: pd.DataFrame, col: str, path: Path) -> np.ndarray | None:
    """Class ids from timm's label column(s): WordNet ids, or ImageNet-1k descriptions (unique ones)."""
    from ...data.imagenet import imagenet_names, imagenet_wnids, is_wnid

    cols = [col] if col in df.columns else sorted((c for c in df.columns if str(c).startswith(f"{col}_")
                                                   and str(c)[len(col) + 1:].isdigit()),
                                                  key=lambda c: int(str(c)[len(col) + 1:]))
    if not cols:
        return None
    cells = [[v] if isinstance(v, str) else list(v) for v in (df[cols[0]] if len(cols) == 1 else df[cols].values.tolist())]
    if len(cells) and isinstance(df[cols[0]].iloc[0], str) and df[cols[0]].iloc[0].startswith("["):
        raise DivergentError(f"{path.name}: top-k labels written as text cannot be split reliably",
                             "rerun timm's inference.py with --include-index (class ids), or --results-separate-col")
    wn = {w: i for i, w in enumerate(imagenet_wnids())}
    desc: dict[str, int] = {}
    dup = set()
    for i, d in enumerate(imagenet_names()):
        if d in desc:
            dup.add(d)
        desc[d] = i
    out = []
    for r, row in enumerate(cells):
        ids = []
        for v in row:
            v = str(v)
            if is_wnid(v) and v in wn:
                ids.append(wn[v])
            elif v in desc and v not in dup:
                ids.append(desc[v])
            else:
                why = "names two ImageNet classes" if v in dup else "is not an ImageNet-1k class description or WordNet id"
                raise DivergentError(f"{path.name}, row {r + 1}: label {v!r} {why}",
                                     "rerun timm's inference.py with --include-index (class ids) or --label-type name")
        out.append(ids)
    return np.asarray(out, dtype=np.int64)


def _align_names(files: np.ndarray, split_ids: np.ndarray, path: Path) -> np.ndarray:
    """timm's file names as the split's ids: whole ids, else unique base names."""
    have = set(split_ids.tolist())
    if all(f in have for f in files):
        return files
    base: dict[str, list[str]] = {}
    for s in split_ids.tolist():
        base.setdefault(s.rsplit("/", 1)[-1], []).append(s)
    out = []
    for f in files.tolist():
        hits = base.get(f.rsplit("/", 1)[-1], [])
        if len(hits) == 1:
            out.append(hits[0])
        elif not hits:
            raise DivergentError(f"{path.name}: file {f!r} is not in the split (no id ends with its name)",
                                 "import into the split the files were run on, or strip a root with --strip-id-prefix")
        else:
            raise DivergentError(f"{path.name}: file name {f!r} is ambiguous: the split has {len(hits)} ids ending "
                                 f"with it (e.g. {hits[:2]})",
                                 "rerun timm's inference.py with --fullname so that file names are whole paths")
    return np.asarray(out)


def read(path: Path, *, split=None, model=None, dataset="", store=None, filename_col: str = "filename",
         index_col: str = "index", label_col: str = "label", output_col: str | None = None,
         strip_id_prefix: str | None = None, **options) -> list:
    from ..importers import _columns

    if options:
        raise DivergentError(f"--format timm takes no option(s) {', '.join(sorted(options))}",
                             "use --id-col / --pred-col / --score-col for timm's renamed columns")
    if path.is_dir():
        raise DivergentError(f"{path} is a directory", "give the results file timm's inference.py wrote")
    if split is None or model is None:
        raise DivergentError("--format timm needs --split and --model", "e.g. --split test --model timm:resnet50.a1_in1k")
    if store is None or split not in store.splits:
        raise DivergentError(f"split {split!r} does not exist, and timm's results hold no labels to create it",
                             "create the split first: extract any model on it (divergent extract), or import a labelled file")
    df = _frame(path, filename_col)
    if len(df) == 0:
        raise DivergentError(f"{path.name} has no rows", "give one row per image")
    if filename_col not in df.columns:
        raise DivergentError(f"{path.name} has no file-name column {filename_col!r} (columns: {', '.join(map(str, df.columns))})",
                             "name it with --id-col (timm's --filename-col)")
    files = np.asarray([str(f).replace("\\", "/") for f in df[filename_col]])
    if strip_id_prefix:
        files = np.asarray([f.removeprefix(strip_id_prefix) for f in files])
    sd = store.split(split)
    ids = _align_names(files, sd.ids, path)
    out_col = output_col or next((c for c in ("prob", "logit") if c in df.columns or f"{c}_0" in df.columns), None)
    scores = _columns(df, out_col, path) if out_col else None
    pred = _columns(df, index_col, path)
    if pred is None:
        pred = _label_ids(df, label_col, path)
    kind = "probs" if (out_col or "").startswith("prob") else "logits"
    arrays: dict = {}
    if pred is None:
        if scores is None:
            raise DivergentError(f"{path.name} has no class ids ({index_col}), labels ({label_col}) or outputs (prob/logit)",
                                 "rerun timm's inference.py with --include-index, or --topk 0 for full outputs")
        sub = _to_split(scores, sd, path)
        if kind == "probs" and sub.shape[1] != scores.shape[1]:
            # ImageNet-1k probabilities restricted to a subset's classes: as logits log(p) (softmax renormalises)
            kind, sub = "logits", np.log(np.maximum(sub, np.finfo(np.float32).tiny))
        arrays[kind] = sub
    else:
        if scores is not None and scores.shape != pred.shape:
            raise DivergentError(f"{path.name}: {pred.shape[1]} class ids but {scores.shape[1]} outputs per row",
                                 "give one output per class id (timm writes them together)")
        if not (np.isfinite(pred).all() and np.all(pred == np.round(pred))) or pred.min() < 0:
            raise DivergentError(f"{path.name}: column {index_col!r} does not hold class ids", "give class indices 0, 1, 2, ...")
        arrays["pred"] = _ids_to_split(pred.astype(np.int64), sd, path)
        if scores is not None:
            arrays["scores"] = scores[:, :arrays["pred"].shape[1]]
    card = card_from_name(model, source="timm inference.py", default_tag=False)
    return [Entry(split=split, model=model, arrays=arrays, ids=ids, card=card,
                  meta={"imported_from": path.name, "source": "timm inference.py"})]


def _to_split(scores: np.ndarray, sd, path: Path) -> np.ndarray:
    """Full outputs in the split's label space: as they are, or an ImageNet-1k head's columns of the split's classes."""
    if scores.shape[1] == sd.n_classes:
        return scores
    from ...data.imagenet import imagenet_head

    plan = imagenet_head(scores.shape[1], None, None, None, sd.class_names)
    if plan is None:
        raise DivergentError(f"{path.name}: {scores.shape[1]} outputs per row, the split has {sd.n_classes} classes",
                             "import into a split in the model's label space (ImageNet WordNet-id folders map by id)")
    bg, cols, _ = plan
    if bg is not None:
        scores = np.delete(scores, bg, axis=1)
    return scores[:, cols]


def _ids_to_split(pred: np.ndarray, sd, path: Path) -> np.ndarray:
    """Class ids in the split's label space: as they are, or ImageNet-1k ids -> positions of an ImageNet
    subset split (top-k columns kept while every row's class is in the subset; top-1 must be)."""
    from ...data.imagenet import split_label_space

    space = split_label_space(sd.class_names)
    if space is None or space[1] == list(range(sd.n_classes)):
        return pred
    pos = {c: j for j, c in enumerate(space[1])}
    mapped = np.vectorize(lambda i: pos.get(int(i), -2))(pred)
    if (mapped[:, 0] == -2).any():
        r = int(np.flatnonzero(mapped[:, 0] == -2)[0])
        raise DivergentError(f"{path.name}, row {r + 1}: the top-1 ImageNet class {int(pred[r, 0])} is not among the "
                             f"split's {sd.n_classes} classes ({space[0]})",
                             "rerun timm with --topk 0 (full outputs), which are restricted to the split's classes")
    ok = (mapped != -2).all(axis=0)
    k = int(np.argmin(ok)) if not ok.all() else mapped.shape[1]
    return mapped[:, :k]
