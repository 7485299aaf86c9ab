"""Import predictions made elsewhere: .npz arrays, or CSV/Parquet decision tables (e.g. timm's inference.py).

Everything (names, card, the file and its arrays, the new split they would create) is validated
before the store is created or written: a refused import leaves the store as it was.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..cards import ModelCard
from ..conventions import check_name
from ..errors import DivergentError
from .reader import Store
from .writer import Writer

NPZ_KINDS = ("logits", "probs", "pred", "scores", "features")
ID_COLUMNS = ("id", "ids", "filename", "file", "path", "image")
_RESAVE = "re-save it (numpy.savez(path, labels=..., logits=...)), or re-export it from its producer"


def import_file(store, file, *, split: str | None = None, model: str | None = None,
                card: ModelCard | dict | str | None = None,
                renormalize: bool = False, force: bool = False, dataset: str = "",
                id_col: str | None = None, pred_col: str = "index", score_col: str = "prob",
                label_col: str | None = None, class_names: list[str] | None = None,
                strip_id_prefix: str | None = None) -> dict:
    """Add one model's predictions on one split from `file` (.npz, .csv, .parquet).

    A split that does not exist yet is created from the file's labels, ids and class names.
    Otherwise rows are aligned to the split by id (when the file has ids) and labels must match.
    Nothing is created or written unless the whole import is valid. (Other projects' files:
    divergent.store.formats; both through divergent.store.formats.import_predictions.)
    """
    if split is None or model is None:
        raise DivergentError("importing a .npz, CSV or Parquet file needs --split and --model",
                             "pass --split S --model NAME (or --format to read another project's files)")
    model = check_name(model, "model")
    split = check_name(split, "split")
    path = Path(file)
    _check_input_file(path)
    existing = store if isinstance(store, Store) else _open_if_present(Path(store))
    root = existing.root if existing is not None else Path(store)
    card = _read_card(card, model)
    have_split = existing is not None and split in existing.splits
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data = _read_npz(path)
    elif suffix in (".csv", ".parquet", ".pq"):
        data = _read_table(path, id_col=id_col, pred_col=pred_col, score_col=score_col, label_col=label_col,
                           class_names=class_names or (existing.split(split).class_names if have_split else None))
    else:
        raise DivergentError(f"cannot import {path.name}: unknown file type {path.suffix or '(none)'!r}",
                             "give a .npz, .csv or .parquet file")
    ids = data.pop("ids", None)
    if ids is not None and strip_id_prefix:
        ids = np.asarray([str(i).removeprefix(strip_id_prefix) for i in ids])
    labels = data.pop("labels", None)
    names = data.pop("class_names", None) or (list(class_names) if class_names else None)
    arrays = {k: v for k, v in data.items() if k in NPZ_KINDS}
    _check_rows(path, arrays, labels, ids)
    if have_split:
        if names is not None and list(names) != existing.split(split).class_names:
            raise DivergentError(f"class names in {path.name} differ from split {split!r}'s",
                                 "map the model's classes to the split's, or import into another split")
    else:
        labels, names, ids = _new_split(path, split, arrays, labels, names, ids)
        _dry_run(root, split, model, labels=labels, names=names, ids=ids, dataset=dataset, card=card,
                 renormalize=renormalize, arrays=arrays)
    # validation done: now create or write
    st = existing if existing is not None else Store.create(root)
    with st.writer(command=f"import {path} --split {split} --model {model}") as w:
        if not have_split:
            w.add_split(split, labels=labels, class_names=names, ids=ids, dataset=dataset)
        w.put(model, split, card=card, force=force, renormalize=renormalize, ids=ids, labels=labels,
              meta={"imported_from": path.name}, **arrays)
        if renormalize and w._m["models"][model]["splits"][split]["meta"].get("renormalized"):
            c = ModelCard.from_dict(w._m["models"][model]["card"])
            w.set_card(model, c.replace(notes=(c.notes + " probabilities renormalised on import").strip()))
    return {"model": model, "split": split, "kinds": sorted(arrays)}


# ---- validation before anything is written ---------------------------------------------------
def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise DivergentError(f"no such file: {path}", "check the path of the file to import")
    if path.is_dir():
        raise DivergentError(f"{path} is a directory, not a file", "give the .npz, .csv or .parquet file itself")
    if path.stat().st_size == 0:
        raise DivergentError(f"{path.name} is empty (0 bytes)", _RESAVE)


def _open_if_present(root: Path) -> Store | None:
    """The store at `root`, or None when there is none yet (Store.create makes it, and refuses a
    file or a non-empty directory, only after everything is validated)."""
    if (root / "manifest.json").is_file():
        return Store.open(root)
    return None


def _read_card(card, model: str) -> ModelCard | None:
    if card is None:
        return None
    if isinstance(card, (str, Path)):
        card = ModelCard.load(card)
    elif isinstance(card, dict):
        card = ModelCard.from_dict(card)
    elif not isinstance(card, ModelCard):
        raise DivergentError(f"card must be a ModelCard, a dict or a file path, got {type(card).__name__}",
                             "pass --card FILE (.toml or .json)")
    return card if card.name == model else card.replace(name=model)


def _check_rows(path: Path, arrays: dict, labels, ids) -> None:
    """Every row-aligned array is at least 1-D and all have the same number of rows."""
    rows = {}
    for key, arr in [*arrays.items(), ("labels", labels), ("ids", ids)]:
        if arr is None:
            continue
        if arr.ndim == 0:
            raise DivergentError(f"{path.name}: {key!r} is a single value (0-d array), not one row per example",
                                 f"store {key} with one row per example: shape (N,) or (N, k)")
        if key != "ids" and arr.dtype.kind not in "biuf":
            raise DivergentError(f"{path.name}: {key!r} holds {arr.dtype} values, not numbers",
                                 f"store {key} as numbers (integers or floats)")
        if arr.ndim == 2 and arr.shape[1] == 0:
            raise DivergentError(f"{path.name}: {key!r} has shape {arr.shape}, no columns",
                                 f"store {key} with at least one column per example")
        rows[key] = len(arr)
    if len(set(rows.values())) > 1:
        desc = ", ".join(f"{k} {n}" for k, n in rows.items())
        raise DivergentError(f"{path.name}: arrays have different numbers of rows ({desc})",
                             "every array holds one row per example, in the same order")


def _new_split(path: Path, split: str, arrays: dict, labels, names, ids):
    """Labels, class names and ids of a split the import creates."""
    if labels is None:
        raise DivergentError(f"split {split!r} does not exist and {path.name} has no labels to create it",
                             "add a `labels` array (npz) or --label-col (CSV), or create the split first")
    if len(labels) == 0:
        raise DivergentError(f"{path.name} has no examples (0 rows): the split {split!r} would be empty",
                             "give at least one labelled example")
    if labels.ndim == 2 and names is None:
        raise DivergentError(f"{path.name}: multi-hot labels {labels.shape} but no class names",
                             f"add a `class_names` array of {labels.shape[1]} names")
    if labels.ndim == 1 and names is None:
        n_classes = _n_classes(arrays, labels)
        names = [str(c) for c in range(n_classes)]
    if ids is None:
        ids = np.asarray([str(i) for i in range(len(labels))])
    return labels, list(names), ids


def _n_classes(arrays: dict, labels: np.ndarray) -> int:
    for k in ("logits", "probs"):
        if k in arrays and arrays[k].ndim == 2:
            return int(arrays[k].shape[1])
    top = labels.max()
    if not np.isfinite(top) or top < 0 or top != np.round(top) or top > 1_000_000:
        raise DivergentError(f"labels must be class indices 0, 1, 2, ..., got a largest value {top!r}",
                             "store integer labels, or give class_names")
    return int(top) + 1


class _DryStore(Store):
    """An empty store held in memory: what a dry-run writer saves is read back from memory."""

    def __init__(self, root: Path):
        super().__init__(root, {"splits": {}, "models": {}})
        self.memory: dict[str, np.ndarray] = {}

    def _load(self, info: dict, verify: bool = False) -> np.ndarray:
        return self.memory[info["path"]]


class _DryWriter(Writer):
    """The store's writer with every check and no file written (saves go to memory)."""

    def _save(self, rel_dir: str, kind: str, arr: np.ndarray) -> dict:
        arr = np.ascontiguousarray(arr)
        key = f"{rel_dir}/{kind}"
        self.store.memory[key] = arr
        return {"path": key, "sha256": "", "dtype": str(arr.dtype), "shape": list(arr.shape)}


def _dry_run(root: Path, split: str, model: str, *, labels, names, ids, dataset, card, renormalize,
             arrays: dict) -> None:
    """Create the new split and put the model's arrays in memory, with the store's own checks."""
    w = _DryWriter(_DryStore(root), None)
    w.add_split(split, labels=labels, class_names=names, ids=ids, dataset=dataset)
    w.put(model, split, card=card, renormalize=renormalize, ids=ids, labels=labels, **arrays)


# ---- readers -----------------------------------------------------------------------------------
def _read_npz(path: Path) -> dict:
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DivergentError(f"{path.name} is not a readable .npz archive ({_why(exc)})",
                             f"it may be truncated or corrupted: {_RESAVE}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DivergentError(f"{path.name} is a single .npy array, not a .npz archive of named arrays",
                             "save the arrays by name: numpy.savez(path, labels=..., logits=...)")
    try:
        with z:
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DivergentError(f"{path.name} holds Python objects, which are not read (no pickle) ({exc})",
                                 "save plain numeric/string arrays (np.savez with str ids, not objects)") from None
        raise DivergentError(f"{path.name} holds an unreadable array ({_why(exc)})",
                             f"it may be corrupted: {_RESAVE}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise DivergentError(f"{path.name} is truncated or corrupted ({_why(exc)})", _RESAVE) from None
    unknown_keys = sorted(set(data) - set(NPZ_KINDS) - {"labels", "ids", "class_names"})
    if unknown_keys:
        raise DivergentError(f"{path.name} has unknown arrays {unknown_keys}",
                             f"use keys labels, ids, class_names and any of {', '.join(NPZ_KINDS)}")
    for key in ("class_names", "ids"):
        if key in data and data[key].ndim != 1:
            raise DivergentError(f"{path.name}: {key!r} has shape {data[key].shape}, expected one entry per "
                                 f"{'class' if key == 'class_names' else 'example'}", f"store {key} as a 1-D array")
    if "class_names" in data:
        data["class_names"] = [str(c) for c in data["class_names"].tolist()]
    if "ids" in data:
        data["ids"] = np.asarray([str(i) for i in data["ids"].tolist()])
    if not any(k in data for k in NPZ_KINDS):
        raise DivergentError(f"{path.name} holds no predictions", f"add one of {', '.join(NPZ_KINDS)}")
    return data


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_NUMBER_SEP = re.compile(r"[,\s]+")


def _list_cell(v, where: str) -> list[float]:
    """One cell of a class-id or score column: a number, or a list written `[1, 2]`, `[1 2]` or `1 2`.

    Read as numbers only (never evaluated)."""
    if isinstance(v, str):
        t = v.strip()
        if t.startswith("[") or t.endswith("]"):
            if not (t.startswith("[") and t.endswith("]")):
                raise DivergentError(f"{where}: malformed list {v!r}", "write lists as [1, 2, 3]")
            t = t[1:-1]
        parts = [p for p in _NUMBER_SEP.split(t.strip()) if p]
        if not parts:
            raise DivergentError(f"{where}: empty cell {v!r}", "give a value in every row")
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise DivergentError(f"{where}: {v!r} is not a number or a list of numbers",
                                 "the column must hold class ids / scores (numbers), e.g. 3 or [3, 5, 1]") from None
    if isinstance(v, (list, tuple, np.ndarray)):
        out = []
        for x in v:
            out.extend(_list_cell(x, where) if not isinstance(x, (int, float, np.number)) else [float(x)])
        return out
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
        raise DivergentError(f"{where}: {v!r} is not a number", "the column must hold numbers")
    return [float(v)]


def _columns(df: pd.DataFrame, prefix: str, path: Path) -> np.ndarray | None:
    if prefix in df.columns:
        rows = [_list_cell(v, f"{path.name}, column {prefix!r}, row {i + 1}") for i, v in enumerate(df[prefix])]
        widths = sorted({len(r) for r in rows})
        if len(widths) > 1:
            bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
            raise DivergentError(f"{path.name}, column {prefix!r}: rows hold lists of different lengths "
                                 f"({widths}; row 1 has {len(rows[0])}, row {bad + 1} has {len(rows[bad])})",
                                 "give the same number of entries (the top-k) in every row")
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), widths[0] if widths else 1)
    cols = sorted((c for c in df.columns if re.fullmatch(rf"{re.escape(prefix)}_?\d+", str(c))),
                  key=lambda c: int(re.findall(r"\d+$", str(c))[0]))
    if cols:
        try:
            return df[cols].to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise DivergentError(f"{path.name}: columns {cols[0]!r}... hold values that are not numbers",
                                 "the columns must hold class ids / scores (numbers)") from None
    return None


def _read_frame(path: Path) -> pd.DataFrame:
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        return pd.read_parquet(path) if parquet else pd.read_csv(path)
    except ImportError as exc:
        raise DivergentError(f"reading {path.name} needs a Parquet engine ({exc})",
                             "pip install pyarrow, or import a CSV file") from None
    except pd.errors.EmptyDataError:
        raise DivergentError(f"{path.name} has no header and no rows", "give a CSV with a header line and one row per example") from None
    except (ValueError, OSError) as exc:  # parser errors, bad encodings, truncated Parquet (ArrowInvalid)
        kind = "Parquet" if parquet else "CSV"
        raise DivergentError(f"{path.name} is not a readable {kind} file ({_why(exc)})",
                             f"it may be truncated or corrupted: re-export it as {kind}") from None


def _read_table(path: Path, *, id_col, pred_col, score_col, label_col, class_names) -> dict:
    df = _read_frame(path)
    columns = ", ".join(map(str, df.columns)) or "(none)"
    if len(df) == 0:
        raise DivergentError(f"{path.name} has a header but no rows", "give one row per example")
    out: dict = {}
    if id_col is None:
        id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
    elif id_col not in df.columns:
        raise DivergentError(f"{path.name} has no column {id_col!r}", f"name the id column with --id-col; columns are: {columns}")
    if id_col is not None:
        if df[id_col].isna().any():
            row = int(np.flatnonzero(df[id_col].isna().to_numpy())[0]) + 1
            raise DivergentError(f"{path.name}: id column {id_col!r} is empty in row {row}", "give an id in every row")
        out["ids"] = np.asarray([str(x).replace("\\", "/") for x in df[id_col]])
    pred = _columns(df, pred_col, path)
    if pred is None:
        raise DivergentError(f"{path.name} has no prediction column {pred_col!r} (or {pred_col}_0, {pred_col}_1, ...)",
                             f"name it with --pred-col; columns are: {columns}")
    if not (np.isfinite(pred).all() and np.all(pred == np.round(pred))):
        row = int(np.flatnonzero(~(np.isfinite(pred) & (pred == np.round(pred))).all(axis=1))[0]) + 1
        raise DivergentError(f"prediction column {pred_col!r} of {path.name} does not hold integer class ids "
                             f"(row {row}: {pred[row - 1].tolist()})",
                             "give class indices 0, 1, 2, ... (name the column with --pred-col)")
    out["pred"] = pred.astype(np.int64)
    scores = _columns(df, score_col, path)
    if scores is not None:
        if scores.shape != pred.shape:
            raise DivergentError(f"{path.name}: {score_col!r} has shape {scores.shape}, predictions {pred.shape}",
                                 "give one score per predicted class id (or name the score column with --score-col)")
        out["scores"] = scores
    if label_col is not None:
        if label_col not in df.columns:
            raise DivergentError(f"{path.name} has no label column {label_col!r}",
                                 f"name it with --label-col; columns are: {columns}")
        out["labels"] = _labels(df[label_col], path, label_col, class_names)
    return out


def _labels(lab: pd.Series, path: Path, label_col: str, class_names) -> np.ndarray:
    if lab.isna().any():
        row = int(np.flatnonzero(lab.isna().to_numpy())[0]) + 1
        raise DivergentError(f"{path.name}: label column {label_col!r} is empty in row {row}",
                             "give a label in every row")
    if not pd.api.types.is_numeric_dtype(lab) or pd.api.types.is_bool_dtype(lab):
        if not class_names:
            raise DivergentError(f"{path.name}: labels are class names but the class list is unknown",
                                 "pass --class-names or import into an existing split")
        index = {c: i for i, c in enumerate(class_names)}
        bad = sorted(set(map(str, lab)) - set(index))
        if bad:
            raise DivergentError(f"{path.name}: unknown class names in labels: {bad[:5]}",
                                 f"use the split's class names: {', '.join(list(class_names)[:20])}"
                                 + (" ..." if len(class_names) > 20 else ""))
        return np.asarray([index[str(x)] for x in lab], dtype=np.int64)
    values = lab.to_numpy()
    if values.dtype.kind not in "iuf" or not np.all(values == np.round(values)):
        raise DivergentError(f"{path.name}: label column {label_col!r} does not hold class indices "
                             f"({values.dtype})", "give labels as class indices 0, 1, 2, ... or as class names")
    return values.astype(np.int64)
