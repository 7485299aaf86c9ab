"""imagenet-testbed evaluations (Taori et al. 2020, github.com/modestyachts/imagenet-testbed).

``src/inference.py`` writes, per (model, evaluation setting), a log directory holding
``logits.pt`` (``torch.save`` of an (N, K) float tensor), ``targets.pt`` (an (N,) integer tensor),
``metrics.json`` (top-1/top-5 ...) and ``image_paths.pkl`` (the image paths relative to the
dataset root, written with ``numpy.save`` despite its name); ``eval.py`` adds ``task.cmd``, the
command line with ``--model=...`` and ``--eval-setting=...``.

The tensors are read with ``torch.load(weights_only=True)`` and the paths with ``numpy.load``
(no pickle) or, for a real pickle, the restricted unpickler (arrays and lists of strings only):
no code from the files is run. The evaluation setting names the split: ``val`` is ``--split``
itself, any other setting a shifted split ``<split>~<setting>`` (``test~imagenetv2-matched-frequency``),
created from the targets and paths when absent. K = 1,000 outputs are ImageNet-1k's classes in
index order (the split's classes are their WordNet ids); 200 outputs on ``imagenet-r`` /
``imagenet-a`` are those subsets' classes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...errors import DivergentError
from . import Entry

SHIFT_SEP = "~"  # shifted splits are <split>~<shift> (docs/conventions.md)
IN_DISTRIBUTION = ("val",)
_FIX = "give an imagenet-testbed log directory (logits.pt, targets.pt, and optionally image_paths.pkl, metrics.json, task.cmd)"


def _tensor(path: Path, what: str) -> np.ndarray:
    from ...errors import require

    torch = require("torch", "torch")
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DivergentError(f"no {path.name} in {path.parent}", _FIX) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for refused or damaged files
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DivergentError(f"{path} is not a plain tensor file ({type(exc).__name__}: {first})",
                             f"{what} must be torch.save(tensor) output; re-run the evaluation") from None
    if not isinstance(t, torch.Tensor):
        raise DivergentError(f"{path} holds a {type(t).__name__}, not a tensor", f"{what} must be torch.save(tensor)")
    return t.detach().cpu().numpy()


def _paths(path: Path) -> np.ndarray | None:
    from ...data.safe_pickle import restricted_loads

    if not path.exists():
        return None
    data = path.read_bytes()
    try:
        if data[:6] == b"\x93NUMPY":
            import io

            arr = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            arr = restricted_loads(data, what=path.name, encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - refused global, truncated or malformed file
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DivergentError(f"{path} is not an array or list of image paths ({type(exc).__name__}: {first})",
                             "image_paths.pkl may only hold strings (numpy.save of the paths); re-run the evaluation") from None
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "US" and arr.ndim == 1:
        return np.asarray([str(p).replace("\\", "/") for p in arr.tolist()])
    if isinstance(arr, (list, tuple)) and all(isinstance(p, str) for p in arr):
        return np.asarray([p.replace("\\", "/") for p in arr])
    raise DivergentError(f"{path} holds {type(arr).__name__}, not a list of image paths",
                         "image_paths.pkl must hold one path (string) per image")


def _task(d: Path) -> dict:
    cmd = d / "task.cmd"
    if not cmd.is_file():
        return {}
    text = cmd.read_text(encoding="utf-8", errors="replace")
    return {k: v for k, v in re.findall(r"--(model|eval-setting)[= ](\S+)", text)}


def _class_names(k: int, setting: str, store, split: str) -> list[str] | None:
    from ...data.imagenet import imagenet_wnids, subset_wnids

    if store is not None and split in store.splits and store.split(split).n_classes == k:
        return None  # the split's own classes
    if k == 1000:
        return list(imagenet_wnids())
    for sub in ("imagenet-r", "imagenet-a"):
        if k == 200 and setting.startswith(sub):
            return list(subset_wnids(sub))
    return None


def read(path: Path, *, split=None, model=None, dataset="", store=None, shift: str | None = None,
         **options) -> list:
    if options:
        raise DivergentError(f"--format imagenet-testbed takes no option(s) {', '.join(sorted(options))}", _FIX)
    d = Path(path)
    if d.is_file():
        d = d.parent
    task = _task(d)
    setting = shift or task.get("eval-setting")
    model = model or task.get("model")
    if split is None:
        raise DivergentError("--format imagenet-testbed needs --split (the in-distribution split, e.g. test)",
                             "pass --split test: setting 'val' imports into it, other settings into test~<setting>")
    if setting is None:
        raise DivergentError(f"{d} has no task.cmd naming its evaluation setting",
                             "pass --shift SETTING (e.g. imagenetv2-matched-frequency, or val)")
    if model is None:
        raise DivergentError(f"{d} has no task.cmd naming its model", "pass --model NAME")
    logits = _tensor(d / "logits.pt", "logits.pt")
    targets = _tensor(d / "targets.pt", "targets.pt")
    if logits.ndim != 2 or logits.dtype.kind != "f":
        raise DivergentError(f"{d / 'logits.pt'} holds {logits.dtype} {logits.shape}, not (N, classes) floats", _FIX)
    if targets.ndim != 1 or targets.dtype.kind not in "iu" or len(targets) != len(logits):
        raise DivergentError(f"{d / 'targets.pt'} holds {targets.dtype} {targets.shape}, not {len(logits)} integer "
                             "class ids", _FIX)
    if len(targets) and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        raise DivergentError(f"{d / 'targets.pt'}: class ids up to {targets.max()} but the logits have "
                             f"{logits.shape[1]} columns (a class_sublist setting with targets in ImageNet-1k space)",
                             "import settings whose targets index the logits' columns")
    ids = _paths(d / "image_paths.pkl")
    if ids is not None and len(ids) != len(logits):
        raise DivergentError(f"{d / 'image_paths.pkl'} holds {len(ids)} paths for {len(logits)} rows of logits", _FIX)
    metrics = {}
    if (d / "metrics.json").is_file():
        try:
            metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DivergentError(f"{d / 'metrics.json'} is not valid JSON ({exc})", "re-run the evaluation, or remove it") from None
        if not isinstance(metrics, dict):
            raise DivergentError(f"{d / 'metrics.json'} is not a JSON object", "re-run the evaluation, or remove it")
    target_split = split if setting in IN_DISTRIBUTION else f"{split}{SHIFT_SEP}{setting}"
    names = _class_names(logits.shape[1], setting, store, target_split)
    from ...sources.timm_names import card_from_name

    card = card_from_name(model, source="imagenet-testbed", default_tag=False)
    card = card.replace(provenance={"imagenet_testbed": {"model": model, "eval_setting": setting, "metrics": metrics}})
    return [Entry(split=target_split, model=model, arrays={"logits": logits.astype(np.float32)}, labels=targets.astype(np.int64),
                  ids=ids, class_names=names, dataset=setting,
                  split_meta={"source": "imagenet-testbed", "eval_setting": setting, "shift_of": split}
                  if target_split != split else {"source": "imagenet-testbed", "eval_setting": setting},
                  card=card, meta={"imported_from": str(d / "logits.pt"), "source": "imagenet-testbed",
                                   "metrics": metrics})]
