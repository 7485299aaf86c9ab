"""The store's read side: :class:`Store` opens a store, reads its splits, cards and arrays (memory-
mapped, each checked against its sha256 before its first use in a process), and opens the one writer.

Array files are content-addressed (<h> = first 16 hex digits of their sha256) and never
overwritten, and the manifest is replaced atomically last, so a write interrupted at any point
leaves the previous consistent store. The manifest carries a checksum of its own content, every
array is checked against its sha256 before its first use in a process (the verdict is remembered
per file), and temporary files name the process that writes them, so that the leftovers of a
killed process can be told from work in progress (`leftovers`). Layout: divergent.store.layout.
"""
from __future__ import annotations

import os
import tokenize
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..cards import ModelCard
from ..errors import CorruptStoreError, DivergentError, unknown
from ..metrics.probs import as_logits32
from . import manifest as _manifest
from .cache import DerivedCache
from .checks import store_problems
from .layout import MANIFEST, cache_area
from .cleanup import remove_leftovers
from .lock import WriterLock, writer_wait
from .manifest import MANIFEST_FIX, SplitData
from .verdicts import Verdicts, file_sig, hash_checked
from .writer import Writer

__all__ = ["Store", "SplitData"]


class Store:
    """Read side of a store. Open with :meth:`open`; write through :meth:`writer`."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self._m = manifest
        self._split_cache: dict[str, SplitData] = {}
        self._verdicts: Verdicts | None = None
        self.manifest_problem: str | None = None

    # ---- opening ----------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, exist_ok: bool = False) -> "Store":
        root = Path(path)
        if (root / MANIFEST).exists():
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
        m = _manifest.write_new(root)
        return cls(root, m)

    @classmethod
    def open(cls, path, *, create: bool = False, check: bool = True) -> "Store":
        """Open a store. A manifest that does not match its checksum is refused (CorruptStoreError)
        unless `check=False` (what `verify` uses to report everything else too)."""
        root = Path(path)
        if create and not (root / MANIFEST).exists():
            return cls.create(root)
        m, problem = _manifest.read(root)
        if problem and check:
            raise CorruptStoreError(f"{problem}: {root}", MANIFEST_FIX)
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

    def split_info(self, split: str, what: str = "labels") -> dict:
        """The manifest's record (path, sha256, dtype, shape) of a split's `labels` or `ids` file."""
        if what not in ("labels", "ids"):
            raise DivergentError(f"a split has labels and ids, not {what!r}", "ask for 'labels' or 'ids'")
        return self._split_entry(split)["files"][what]

    def labels_sha256(self, split: str) -> str:
        """The sha256 of the split's labels file (what results computed from the labels depend on)."""
        return self.split_info(split, "labels")["sha256"]

    def card(self, model: str) -> ModelCard:
        return ModelCard.from_dict(self._model_entry(model)["card"])

    def cards(self) -> dict[str, ModelCard]:
        return {m: self.card(m) for m in self.models}

    def kinds(self, model: str, split: str) -> list[str]:
        return sorted(self._model_entry(model)["splits"].get(split, {}).get("arrays", {}))

    def has(self, model: str, split: str, kind: str = "logits") -> bool:
        return kind in self._m["models"].get(model, {}).get("splits", {}).get(split, {}).get("arrays", {})

    def has_scores(self, model: str, split: str) -> bool:
        """Whether the model has logits or probabilities on the split."""
        return self.has(model, split, "logits") or self.has(model, split, "probs")

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

    def predictions(self, model: str, split: str) -> np.ndarray:
        """Top-1 class ids (int64): the argmax of the scores (ties to the lowest index; a temperature
        does not change it), else the stored decisions' first column."""
        for kind in ("logits", "probs"):
            if self.has(model, split, kind):
                return _argmax_stream(self.array(model, split, kind))
        if self.has(model, split, "pred"):
            return np.asarray(self.array(model, split, "pred")[:, 0], dtype=np.int64)
        raise DivergentError(f"model {model!r} has no predictions on split {split!r}",
                             "extract or import its predictions for this split")

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
    def verdicts(self) -> Verdicts:
        if self._verdicts is None:
            self._verdicts = Verdicts(self.root)
        return self._verdicts

    def _missing(self, info: dict) -> DivergentError:
        """The error for an array file that is not there: the store changed since this process read
        its manifest (another writer replaced the array), or the file was lost; or, in a partial
        copy of the store (layout.PARTIAL), a model or split the copy was made without."""
        left_out = self._left_out(info)
        if left_out is not None:
            return left_out
        now = _manifest.checksum_on_disk(self.root)
        if now is not None and now != self._m.get("checksum"):
            return DivergentError(f"array file {info['path']} was replaced by another process while this one read the store",
                                  "run the command again (it reads the store as it is now)")
        return CorruptStoreError(f"array file {info['path']} is missing from {self.root}",
                                 "run `divergent verify STORE`; re-import or re-extract the affected model")

    def _left_out(self, info: dict) -> DivergentError | None:
        """The error for an array file a partial copy of the store holds no copy of (None otherwise)."""
        import json

        from .layout import PARTIAL

        try:
            part = json.loads((self.root / PARTIAL).read_text())
        except (OSError, ValueError):
            return None
        for model, entry in self._m["models"].items():
            for split, se in entry["splits"].items():
                if any(a.get("path") == info.get("path") for a in se["arrays"].values()):
                    if model in part.get("models", ()) and part.get("split") in (None, split):
                        return None
                    what = f"model {model!r}" + (f" on split {split!r}" if model in part.get("models", ()) else "")
                    held = ", ".join(repr(m) for m in part.get("models", ())) or "no model"
                    on = f" on split {part['split']!r}" if part.get("split") else ""
                    return DivergentError(f"{what} is not in this copy of the store at {self.root}: it holds the "
                                          f"arrays of {held}{on} only ({part.get('why', 'a partial copy')})",
                                          part.get("fix") or "read the whole store")
        return None

    def _path_of(self, info: dict) -> Path:
        rel = str(info.get("path", ""))
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise CorruptStoreError(f"the manifest names an array file outside the store ({rel!r})", MANIFEST_FIX)
        return self.root / rel

    def ensure_checked(self, infos: list[dict], *, force: bool = False, workers: int = 2) -> None:
        """Check array files against their sha256 (CorruptStoreError on a mismatch or a missing file).

        Each file is hashed at most once per process and, through STORE/cache/verdicts.json, once
        for as long as its inode, size, mtime and ctime stay the same; `force` hashes again."""
        todo = []
        for info in {i["path"]: i for i in infos}.values():
            path = self._path_of(info)
            try:
                sig = file_sig(os.stat(path))
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
            return info, hash_checked(self.root / info["path"])

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
        """Re-check everything; returns a list of problems (empty when all is well): the manifest's
        checksum and the consistency of its values (sizes, classes, temperatures and the arrays they
        were fitted on), every array file's sha256 (hashed afresh), shape and dtype, and every cached
        derived result under STORE/cache against its own checksums and key."""
        return store_problems(self)

    # ---- derived results -----------------------------------------------------------------
    def derived_cache(self, area: str, split: str | None = None) -> DerivedCache:
        """The cache of derived results of `area` (per split when `split` is given) under
        STORE/cache: keyed by and checked against their inputs, safe to delete."""
        return DerivedCache(self.root, cache_area(area, split))

    # ---- writing -----------------------------------------------------------------------
    @contextmanager
    def writer(self, command: str | None = None, *, wait: float | None = None) -> Iterator["Writer"]:
        """Exclusive writer: takes the lock, and publishes the manifest atomically on success.

        Waits up to `wait` seconds for another writer (default: the `lock_wait` in force, else 0)."""
        lock = WriterLock(self.root)
        lock.acquire(writer_wait() if wait is None else wait)
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


def _argmax_stream(arr: np.ndarray, block: int = 16384) -> np.ndarray:
    out = np.empty(len(arr), dtype=np.int64)
    for s in range(0, len(arr), block):
        out[s : s + block] = np.argmax(as_logits32(arr[s : s + block]), axis=1)
    return out
