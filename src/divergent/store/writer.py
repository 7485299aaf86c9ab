"""The store's writer: every mutation is validated fully before anything is written; array files
are content-addressed and never overwritten; the manifest is published atomically, last."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._files import crash_point, save_npy_addressed
from ..cards import ModelCard
from ..conventions import check_name
from ..errors import DivergentError, unknown
from . import staging
from .align import align_ids
from .layout import dir_key, split_dir
from .cleanup import collect_garbage
from .manifest import COMMITTED_KEPT, live_paths, provenance, publish, sealed, utcnow
from .staging import read_staged
from .validate import clean_split, validate_array


class Writer:
    """Mutations of a store; every method validates fully before touching anything."""

    def __init__(self, store, command: str | None):  # store: the Store being written
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
        final, digest = save_npy_addressed(self.root / rel_dir, kind, arr)
        self._new_files.append(final)
        return {"path": str(final.relative_to(self.root)), "sha256": digest, "dtype": str(arr.dtype),
                "shape": list(arr.shape)}

    # splits
    def add_split(self, name: str, *, labels, class_names, ids, dataset: str = "", meta: dict | None = None) -> None:
        name, labels, class_names, ids = clean_split(name, labels, class_names, ids)
        n = len(labels)
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
            clean[kind] = validate_array(kind, arr, sd, model, renormalize, meta)
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
            se["arrays"][kind] = self._save(f"{entry['dir']}/{split_dir(split)}", kind, arr)
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
        spec, arrays = read_staged(stage, self._m.get("committed_stages", []))
        self.put(spec["model"], spec["split"], card=spec.get("card"), force=spec.get("force", False),
                 meta=spec.get("meta"), ids=spec.get("ids"), **arrays)
        self._m["committed_stages"] = (self._m.get("committed_stages", []) + [stage.name])[-COMMITTED_KEPT:]
        self._after_publish_remove = getattr(self, "_after_publish_remove", []) + [stage]
        return spec["model"]

    def _publish(self) -> None:
        if not self._dirty:
            return
        self._m["updated"] = utcnow()
        self._m["provenance"] = (self._m.get("provenance", []) + [provenance(self._command)])[-50:]
        self._m = sealed(self._m)
        publish(self.root, self._m)
        crash_point("manifest-published")
        self.store._m = self._m
        for stage in getattr(self, "_after_publish_remove", []):
            staging.remove_committed(stage)
        collect_garbage(self.root, self._m)
        self.store.verdicts.save(live=live_paths(self._m))
