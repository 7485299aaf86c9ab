"""The on-disk prediction store: a JSON manifest plus checksummed, memory-mapped .npy arrays.

Layout (see docs/store-format.md)::

    STORE/manifest.json                       schema, splits, models, cards, checksums, provenance
    STORE/splits/<split>/labels-<h>.npy       int64 labels (N,) or multi-hot (N, C)
    STORE/splits/<split>/ids-<h>.npy          unicode example ids (N,)
    STORE/models/<key>/<split>/<kind>-<h>.npy logits | probs | pred | scores | features
    STORE/cache/                              derived results keyed by content hashes
    STORE/.staging/                           entries staged by parallel producers
    STORE/.lock                               the one writer's lock

Array files are content-addressed (<h> = first 16 hex digits of their sha256) and never
overwritten, and the manifest is replaced atomically last, so a write interrupted at any point
leaves the previous consistent store.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..cards import ModelCard
from ..errors import CorruptStoreError, DivergentError, unknown
from . import _io

SCHEMA_VERSION = 1
FORMAT = "divergent-store"
KINDS = ("logits", "probs", "pred", "scores", "features")
PROB_TOL = 1e-3
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f\\]")


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_name(name: str, what: str = "model") -> str:
    """Refuse names that are empty, contain control characters or could escape the store."""
    if not isinstance(name, str) or not name.strip():
        raise DivergentError(f"{what} name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or _NAME_BAD.search(name) or len(name) > 200:
        raise DivergentError(
            f"{what} name {name!r} is not allowed (it could escape the store directory or is malformed)",
            "use letters, digits and . _ - : / without '..', empty segments, a leading '/', or backslashes",
        )
    return name


def dir_key(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "m"
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


@dataclass
class SplitData:
    """A split: labels, class names and example ids, all aligned."""

    name: str
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray
    dataset: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


def _provenance(command: str | None = None) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for pkg in ("divergent", "numpy", "torch", "timm", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"time": utcnow(), "command": command or " ".join(sys.argv), "python": sys.version.split()[0],
            "versions": versions}


class Store:
    """Read side of a store. Open with :meth:`open`; write through :meth:`writer`."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self._m = manifest
        self._split_cache: dict[str, SplitData] = {}

    # ---- opening ----------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, exist_ok: bool = False) -> "Store":
        root = Path(path)
        if (root / "manifest.json").exists():
            if exist_ok:
                return cls.open(root)
            raise DivergentError(f"a store already exists at {root}", "open it with Store.open, or choose a new path")
        if root.exists() and any(root.iterdir()):
            raise DivergentError(f"{root} exists and is not an empty directory", "choose a new or empty directory")
        root.mkdir(parents=True, exist_ok=True)
        m = {"format": FORMAT, "schema": SCHEMA_VERSION, "created": utcnow(), "updated": utcnow(),
             "splits": {}, "models": {}, "provenance": [_provenance()]}
        _io.atomic_write_json(root / "manifest.json", m)
        return cls(root, m)

    @classmethod
    def open(cls, path, *, create: bool = False) -> "Store":
        root = Path(path)
        mf = root / "manifest.json"
        if not mf.exists():
            if create:
                return cls.create(root)
            raise DivergentError(f"no store at {root} (manifest.json missing)",
                                 "create one with `divergent import` / `divergent extract`, or check the path")
        try:
            m = json.loads(mf.read_text())
        except json.JSONDecodeError as exc:
            raise CorruptStoreError(f"the manifest of {root} is not valid JSON ({exc})",
                                    "restore it from a backup; array files are intact and checksummed") from None
        if m.get("format") != FORMAT:
            raise CorruptStoreError(f"{mf} is not a divergent store manifest")
        from .migrate import migrate

        m = migrate(m, root)
        return cls(root, m)

    def reload(self) -> "Store":
        return Store.open(self.root)

    # ---- reading -----------------------------------------------------------------------
    @property
    def manifest(self) -> dict:
        return self._m

    @property
    def splits(self) -> list[str]:
        return list(self._m["splits"])

    @property
    def models(self) -> list[str]:
        return sorted(self._m["models"])

    def _split_entry(self, split: str) -> dict:
        if split not in self._m["splits"]:
            raise unknown("split", split, self._m["splits"])
        return self._m["splits"][split]

    def _model_entry(self, model: str) -> dict:
        if model not in self._m["models"]:
            raise unknown("model", model, self._m["models"])
        return self._m["models"][model]

    def split(self, name: str) -> SplitData:
        if name not in self._split_cache:
            e = self._split_entry(name)
            labels = np.asarray(self._load(e["files"]["labels"]))
            ids = np.asarray(self._load(e["files"]["ids"]))
            self._split_cache[name] = SplitData(name, labels, list(e["class_names"]), ids,
                                                e.get("dataset", ""), dict(e.get("meta", {})))
        return self._split_cache[name]

    def card(self, model: str) -> ModelCard:
        return ModelCard.from_dict(self._model_entry(model)["card"])

    def cards(self) -> dict[str, ModelCard]:
        return {m: self.card(m) for m in self.models}

    def kinds(self, model: str, split: str) -> list[str]:
        return sorted(self._model_entry(model)["splits"].get(split, {}).get("arrays", {}))

    def has(self, model: str, split: str, kind: str = "logits") -> bool:
        return kind in self._m["models"].get(model, {}).get("splits", {}).get(split, {}).get("arrays", {})

    def model_splits(self, model: str) -> list[str]:
        return list(self._model_entry(model)["splits"])

    def info(self, model: str, split: str, kind: str) -> dict:
        arrays = self._model_entry(model)["splits"].get(split, {}).get("arrays", {})
        if kind not in arrays:
            have = ", ".join(arrays) or "nothing"
            raise DivergentError(f"model {model!r} has no {kind} for split {split!r} (it has {have})",
                                 "extract or import them first (divergent extract / divergent import)")
        return arrays[kind]

    def array(self, model: str, split: str, kind: str, *, verify: bool = False) -> np.ndarray:
        """The stored array, memory-mapped read-only. `verify=True` re-checks its sha256."""
        return self._load(self.info(model, split, kind), verify=verify)

    def scores(self, model: str, split: str) -> tuple[str, np.ndarray]:
        """('logits' | 'probs', array): whichever probability source the model has."""
        for kind in ("logits", "probs"):
            if self.has(model, split, kind):
                return kind, self.array(model, split, kind)
        raise DivergentError(
            f"model {model!r} has no logits or probabilities on split {split!r} (decision-only or missing)",
            "measurements that need probabilities are unavailable for it; import logits/probs to get them")

    def entry_meta(self, model: str, split: str) -> dict:
        return dict(self._model_entry(model)["splits"].get(split, {}).get("meta", {}))

    def temperature(self, model: str) -> float | None:
        cal = self._model_entry(model).get("calibration")
        return None if not cal else float(cal["temperature"])

    def calibration(self, model: str) -> dict | None:
        cal = self._model_entry(model).get("calibration")
        return dict(cal) if cal else None

    def content_hash(self, model: str, split: str, kind: str) -> str:
        return self.info(model, split, kind)["sha256"]

    def _load(self, info: dict, verify: bool = False) -> np.ndarray:
        path = self.root / info["path"]
        if not path.exists():
            raise CorruptStoreError(f"array file {info['path']} is missing from {self.root}",
                                    "run `divergent verify STORE`; re-import or re-extract the affected model")
        if verify and _io.sha256_file(path) != info["sha256"]:
            raise CorruptStoreError(f"array file {info['path']} does not match its checksum",
                                    "re-import or re-extract the affected model (`divergent rm` then import)")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CorruptStoreError(f"array file {info['path']} is corrupted or truncated ({exc})",
                                    "run `divergent verify STORE`; re-import or re-extract the affected model") from None
        if list(arr.shape) != list(info["shape"]) or str(arr.dtype) != info["dtype"]:
            raise CorruptStoreError(
                f"array file {info['path']} has shape {arr.shape} / {arr.dtype}, manifest says "
                f"{tuple(info['shape'])} / {info['dtype']}", "re-import or re-extract the affected model")
        return arr

    def verify(self) -> list[str]:
        """Re-check every array's sha256; returns a list of problems (empty when all is well)."""
        problems = []
        files = [(f"split {s}", info) for s, e in self._m["splits"].items() for info in e["files"].values()]
        files += [(f"{m} / {s} / {k}", info) for m, e in self._m["models"].items()
                  for s, se in e["splits"].items() for k, info in se["arrays"].items()]
        for what, info in files:
            path = self.root / info["path"]
            if not path.exists():
                problems.append(f"{what}: file {info['path']} is missing")
            elif _io.sha256_file(path) != info["sha256"]:
                problems.append(f"{what}: file {info['path']} does not match its checksum")
            else:
                try:
                    self._load(info)
                except CorruptStoreError as exc:
                    problems.append(f"{what}: {exc.problem}")
        return problems

    # ---- writing -----------------------------------------------------------------------
    @contextmanager
    def writer(self, command: str | None = None) -> Iterator["Writer"]:
        """Exclusive writer: takes the lock, and publishes the manifest atomically on success."""
        lock = _io.WriterLock(self.root)
        lock.acquire()
        try:
            fresh = Store.open(self.root)
            w = Writer(fresh, command)
            yield w
            w._publish()
            self._m = fresh._m
            self._split_cache.clear()
        finally:
            lock.release()


class Writer:
    """Mutations of a store; every method validates fully before touching anything."""

    def __init__(self, store: Store, command: str | None):
        self.store = store
        self._m = json.loads(json.dumps(store._m))  # working copy
        self._command = command
        self._new_files: list[Path] = []
        self._dirty = False

    @property
    def root(self) -> Path:
        return self.store.root

    def _save(self, rel_dir: str, kind: str, arr: np.ndarray) -> dict:
        arr = np.ascontiguousarray(arr)
        tmp_name = f".{kind}-{uuid.uuid4().hex}.npy"
        d = self.root / rel_dir
        digest = _io.atomic_save_npy(d / tmp_name, arr)
        final = d / f"{kind}-{digest[:16]}.npy"
        if final.exists():
            (d / tmp_name).unlink()
        else:
            os.replace(d / tmp_name, final)
            self._new_files.append(final)
        return {"path": str(final.relative_to(self.root)), "sha256": digest, "dtype": str(arr.dtype),
                "shape": list(arr.shape)}

    # splits
    def add_split(self, name: str, *, labels, class_names, ids, dataset: str = "", meta: dict | None = None) -> None:
        check_name(name, "split")
        labels = np.asarray(labels)
        ids = np.asarray([str(i) for i in ids])
        class_names = [str(c) for c in class_names]
        n = len(labels)
        if n == 0:
            raise DivergentError(f"split {name!r} is empty", "give at least one labelled example")
        if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != len(class_names)):
            raise DivergentError(f"labels of split {name!r} have shape {labels.shape}",
                                 "give integer labels (N,) or multi-hot labels (N, n_classes)")
        if len(ids) != n:
            raise DivergentError(f"split {name!r}: {len(ids)} ids for {n} labels", "give one id per example")
        if len(set(class_names)) != len(class_names):
            raise DivergentError(f"split {name!r}: duplicate class names", "class names must be unique")
        if len(np.unique(ids)) != n:
            dup = _first_duplicates(ids)
            raise DivergentError(f"split {name!r}: duplicate example ids, e.g. {dup}",
                                 "ids must be unique: use paths relative to the dataset root, not bare file names")
        if labels.ndim == 1:
            if not np.issubdtype(labels.dtype, np.integer):
                if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
                    labels = labels.astype(np.int64)
                else:
                    raise DivergentError(f"split {name!r}: labels must be integers, got {labels.dtype}")
            labels = labels.astype(np.int64)
            if labels.min() < 0 or labels.max() >= len(class_names):
                raise DivergentError(
                    f"split {name!r}: labels range {labels.min()}..{labels.max()} but there are "
                    f"{len(class_names)} class names", "give one class name per class index")
        else:
            labels = labels.astype(np.uint8)
        existing = self._m["splits"].get(name)
        if existing is not None:
            old = self.store.split(name)
            if old.class_names == class_names and np.array_equal(old.labels, labels) and np.array_equal(old.ids, ids):
                return
            raise DivergentError(f"split {name!r} already exists with different labels, ids or classes",
                                 "use another split name, or a new store")
        rel = f"splits/{name}"
        self._m["splits"][name] = {
            "n": n, "n_classes": len(class_names), "class_names": class_names, "dataset": dataset,
            "meta": meta or {}, "files": {"labels": self._save(rel, "labels", labels), "ids": self._save(rel, "ids", ids)},
        }
        self.store._m["splits"][name] = self._m["splits"][name]  # make the split readable in this session
        self._dirty = True

    # models
    def put(self, model: str, split: str, *, logits=None, probs=None, pred=None, scores=None, features=None,
            card: ModelCard | dict | None = None, force: bool = False, renormalize: bool = False,
            ids=None, labels=None, meta: dict | None = None) -> None:
        """Add one model's arrays for one split (validated, aligned to the split's ids)."""
        check_name(model)
        sd = self.store.split(split) if split in self._m["splits"] else None
        if sd is None:
            raise unknown("split", split, self._m["splits"])
        arrays = {k: v for k, v in dict(logits=logits, probs=probs, pred=pred, scores=scores, features=features).items()
                  if v is not None}
        if not arrays:
            raise DivergentError(f"nothing to store for {model!r} on {split!r}",
                                 "give logits, probs, pred (with optional scores) or features")
        if "logits" in arrays and "probs" in arrays:
            raise DivergentError("give logits or probs, not both", "store the logits; probabilities derive from them")
        if "scores" in arrays and "pred" not in arrays:
            raise DivergentError("scores need the class ids they belong to", "give pred (N, k) with scores (N, k)")
        order = None
        if ids is not None:
            order = align_ids(np.asarray([str(i) for i in ids]), sd.ids, what=f"{model!r} on {split!r}")
        meta = dict(meta or {})
        clean = {}
        for kind, arr in arrays.items():
            arr = np.asarray(arr)
            if order is not None:
                if len(arr) != len(order) and len(arr) != len(ids):
                    raise DivergentError(f"{kind} has {len(arr)} rows but {len(ids)} ids were given")
                arr = arr[order]
            clean[kind] = _validate(kind, arr, sd, model, renormalize, meta)
        if labels is not None:
            lab = np.asarray(labels)
            if order is not None:
                lab = lab[order]
            if lab.shape != sd.labels.shape or not np.array_equal(lab, sd.labels):
                bad = np.flatnonzero(lab != sd.labels)[:5] if lab.shape == sd.labels.shape else []
                raise DivergentError(
                    f"labels given with {model!r} disagree with split {split!r}"
                    + (f" at ids {[str(sd.ids[i]) for i in bad]}" if len(bad) else f" (shape {lab.shape} vs {sd.labels.shape})"),
                    "check that the file belongs to this split and dataset (same example order or ids)")
        entry = self._m["models"].get(model)
        if entry is None:
            entry = {"dir": f"models/{dir_key(model)}", "card": None, "splits": {}, "calibration": None}
        se = entry["splits"].get(split, {"arrays": {}, "meta": {}})
        clash = [k for k in clean if k in se["arrays"]]
        if clash and not force:
            raise DivergentError(f"model {model!r} already has {', '.join(clash)} for split {split!r}",
                                 "pass force=True (--force) to replace them, or use another model name")
        if card is not None:
            card = card if isinstance(card, ModelCard) else ModelCard.from_dict(card)
            if card.name != model:
                card = card.replace(name=model)
        elif entry["card"] is None:
            card = ModelCard(name=model)
        # validation done: now write
        for kind, arr in clean.items():
            se["arrays"][kind] = self._save(f"{entry['dir']}/{_split_dir(split)}", kind, arr)
        if "logits" in clean:
            se["arrays"].pop("probs", None)
        if "probs" in clean:
            se["arrays"].pop("logits", None)
        se["meta"].update(meta)
        entry["splits"][split] = se
        if card is not None:
            entry["card"] = card.to_dict()
        if ("logits" in clean or "probs" in clean) and entry.get("calibration"):
            entry["calibration"] = None  # scores changed: the temperature must be refitted
        self._m["models"][model] = entry
        self._dirty = True

    def set_card(self, model: str, card: ModelCard | dict) -> None:
        entry = self._m["models"].get(model)
        if entry is None:
            raise unknown("model", model, self._m["models"])
        card = card if isinstance(card, ModelCard) else ModelCard.from_dict(card)
        entry["card"] = card.replace(name=model).to_dict()
        self._dirty = True

    def set_temperature(self, model: str, temperature: float, *, fit_on: str, **stats) -> None:
        entry = self._m["models"].get(model)
        if entry is None:
            raise unknown("model", model, self._m["models"])
        if not (np.isfinite(temperature) and temperature > 0):
            raise DivergentError(f"temperature must be a positive finite number, got {temperature!r}")
        kind = "logits" if "logits" in entry["splits"].get(fit_on, {}).get("arrays", {}) else "probs"
        src = entry["splits"].get(fit_on, {}).get("arrays", {}).get(kind)
        entry["calibration"] = {"temperature": float(temperature), "fit_on": fit_on, "time": utcnow(),
                                "fitted_on_sha256": src["sha256"] if src else None,
                                **{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in stats.items()}}
        self._dirty = True

    def remove(self, model: str) -> None:
        if model not in self._m["models"]:
            raise unknown("model", model, self._m["models"])
        del self._m["models"][model]
        self._dirty = True

    def commit_staged(self, stage_path) -> str:
        """Commit an entry written by :func:`stage_entry` (validated like :meth:`put`)."""
        stage = Path(stage_path)
        spec_file = stage / "entry.json"
        if not spec_file.exists():
            raise DivergentError(f"{stage} is not a staged entry (entry.json missing)")
        spec = json.loads(spec_file.read_text())
        arrays = {}
        for kind, info in spec["arrays"].items():
            p = stage / info["file"]
            if _io.sha256_file(p) != info["sha256"]:
                raise CorruptStoreError(f"staged {kind} for {spec['model']!r} does not match its checksum",
                                        "re-run the producer that staged it")
            arrays[kind] = np.load(p, allow_pickle=False)
        self.put(spec["model"], spec["split"], card=spec.get("card"), force=spec.get("force", False),
                 meta=spec.get("meta"), ids=spec.get("ids"), **arrays)
        self._after_publish_remove = getattr(self, "_after_publish_remove", []) + [stage]
        return spec["model"]

    def _publish(self) -> None:
        if not self._dirty:
            return
        self._m["updated"] = utcnow()
        self._m["provenance"] = (self._m.get("provenance", []) + [_provenance(self._command)])[-50:]
        _io.atomic_write_json(self.root / "manifest.json", self._m)
        self.store._m = self._m
        for stage in getattr(self, "_after_publish_remove", []):
            shutil.rmtree(stage, ignore_errors=True)
        _collect_garbage(self.root, self._m)


def _split_dir(split: str) -> str:
    return split.replace("/", "__")


def _first_duplicates(ids: np.ndarray, k: int = 3) -> list[str]:
    u, c = np.unique(ids, return_counts=True)
    return [str(x) for x in u[c > 1][:k]]


def align_ids(given: np.ndarray, split_ids: np.ndarray, *, what: str) -> np.ndarray:
    """Row order that puts `given` ids into the split's order; missing/extra ids are errors."""
    if len(np.unique(given)) != len(given):
        raise DivergentError(f"{what}: duplicate ids, e.g. {_first_duplicates(given)}", "ids must be unique")
    pos = {s: i for i, s in enumerate(given.tolist())}
    missing = [s for s in split_ids.tolist() if s not in pos]
    extra = sorted(set(pos) - set(split_ids.tolist()))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} split ids missing (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} ids not in the split (e.g. {extra[:3]})")
        raise DivergentError(f"{what}: ids do not match the split: " + "; ".join(parts),
                             "give predictions for exactly the split's examples, identified by the same ids")
    return np.fromiter((pos[s] for s in split_ids.tolist()), dtype=np.int64, count=len(split_ids))


def _validate(kind: str, arr: np.ndarray, sd: SplitData, model: str, renormalize: bool, meta: dict) -> np.ndarray:
    where = f"{kind} of {model!r} on split {sd.name!r}"
    if len(arr) != sd.n:
        raise DivergentError(f"{where}: {len(arr)} rows, but the split has {sd.n} examples",
                             "give one row per example of the split (or pass ids to align by id)")
    if kind in ("logits", "probs", "features"):
        if arr.ndim != 2:
            raise DivergentError(f"{where}: expected a 2-D array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise DivergentError(f"{where}: expected floats, got {arr.dtype}")
        out = arr.astype(np.float16 if arr.dtype == np.float16 else np.float32)
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1))[:3]
            raise DivergentError(f"{where}: NaN or Inf values (rows {bad.tolist()} ...)",
                                 "fix the producer; non-finite scores cannot be compared")
        if kind in ("logits", "probs") and out.shape[1] != sd.n_classes:
            raise DivergentError(
                f"{where}: {out.shape[1]} classes, but the split has {sd.n_classes}",
                "map the model's classes to the split's with a class-mapping file, or store "
                "only its features and fit a linear head (divergent head)")
        if kind == "probs":
            if (out < 0).any():
                raise DivergentError(f"{where}: negative probabilities", "store logits, or valid probabilities")
            sums = out.astype(np.float64).sum(axis=1)
            off = np.abs(sums - 1) > PROB_TOL
            if off.any():
                if not renormalize:
                    raise DivergentError(
                        f"{where}: {int(off.sum())} rows do not sum to 1 (e.g. {sums[off][:3].round(4).tolist()})",
                        "pass --renormalize (renormalize=True) to divide each row by its sum; it is recorded on the card")
                if (sums <= 0).any():
                    raise DivergentError(f"{where}: rows summing to 0 cannot be renormalised")
                out = (out.astype(np.float64) / sums[:, None]).astype(np.float32)
                meta["renormalized"] = True
        return out
    if kind == "pred":
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise DivergentError(f"{where}: expected integer class ids (N,) or (N, k), got {arr.dtype} {arr.shape}")
        if arr.min() < 0 or arr.max() >= sd.n_classes:
            raise DivergentError(f"{where}: class ids outside 0..{sd.n_classes - 1}",
                                 "map the model's classes to the split's classes first")
        return arr.astype(np.int32)
    if kind == "scores":
        if arr.ndim == 1:
            arr = arr[:, None]
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DivergentError(f"{where}: NaN or Inf values")
        return out
    raise DivergentError(f"unknown array kind {kind!r}", f"use one of {', '.join(KINDS)}")


def _collect_garbage(root: Path, m: dict) -> None:
    """Remove array files no longer referenced by the manifest (after it was published)."""
    live = {e["path"] for s in m["splits"].values() for e in s["files"].values()}
    live |= {a["path"] for me in m["models"].values() for se in me["splits"].values() for a in se["arrays"].values()}
    for sub in ("splits", "models"):
        base = root / sub
        if not base.exists():
            continue
        for p in base.rglob("*.npy"):
            if str(p.relative_to(root)) not in live:
                p.unlink(missing_ok=True)
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass


def stage_entry(store_path, model: str, split: str, *, arrays: dict[str, np.ndarray], card=None,
                ids=None, meta: dict | None = None, force: bool = False) -> Path:
    """Stage one (model, split) entry for the writer, without taking the lock.

    Safe from many processes at once; the one writer validates and commits it with
    ``writer.commit_staged(path)``.
    """
    check_name(model)
    root = Path(store_path) / ".staging"
    stage = root / f"{dir_key(model)}.{_split_dir(split)}.{uuid.uuid4().hex[:8]}"
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    spec = {"model": model, "split": split, "arrays": {}, "force": force, "meta": meta or {},
            "card": (card.to_dict() if isinstance(card, ModelCard) else card),
            "ids": None if ids is None else [str(i) for i in ids]}
    for kind, arr in arrays.items():
        if kind not in KINDS:
            raise DivergentError(f"unknown array kind {kind!r}", f"use one of {', '.join(KINDS)}")
        digest = _io.atomic_save_npy(tmp / f"{kind}.npy", np.asarray(arr))
        spec["arrays"][kind] = {"file": f"{kind}.npy", "sha256": digest}
    _io.atomic_write_json(tmp / "entry.json", spec)
    os.replace(tmp, stage)
    return stage


def staged_entries(store_path) -> list[Path]:
    root = Path(store_path) / ".staging"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "entry.json").exists())
