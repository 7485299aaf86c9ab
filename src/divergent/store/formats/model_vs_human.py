"""model-vs-human's raw data (Geirhos et al. 2021, github.com/bethgelab/model-vs-human).

``raw-data/<dataset>/`` holds one CSV per observer and session: humans
``<dataset>_subject-NN_session_1.csv``, models ``<dataset>_<model>_session-1.csv`` (the model's
``_`` written as ``-``; its own name is in the ``subj`` column). Columns: ``subj``, ``session``
(``Session`` in some files), ``trial``, ``rt``, ``object_response``, ``category``,
``condition``, ``imagename``; decisions among 16 categories, ``na`` for a human who did not answer.

Each dataset becomes one split named after it: ids are model-vs-human's short image names
(``get_short_imagename``: the last two ``_`` fields when they start with ``n0``, else the last),
labels the 16 categories, the condition of each image kept in the split's ``meta['conditions']``.
Every observer is a decision-only model; humans are named per dataset (``cue-conflict/subject-01``,
not the same person as ``edge/subject-01``), ``na`` is stored as -1 (no answer: counted wrong).
"""
from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ...cards import ModelCard
from ...errors import DivergentError
from ..validate import NO_ANSWER
from . import Entry

COLUMNS = ("subj", "object_response", "category", "condition", "imagename")
FILE_RE = re.compile(r"^(?P<dataset>[^_]+)_(?P<who>.+)_session[-_](?P<session>\d+)\.csv$")
HUMAN_RE = re.compile(r"^subject-\d+$")
SOURCE = "model-vs-human"
_FIX = "give model-vs-human raw-data CSVs: <dataset>_subject-NN_session_1.csv or <dataset>_<model>_session-1.csv"


@lru_cache(maxsize=1)
def constants() -> dict:
    """model-vs-human's constants shipped as data: default_datasets, categories, excluded_conditions."""
    text = resources.files("divergent.data").joinpath("labels", "model_vs_human.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def categories() -> list[str]:
    return list(constants()["categories"])


def short_imagename(imagename: str) -> str:
    """model-vs-human's ``get_short_imagename``: drop the trial-specific prefix of an image name."""
    parts = str(imagename).split("_")
    if len(parts) > 1:
        a, b = parts[-2:]
        return f"{a}_{b}" if a.startswith("n0") else b
    return parts[0]


def is_human(name: str) -> bool:
    return bool(HUMAN_RE.match(name.rsplit("/", 1)[-1]))


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.csv") if "performances" not in p.relative_to(path).parts)
    if not files:
        raise DivergentError(f"{path} holds no model-vs-human CSV files", _FIX)
    return files


def _read(p: Path) -> pd.DataFrame:
    from ..importers import _read_frame

    df = _read_frame(p)
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DivergentError(f"{p.name} has no column(s) {missing} (columns: {', '.join(df.columns)})", _FIX)
    if len(df) == 0:
        raise DivergentError(f"{p.name} has a header but no trials", "give one row per trial")
    for c in COLUMNS:
        if df[c].isna().any():
            row = int(np.flatnonzero(df[c].isna().to_numpy())[0]) + 2
            raise DivergentError(f"{p.name}, line {row}: empty {c!r}",
                                 "every trial needs subj, object_response (or na), category, condition and imagename")
    # as model-vs-human reads it: pandas' type inference, then text (0.0, inf, True as it prints them)
    df["condition"] = df["condition"].astype(str)
    df["object_response"] = df["object_response"].astype(str)
    df["category"] = df["category"].astype(str)
    return df


def read(path: Path, *, split=None, model=None, dataset="", store=None, **options) -> list:
    """Entries for every observer file under `path` (a raw-data folder, one dataset's folder, or a CSV)."""
    if options:
        raise DivergentError(f"--format model-vs-human takes no option(s) {', '.join(sorted(options))}",
                             "drop them: ids, labels and classes come from the CSV files")
    cats = categories()
    index = {c: i for i, c in enumerate(cats)}
    by_dataset: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for p in _files(Path(path)):
        m = FILE_RE.match(p.name)
        if m is None:
            raise DivergentError(f"{p.name} is not named like a model-vs-human raw-data file", _FIX)
        df = _read(p)
        subj = sorted(set(map(str, df["subj"])))
        if len(subj) != 1:
            raise DivergentError(f"{p.name} holds several observers in 'subj' ({subj[:3]})", "one observer per file")
        df["_file"] = p.name
        by_dataset.setdefault(m["dataset"], {}).setdefault(subj[0], []).append(df)
    if split is not None and len(by_dataset) > 1:
        raise DivergentError(f"--split names one split but {path} holds {len(by_dataset)} datasets "
                             f"({', '.join(sorted(by_dataset))})", "drop --split: each dataset becomes a split named after it")
    entries = []
    for ds, observers in sorted(by_dataset.items()):
        frames = {o: pd.concat(fs, ignore_index=True) for o, fs in observers.items()}
        for o, df in frames.items():
            df["_id"] = [short_imagename(n) for n in df["imagename"]]
            dup = df["_id"][df["_id"].duplicated()]
            if len(dup):
                raise DivergentError(f"{df['_file'].iloc[0]}: image {dup.iloc[0]!r} appears twice for {o!r}",
                                     "each observer sees each image once per dataset")
            bad = sorted(set(df["category"]) - set(cats))
            if bad:
                raise DivergentError(f"{df['_file'].iloc[0]}: unknown categories {bad[:5]}",
                                     f"model-vs-human's 16 categories are {', '.join(cats)}")
            bad = sorted(set(df["object_response"]) - set(cats) - {"na"})
            if bad:
                raise DivergentError(f"{df['_file'].iloc[0]}: unknown responses {bad[:5]}",
                                     f"responses are one of the 16 categories ({', '.join(cats)}) or na")
        ids = np.asarray(sorted(set().union(*(set(df["_id"]) for df in frames.values()))))
        first = {}
        for o, df in frames.items():
            for i, c, cond in zip(df["_id"], df["category"], df["condition"]):
                seen = first.setdefault(i, (c, cond, o))
                if seen[:2] != (c, cond):
                    raise DivergentError(f"dataset {ds!r}: image {i!r} is {seen[0]!r}/{seen[1]!r} for {seen[2]!r} "
                                         f"but {c!r}/{cond!r} for {o!r}",
                                         "the files of one dataset must agree on each image's category and condition")
        labels = np.asarray([index[first[i][0]] for i in ids], dtype=np.int64)
        conditions = [first[i][1] for i in ids]
        split_name = split or ds
        humans = sorted(o for o in frames if HUMAN_RE.match(o))
        others = sorted(o for o in frames if o not in humans)
        if model is not None and len(others) != 1:
            raise DivergentError(f"--model names one model but {ds!r} holds {len(others)} model files",
                                 "drop --model: models are named by their 'subj' column")
        for o in humans + others:
            df = frames[o]
            if len(df) != len(ids):
                raise DivergentError(f"{df['_file'].iloc[0]}: {o!r} answered {len(df)} of the {len(ids)} images of "
                                     f"dataset {ds!r}", "every observer of a dataset must answer every image "
                                     "(import complete files)")
            order = np.argsort(df["_id"].to_numpy(dtype=str), kind="stable")  # rows in the split's (sorted) id order
            name = f"{ds}/{o}" if o in humans else (model or o)
            resp = df["object_response"].to_numpy()[order]
            pred = np.asarray([NO_ANSWER if r == "na" else index[r] for r in resp], dtype=np.int64)
            if o not in humans and (pred == NO_ANSWER).any():
                raise DivergentError(f"{df['_file'].iloc[0]}: model {o!r} answered 'na'",
                                     "only human observers may leave a trial unanswered")
            card = (ModelCard(name=name, family="unknown", objective="unknown", train_data="human-vision", head="none",
                              source=SOURCE, notes=f"human observer {o} of model-vs-human's {ds} experiment")
                    if o in humans else _model_card(name))
            entries.append(Entry(
                split=split_name, model=name, arrays={"pred": pred}, labels=labels, ids=ids, class_names=cats,
                dataset=ds, split_meta={"source": SOURCE, "dataset": ds, "conditions": conditions},
                card=card, meta={"imported_from": str(df["_file"].iloc[0]), "source": SOURCE,
                                 "observer": "human" if o in humans else "model"}))
    return entries


def _model_card(name: str) -> ModelCard:
    """A model's card from its name (timm-style names give family and training data)."""
    from ...sources.timm_names import card_from_name

    return card_from_name(name, source=SOURCE)
