"""The on-disk prediction store: a JSON manifest plus checksummed, memory-mapped .npy arrays.

Layout (see docs/store-format.md)::

    STORE/manifest.json                       schema, splits, models, cards, checksums, provenance
    STORE/splits/<split>/labels-<h>.npy       int64 labels (N,) or multi-hot (N, C)
    STORE/splits/<split>/ids-<h>.npy          unicode example ids (N,)
    STORE/models/<key>/<split>/<kind>-<h>.npy logits | probs | pred | scores | features
    STORE/cache/<area>/<key>.bin              derived results keyed by and checked against their inputs
    STORE/cache/verdicts.json                 which array files were hashed and matched (a cache)
    STORE/.staging/                           entries staged by parallel producers
    STORE/.lock                               the one writer's lock

Array files are content-addressed (<h> = first 16 hex digits of their sha256) and never
overwritten, and the manifest is replaced atomically last, so a write interrupted at any point
leaves the previous consistent store. The manifest carries a checksum of its own content, every
array is checked against its sha256 before its first use in a process (the verdict is remembered
per file), and temporary files name the process that writes them, so that the leftovers of a
killed process can be told from work in progress (`leftovers`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import tokenize
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..cards import ModelCard
from ..conventions import check_name  # the one name rule (re-exported here)
from ..errors import CorruptStoreError, DivergentError, unknown
from . import _io

SCHEMA_VERSION = 2
FORMAT = "divergent-store"
KINDS = ("logits", "probs", "pred", "scores", "features")
PROB_TOL = 1e-3
#: a decision-only model's class id for "no answer" (a human who did not respond): counted wrong
NO_ANSWER = -1
#: names of committed staged entries the manifest remembers (so that one left behind by a killed
#: writer is told from one waiting for commit)
COMMITTED_KEPT = 256


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def manifest_checksum(m: dict) -> str:
    """sha256 of the manifest's canonical JSON, its own `checksum` field left out."""
    body = {k: v for k, v in m.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _sealed(m: dict) -> dict:
    """The manifest as it will read back from disk, with its checksum."""
    out = json.loads(json.dumps({k: v for k, v in m.items() if k != "checksum"}, default=str))
    out["checksum"] = manifest_checksum(out)
    return out


def _manifest_problem(m: dict) -> str | None:
    if "checksum" in m:
        if m["checksum"] != manifest_checksum(m):
            return "manifest.json does not match its checksum (it was changed outside divergent, or damaged)"
        return None
    if isinstance(m.get("schema"), int) and m["schema"] >= 2:
        return "manifest.json has no checksum"
    return None  # written by a divergent older than checksums: sealed by the next write


_MANIFEST_FIX = ("restore manifest.json from a backup, or undo the edit (values the analyses use, such as "
                 "temperatures, class names and array checksums, must not be edited by hand); "
                 "`divergent verify STORE` lists every problem")


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
        self._verdicts: _io.Verdicts | None = None
        self.manifest_problem: str | None = None

    # ---- opening ----------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, exist_ok: bool = False) -> "Store":
        root = Path(path)
        if (root / "manifest.json").exists():
            if exist_ok:
                return cls.open(root)
            raise DivergentError(f"a store already exists at {root}", "open it with Store.open, or choose a new path")
        if root.exists() and not root.is_dir():
            raise DivergentError(f"the store path {root} is a file, not a directory",
                                 "give the path of a store directory, or a new path to create one")
        if root.exists() and any(root.iterdir()):
            raise DivergentError(f"{root} exists and is not an empty directory", "choose a new or empty directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DivergentError(f"cannot create the store directory {root} ({exc.strerror or exc})",
                                 "choose a path where you can create a directory") from None
        m = _sealed({"format": FORMAT, "schema": SCHEMA_VERSION, "created": utcnow(), "updated": utcnow(),
                     "splits": {}, "models": {}, "provenance": [_provenance()]})
        _io.atomic_write_json(root / "manifest.json", m)
        return cls(root, m)

    @classmethod
    def open(cls, path, *, create: bool = False, check: bool = True) -> "Store":
        """Open a store. A manifest that does not match its checksum is refused (CorruptStoreError)
        unless `check=False` (what `verify` uses to report everything else too)."""
        root = Path(path)
        mf = root / "manifest.json"
        if not mf.exists():
            if create:
                return cls.create(root)
            raise DivergentError(f"no store at {root} (manifest.json missing)",
                                 "create one with `divergent import` / `divergent extract`, or check the path")
        try:
            m = json.loads(mf.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptStoreError(f"the manifest of {root} is not valid JSON ({exc})",
                                    "restore it from a backup; array files are intact and checksummed") from None
        except OSError as exc:
            raise CorruptStoreError(f"the manifest of {root} cannot be read ({exc})",
                                    "check the path and its permissions") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise CorruptStoreError(f"{mf} is not a divergent store manifest",
                                    "check the path; restore manifest.json from a backup if it was overwritten")
        problem = _manifest_problem(m)
        from .migrate import migrate, shape_problem

        m = migrate(m, root)  # a newer schema is refused first: its checksum may be another
        shape = shape_problem(m)  # nothing can be read (or verified) from a manifest of the wrong shape
        if shape:
            raise CorruptStoreError(f"manifest.json of {root} is malformed: {shape}", _MANIFEST_FIX)
        if problem and check:
            raise CorruptStoreError(f"{problem}: {root}", _MANIFEST_FIX)
        st = cls(root, m)
        st.manifest_problem = problem
        return st

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

    @property
    def verdicts(self) -> _io.Verdicts:
        if self._verdicts is None:
            self._verdicts = _io.Verdicts(self.root)
        return self._verdicts

    def _missing(self, info: dict) -> DivergentError:
        """The error for an array file that is not there: the store changed since this process read
        its manifest (another writer replaced the array), or the file was lost."""
        try:
            now = json.loads((self.root / "manifest.json").read_bytes().decode("utf-8")).get("checksum")
        except (OSError, ValueError):
            now = None
        if now is not None and now != self._m.get("checksum"):
            return DivergentError(f"array file {info['path']} was replaced by another process while this one read the store",
                                  "run the command again (it reads the store as it is now)")
        return CorruptStoreError(f"array file {info['path']} is missing from {self.root}",
                                 "run `divergent verify STORE`; re-import or re-extract the affected model")

    def _path_of(self, info: dict) -> Path:
        rel = str(info.get("path", ""))
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise CorruptStoreError(f"the manifest names an array file outside the store ({rel!r})", _MANIFEST_FIX)
        return self.root / rel

    def ensure_checked(self, infos: list[dict], *, force: bool = False, workers: int = 2) -> None:
        """Check array files against their sha256 (CorruptStoreError on a mismatch or a missing file).

        Each file is hashed at most once per process and, through STORE/cache/verdicts.json, once
        for as long as its inode, size, mtime and ctime stay the same; `force` hashes again."""
        todo = []
        for info in {i["path"]: i for i in infos}.values():
            path = self._path_of(info)
            try:
                sig = _io.file_sig(os.stat(path))
            except FileNotFoundError:
                raise self._missing(info) from None
            if force or self.verdicts.lookup(info["path"], sig) != info["sha256"]:
                todo.append(info)
        bad = [p for p, ok in self._hash_and_record(todo, workers).items() if not ok]
        if bad:
            raise CorruptStoreError(f"array file {bad[0]} does not match its checksum"
                                    + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                                    "run `divergent verify STORE`; re-import or re-extract the affected model "
                                    "(`divergent rm` then import)")

    def _hash_and_record(self, infos: list[dict], workers: int = 2) -> dict[str, bool]:
        """Hash the files (in `workers` threads), record the verdicts of those that match; path -> match."""
        if not infos:
            return {}

        def one(info):
            return info, _io.hash_checked(self.root / info["path"])

        if workers > 1 and len(infos) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, len(infos))) as ex:
                done = list(ex.map(one, infos))
        else:
            done = [one(i) for i in infos]
        out = {}
        for info, (digest, sig, at) in done:
            out[info["path"]] = digest == info["sha256"]
            if out[info["path"]] and sig is not None:
                self.verdicts.record(info["path"], sig, digest, at)
        self.verdicts.save()
        return out

    def _load(self, info: dict, verify: bool = False) -> np.ndarray:
        """Memory-map an array file after checking its shape, dtype and (once) its sha256."""
        path = self._path_of(info)
        if not path.exists():
            raise self._missing(info)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # a damaged .npy header
            raise CorruptStoreError(f"array file {info['path']} is corrupted or truncated ({exc})",
                                    "run `divergent verify STORE`; re-import or re-extract the affected model") from None
        if list(arr.shape) != list(info["shape"]) or str(arr.dtype) != info["dtype"]:
            raise CorruptStoreError(
                f"array file {info['path']} has shape {arr.shape} / {arr.dtype}, manifest says "
                f"{tuple(info['shape'])} / {info['dtype']}", "re-import or re-extract the affected model")
        self.ensure_checked([info], force=verify)
        return arr

    def verify(self) -> list[str]:
        """Re-check everything; returns a list of problems (empty when all is well).

        The manifest's checksum and the consistency of its values (sizes, classes, temperatures and
        the arrays they were fitted on), every array file's sha256 (hashed afresh), shape and dtype,
        and every cached derived result under STORE/cache against its own checksums and key."""
        problems = [self.manifest_problem] if self.manifest_problem else []
        try:
            files = [(f"split {s}", info) for s, e in self._m["splits"].items() for info in e["files"].values()]
            files += [(f"{m} / {s} / {k}", info) for m, e in self._m["models"].items()
                      for s, se in e["splits"].items() for k, info in se["arrays"].items()]
        except (KeyError, AttributeError, TypeError) as exc:
            return problems + [f"manifest.json is malformed ({type(exc).__name__}: {exc})"]
        present = []
        for what, info in files:
            try:
                path = self._path_of(info)
            except (CorruptStoreError, TypeError, AttributeError) as exc:
                problems.append(f"{what}: {getattr(exc, 'problem', exc)}")
                continue
            if not path.exists():
                problems.append(f"{what}: file {info['path']} is missing")
            else:
                present.append((what, info))
        matches = self._hash_and_record([i for _, i in present])
        for what, info in present:
            if not matches[info["path"]]:
                problems.append(f"{what}: file {info['path']} does not match its checksum")
                continue
            try:
                self._load(info)
            except CorruptStoreError as exc:
                problems.append(f"{what}: {exc.problem}")
        problems += self._value_problems()
        problems += [p for p in (check_cache_file(self.root, f) for f in cache_files(self.root)) if p]
        return problems

    def _value_problems(self) -> list[str]:
        """Values of the manifest that contradict each other (sizes, classes, temperatures)."""
        out = []
        m = self._m
        for s, e in m["splits"].items():
            try:
                n, names, files = int(e["n"]), list(e["class_names"]), e["files"]
                if int(e["n_classes"]) != len(names):
                    out.append(f"split {s}: n_classes {e['n_classes']} but {len(names)} class names")
                for k in ("labels", "ids"):
                    if list(files[k]["shape"])[:1] != [n]:
                        out.append(f"split {s}: n is {n} but its {k} have shape {files[k]['shape']}")
            except (KeyError, TypeError, ValueError) as exc:
                out.append(f"split {s}: malformed entry ({type(exc).__name__}: {exc})")
        for mname, me in m["models"].items():
            try:
                for s, se in me["splits"].items():
                    if s not in m["splits"]:
                        out.append(f"{mname}: arrays for split {s!r}, which the store does not have")
                        continue
                    sp = m["splits"][s]
                    for k, info in se["arrays"].items():
                        shape = list(info["shape"])
                        if shape[:1] != [int(sp["n"])]:
                            out.append(f"{mname} / {s} / {k}: {shape[0] if shape else '?'} rows, the split has {sp['n']}")
                        if k in ("logits", "probs") and shape[1:2] != [len(sp["class_names"])]:
                            out.append(f"{mname} / {s} / {k}: {shape[1:2]} classes, the split has {len(sp['class_names'])}")
                cal = me.get("calibration")
                if cal:
                    t = cal.get("temperature")
                    if not (isinstance(t, (int, float)) and np.isfinite(t) and t > 0):
                        out.append(f"{mname}: temperature {t!r} is not a positive number")
                    fit_on, fitted = cal.get("fit_on"), cal.get("fitted_on_sha256")
                    arrays = me["splits"].get(fit_on, {}).get("arrays", {})
                    src = arrays.get("logits") or arrays.get("probs")
                    if fitted is not None and (src is None or src.get("sha256") != fitted):
                        out.append(f"{mname}: its temperature was fitted on {fit_on} scores the store no longer holds "
                                   "(refit with `divergent calibrate`)")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                out.append(f"{mname}: malformed entry ({type(exc).__name__}: {exc})")
        return out

    # ---- writing -----------------------------------------------------------------------
    @contextmanager
    def writer(self, command: str | None = None, *, wait: float | None = None) -> Iterator["Writer"]:
        """Exclusive writer: takes the lock, and publishes the manifest atomically on success.

        Waits up to `wait` seconds for another writer (default: the `_io.lock_wait` in force, else 0)."""
        lock = _io.WriterLock(self.root)
        lock.acquire(_io.writer_wait() if wait is None else wait)
        try:
            fresh = Store.open(self.root)
            remove_leftovers(self.root, fresh._m)
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
        final, digest = _io.save_npy_addressed(self.root / rel_dir, kind, arr)
        self._new_files.append(final)
        return {"path": str(final.relative_to(self.root)), "sha256": digest, "dtype": str(arr.dtype),
                "shape": list(arr.shape)}

    # splits
    def add_split(self, name: str, *, labels, class_names, ids, dataset: str = "", meta: dict | None = None) -> None:
        name = check_name(name, "split")
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
                    raise DivergentError(f"split {name!r}: labels must be integers, got {labels.dtype}",
                                         "give class indices 0, 1, 2, ... (N,) or multi-hot 0/1 labels (N, C)")
            labels = labels.astype(np.int64)
            if labels.min() < 0 or labels.max() >= len(class_names):
                raise DivergentError(
                    f"split {name!r}: labels range {labels.min()}..{labels.max()} but there are "
                    f"{len(class_names)} class names", "give one class name per class index")
        else:
            if not np.isin(labels, (0, 1)).all():
                raise DivergentError(f"split {name!r}: multi-hot labels must be 0 or 1",
                                     "give one 0/1 column per class (1: the class is present)")
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
        model = check_name(model)
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
                    raise DivergentError(f"{kind} has {len(arr)} rows but {len(ids)} ids were given",
                                         "give one id per row")
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

    def set_temperature(self, model: str, temperature: float, *, fit_on: str, fitted_on_sha256: str | None = None,
                        **stats) -> None:
        """Record a temperature fitted on `fit_on`. With `fitted_on_sha256` (the sha256 of the scores
        the fit read), a fit on scores the store no longer holds is refused."""
        entry = self._m["models"].get(model)
        if entry is None:
            raise unknown("model", model, self._m["models"])
        if not (np.isfinite(temperature) and temperature > 0):
            raise DivergentError(f"temperature must be a positive finite number, got {temperature!r}")
        kind = "logits" if "logits" in entry["splits"].get(fit_on, {}).get("arrays", {}) else "probs"
        src = entry["splits"].get(fit_on, {}).get("arrays", {}).get(kind)
        if fitted_on_sha256 is not None and (src is None or src["sha256"] != fitted_on_sha256):
            raise DivergentError(
                f"the {fit_on} scores of {model!r} changed while its temperature was being fitted "
                "(another process replaced them)", "run calibrate again: it fits on the scores the store holds now")
        entry["calibration"] = {"temperature": float(temperature), "fit_on": fit_on, "time": utcnow(),
                                "fitted_on_sha256": src["sha256"] if src else None,
                                **{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in stats.items()}}
        self._dirty = True

    def require_unchanged(self, expected: dict, what: str) -> None:
        """Refuse to write results computed from arrays that changed since they were read:
        `expected` maps (model, split, kind) to the sha256 read (None: absent then)."""
        for (model, split, kind), sha in expected.items():
            now = self._m["models"].get(model, {}).get("splits", {}).get(split, {}).get("arrays", {}).get(kind)
            if (now or {}).get("sha256") != sha:
                raise DivergentError(
                    f"the {kind} of {model!r} on {split!r} changed while {what} was computed from them "
                    "(another process wrote them)", "run it again: it reads the arrays the store holds now")

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
        if stage.name in self._m.get("committed_stages", []):
            raise DivergentError(f"{stage} was committed already", "remove it; the store holds its arrays")
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptStoreError(f"staged entry {stage.name}: entry.json cannot be read ({exc})",
                                    "re-run the producer that staged it") from None
        arrays = {}
        for kind, info in spec["arrays"].items():
            p = stage / info["file"]
            if _io.sha256_file(p) != info["sha256"]:
                raise CorruptStoreError(f"staged {kind} for {spec['model']!r} does not match its checksum",
                                        "re-run the producer that staged it")
            arrays[kind] = np.load(p, allow_pickle=False)
        self.put(spec["model"], spec["split"], card=spec.get("card"), force=spec.get("force", False),
                 meta=spec.get("meta"), ids=spec.get("ids"), **arrays)
        self._m["committed_stages"] = (self._m.get("committed_stages", []) + [stage.name])[-COMMITTED_KEPT:]
        self._after_publish_remove = getattr(self, "_after_publish_remove", []) + [stage]
        return spec["model"]

    def _publish(self) -> None:
        if not self._dirty:
            return
        self._m["updated"] = utcnow()
        self._m["provenance"] = (self._m.get("provenance", []) + [_provenance(self._command)])[-50:]
        self._m = _sealed(self._m)
        _io.atomic_write_json(self.root / "manifest.json", self._m)
        _io.crash_point("manifest-published")
        self.store._m = self._m
        for stage in getattr(self, "_after_publish_remove", []):
            _remove_committed(stage)
        _collect_garbage(self.root, self._m)
        self.store.verdicts.save(live=_live_paths(self._m))


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
            raise DivergentError(f"{where}: expected a 2-D array, got shape {arr.shape}",
                                 "store one row per example and one column per class or feature: shape (N, k)")
        if not np.issubdtype(arr.dtype, np.floating):
            raise DivergentError(f"{where}: expected floats, got {arr.dtype}",
                                 "store scores as float32/float64 (class ids belong in `pred`)")
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
                    raise DivergentError(f"{where}: rows summing to 0 cannot be renormalised",
                                         "store logits, or probabilities with at least one positive entry per row")
                out = (out.astype(np.float64) / sums[:, None]).astype(np.float32)
                meta["renormalized"] = True
        return out
    if kind == "pred":
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise DivergentError(f"{where}: expected integer class ids (N,) or (N, k), got {arr.dtype} {arr.shape}",
                                 "store class indices as integers; scores belong in `logits`, `probs` or `scores`")
        if arr.shape[1] == 0:
            raise DivergentError(f"{where}: no class ids (shape {arr.shape})", "give at least one class id per row")
        if arr.min() < NO_ANSWER or arr.max() >= sd.n_classes:
            raise DivergentError(f"{where}: class ids outside 0..{sd.n_classes - 1} (and {NO_ANSWER}: no answer)",
                                 "map the model's classes to the split's classes first")
        return arr.astype(np.int32)
    if kind == "scores":
        if arr.ndim == 1:
            arr = arr[:, None]
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DivergentError(f"{where}: NaN or Inf values", "fix the producer; give a finite score per class id")
        return out
    raise DivergentError(f"unknown array kind {kind!r}", f"use one of {', '.join(KINDS)}")


def _live_paths(m: dict) -> set[str]:
    live = {e["path"] for s in m["splits"].values() for e in s["files"].values()}
    return live | {a["path"] for me in m["models"].values() for se in me["splits"].values() for a in se["arrays"].values()}


def _collect_garbage(root: Path, m: dict) -> None:
    """Remove array files no longer referenced by the manifest (after it was published)."""
    live = _live_paths(m)
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
    model = check_name(model)
    root = Path(store_path) / ".staging"
    stage = root / f"{dir_key(model)}.{_split_dir(split)}.{uuid.uuid4().hex[:8]}"
    tmp = root / _io.temp_name(stage.name)
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
    _io.crash_point("staged")
    os.replace(tmp, stage)
    return stage


def _finished_stages(root: Path) -> list[Path]:
    st = root / ".staging"
    if not st.exists():
        return []
    return sorted(p for p in st.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "extract"
                  and (p / "entry.json").exists())


def _read_manifest_quietly(root: Path) -> dict:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def staged_entries(store_path) -> list[Path]:
    """Finished staged entries waiting for the writer to commit them (pending)."""
    root = Path(store_path)
    committed = set(_read_manifest_quietly(root).get("committed_stages", []))
    return [p for p in _finished_stages(root) if p.name not in committed]


def _remove_committed(stage: Path) -> None:
    """Remove a committed staged entry: renamed out of the pending ones first (.done-...), then deleted."""
    done = stage.parent / f".done-{stage.name}"
    try:
        os.replace(stage, done)
    except OSError:
        return
    shutil.rmtree(done, ignore_errors=True)


# ---- leftovers --------------------------------------------------------------------------------
def leftovers(store_path, manifest: dict | None = None, *, lock_held: bool = False) -> list[tuple[Path, str]]:
    """What killed processes left behind: (path, why) for each.

    A leftover is a temporary file or staged entry whose producer is gone: a marked temporary of a
    process that no longer runs (anywhere in the store, staging and resumable extraction folders
    included), any temporary or unreferenced array file in the writer's own areas (the manifest,
    splits/, models/) while the writer's lock is held (`lock_held`: only the lock holder writes
    there), and a staged entry the manifest records as committed. Never a finished staged entry
    waiting for commit, nor the chunks and job files of a resumable extraction
    (.staging/extract/<job>/chunk-*, job.json)."""
    root = Path(store_path)
    m = _read_manifest_quietly(root) if manifest is None else manifest
    now = _dt.datetime.now().timestamp()
    out: list[tuple[Path, str]] = []

    def temp(p: Path, writer_area: bool) -> None:
        if _io.is_temp_name(p.name) and _io.temp_is_leftover(p, writer_area=writer_area, lock_held=lock_held, now=now):
            out.append((p, "temporary of a process that is gone"))

    if root.exists():
        for p in root.iterdir():
            if p.is_file():
                temp(p, True)
    try:
        live = _live_paths(m) if m else None
    except (KeyError, AttributeError, TypeError):
        live = None
    for sub in ("splits", "models"):
        base = root / sub
        if not base.exists():
            continue
        for p in base.rglob("*"):
            if p.is_dir():
                continue
            if p.name.startswith("."):
                if _io.is_temp_name(p.name):
                    temp(p, True)
                elif lock_held:
                    out.append((p, "temporary of an interrupted write"))
            elif lock_held and live is not None and p.suffix == ".npy" and str(p.relative_to(root)) not in live:
                out.append((p, "array file no manifest refers to (an interrupted write)"))
    cache = root / "cache"
    if cache.exists():
        for p in cache.rglob("*.tmp"):
            temp(p, False)
    staging = root / ".staging"
    if staging.exists():
        committed = set(m.get("committed_stages", []))
        for p in staging.iterdir():
            if p.name == "extract" and p.is_dir():
                for job in p.iterdir():
                    if job.is_dir():
                        for q in job.iterdir():
                            temp(q, False)
                    else:
                        temp(job, False)
            elif _io.is_temp_name(p.name):
                temp(p, False)
            elif p.name.startswith(".done-"):
                out.append((p, "staged entry committed, its removal interrupted"))
            elif p.is_dir() and p.name in committed:
                out.append((p, "staged entry committed already"))
    return sorted(out)


def remove_leftovers(store_path, manifest: dict | None = None) -> list[Path]:
    """Delete the leftovers (the writer calls this while it holds the lock)."""
    gone = []
    for p, _why in leftovers(store_path, manifest, lock_held=True):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            gone.append(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # not ours to remove (permissions): listed again by verify
    return gone


# ---- derived results ----------------------------------------------------------------------------
CACHE_FORMAT = "divergent-cache"


def cache_key(area: str, deps: dict) -> str:
    text = json.dumps({"area": area, "deps": deps}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _array_sha(a) -> str:
    return hashlib.sha256(a if isinstance(a, (bytes, memoryview)) else np.ascontiguousarray(a).tobytes()).hexdigest()


class DerivedCache:
    """Derived results under STORE/cache/<area>/<key>.bin.

    `deps` names everything a result depends on (content hashes, temperatures, versions); the key is
    a hash of it. A file is one line of JSON (format, area, key, deps, and per array its dtype,
    shape, byte range and sha256), then the arrays' raw bytes; all of it is checked on every read,
    and a file that does not match is refused (CorruptStoreError), never used. Safe to delete."""

    def __init__(self, store_path, area: str):
        self.root = Path(store_path)
        self.area = area
        self.dir = self.root / "cache" / area

    def path(self, deps: dict) -> Path:
        return self.dir / f"{cache_key(self.area, deps)}.bin"

    def get(self, deps: dict) -> dict[str, np.ndarray] | None:
        p = self.path(deps)
        if not p.exists():
            return None
        got = _read_cache_file(self.root, p)
        if isinstance(got, str):
            raise CorruptStoreError(got, f"delete {p} (a derived result: it is recomputed), then run "
                                         "`divergent verify STORE` to check the rest")
        meta, arrays = got
        if meta["deps"] != json.loads(json.dumps(deps)):
            raise CorruptStoreError(f"cached result {p.relative_to(self.root)} was computed from other inputs than its key says",
                                    f"delete {p} (a derived result: it is recomputed)")
        return arrays

    def put(self, deps: dict, arrays: dict[str, np.ndarray]) -> Path:
        p = self.path(deps)
        info, parts, off = {}, [], 0
        for k, a in arrays.items():
            raw = np.ascontiguousarray(a).tobytes()
            info[k] = {"dtype": str(np.asarray(a).dtype), "shape": list(np.shape(a)), "offset": off,
                       "nbytes": len(raw), "sha256": _array_sha(raw)}
            parts.append(raw)
            off += len(raw)
        meta = {"format": CACHE_FORMAT, "version": 1, "area": self.area, "key": p.stem, "deps": deps, "arrays": info}
        head = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        _io.atomic_write_bytes(p, head + b"".join(parts), durable=False)  # checked on every read: no fsync needed
        return p


def cache_files(store_path) -> list[Path]:
    d = Path(store_path) / "cache"
    return sorted(d.rglob("*.bin")) if d.exists() else []


def _read_cache_file(root: Path, p: Path):
    """(meta, arrays) of a cache file, or a string saying what is wrong with it."""
    rel = p.relative_to(root)
    try:
        data = p.read_bytes()
        nl = data.index(b"\n")
        meta = json.loads(data[:nl].decode("utf-8"))
    except (OSError, ValueError) as exc:
        return f"cached result {rel} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or not isinstance(meta.get("deps"), dict):
        return f"cached result {rel} is not a divergent cache file"
    area = str(p.parent.relative_to(root / "cache"))
    if meta.get("area") != area or meta.get("key") != p.stem or cache_key(area, meta["deps"]) != p.stem:
        return f"cached result {rel} does not belong to its key (its recorded inputs hash to another name)"
    body = memoryview(data)[nl + 1 :]
    info = meta.get("arrays")
    try:
        if sum(int(i["nbytes"]) for i in info.values()) != len(body):
            return f"cached result {rel} has {len(body)} bytes of data, its header says otherwise (truncated or extended)"
        out = {}
        for k, i in info.items():
            raw = body[int(i["offset"]) : int(i["offset"]) + int(i["nbytes"])]
            if _array_sha(raw) != i["sha256"]:
                return f"cached result {rel}: array {k!r} does not match its checksum"
            dt = np.dtype(i["dtype"])
            if dt.hasobject:
                return f"cached result {rel}: array {k!r} has dtype {dt}"
            out[k] = np.frombuffer(raw, dtype=dt).reshape(i["shape"]).copy()
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return f"cached result {rel} has a malformed header ({type(exc).__name__}: {exc})"
    return meta, out


def check_cache_file(store_path, p: Path) -> str | None:
    got = _read_cache_file(Path(store_path), Path(p))
    return got if isinstance(got, str) else None


# ---- verify -----------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    problems: list[str]                     # corruption: a non-empty list is a failed verify
    leftovers: list[tuple[Path, str]]       # what killed processes left (removed by the next writer)
    pending: list[Path]                     # finished staged entries waiting for a writer to commit them
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _lock_is_free(root: Path) -> bool:
    """Whether no writer holds the lock: read from /proc/locks where there is one (so that looking
    never makes a starting writer fail), else by taking the lock for a moment."""
    held = _io.flock_held(root / ".lock")
    if held is not None:
        return not held
    lock = _io.WriterLock(root)
    try:
        lock.acquire(0)
    except (DivergentError, OSError):
        return False
    lock.release()
    return True


def verify_store(store_path) -> VerifyReport:
    """Everything `divergent verify` reports: problems (corruption), leftovers, pending entries."""
    root = Path(store_path)
    st = Store.open(root, check=False)
    problems = st.verify()
    free = _lock_is_free(root)
    notes = []
    if "checksum" not in st._m:
        notes.append("manifest.json has no checksum yet (written by an older divergent); the next write adds one")
    if st.verdicts.unreadable:
        notes.append(f"{_io.VERDICTS} could not be read; it is rewritten (files are hashed again)")
    if not free:
        notes.append("a writer holds the lock: its temporary files are not counted as leftovers")
    return VerifyReport(problems, leftovers(root, st._m, lock_held=free), staged_entries(root), notes)

