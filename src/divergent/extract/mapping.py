"""Class mapping (the paper's "Class Mapping" head): a model's own classes -> the split's classes.

A mapping file assigns source class indices (columns of the model's output, after a
background class is dropped) to target class names:

* CSV: rows ``source_index,target_class`` (a header row ``source,target`` is allowed);
* TOML: a ``[mapping]`` table ``"<source_index>" = "target class"`` or target-keyed lists
  ``[targets] "target class" = [i, j, ...]``.

A target's score is the sum (``rule="sum"``, the default) or the mean (``rule="mean"``, as
model-vs-human aggregates ImageNet probabilities into its 16 categories) of its mapped source
probabilities, renormalised over the targets (rows whose mapped mass is zero become uniform);
unmapped source classes are dropped and counted on the card. A TOML file may set ``rule``.
Built-in mappings are named instead of a path: ``model-vs-human-16`` (ImageNet-1k -> model-vs-human's
16 categories, ``divergent/data/labels/model_vs_human_16class.csv``).

ImageNet needs no file: a split whose classes are WordNet ids (or ImageNet-V2's ``0`` ... ``999``)
and an ImageNet-1k head are matched column by column (:func:`imagenet_head`).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..data.imagenet import IMAGENET_SPACES, imagenet_head  # noqa: F401 - the built-in ImageNet mapping
from ..errors import DivergentError


RULES = ("sum", "mean")
#: built-in mappings: name -> package file under divergent/data/labels/
BUILTIN = {"model-vs-human-16": "model_vs_human_16class.csv"}


class ClassMapping(dict):
    """{source index: target class name} and the rule that aggregates a target's sources (sum | mean)."""

    def __init__(self, items=(), rule: str = "sum"):
        super().__init__(items)
        if rule not in RULES:
            from ..errors import unknown

            raise unknown("mapping rule", rule, RULES)
        self.rule = rule


def mapping_path(path) -> Path:
    """The file of a mapping: a built-in name (``model-vs-human-16``) or a path."""
    if isinstance(path, str) and path in BUILTIN:
        from importlib import resources

        return Path(str(resources.files("divergent.data").joinpath("labels", BUILTIN[path])))
    return Path(path)


def load_mapping(path, rule: str | None = None) -> ClassMapping:
    """Read a CSV or TOML mapping file (or a built-in name) into {source index: target class name}.

    `rule` (sum | mean) overrides the file's own (TOML ``rule = "mean"``; default sum)."""
    p = mapping_path(path)
    file_rule = None
    if not p.exists():
        raise DivergentError(f"mapping file {p} does not exist", "pass a CSV (source_index,target_class) or TOML file")
    out: dict[int, str] = {}

    def add(src, tgt, where):
        try:
            i = int(src)
        except (TypeError, ValueError):
            raise DivergentError(f"{p}: source class {src!r} ({where}) is not an integer index",
                                 "write the model's output column index, e.g. 407,ambulance") from None
        if i < 0:
            raise DivergentError(f"{p}: negative source index {i} ({where})")
        if i in out and out[i] != str(tgt):
            raise DivergentError(f"{p}: source class {i} is mapped twice ({out[i]!r} and {tgt!r})", "map each source class at most once")
        out[i] = str(tgt).strip()

    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DivergentError(f"{p} is not valid TOML: {exc}") from exc
        file_rule = data.get("rule")
        for k, v in (data.get("mapping") or {}).items():
            add(k, v, f"[mapping] {k}")
        for tgt, srcs in (data.get("targets") or {}).items():
            for s in (srcs if isinstance(srcs, list) else [srcs]):
                add(s, tgt, f"[targets] {tgt}")
    else:
        with open(p, newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                row = [c.strip() for c in row]
                if not row or not any(row) or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise DivergentError(f"{p}:{n}: expected 'source_index,target_class', got {row!r}")
                if n == 1 and not row[0].lstrip("-").isdigit():
                    continue  # header
                add(row[0], row[1], f"line {n}")
    if not out:
        raise DivergentError(f"mapping file {p} maps no classes", "add rows source_index,target_class")
    return ClassMapping(out, rule=rule or file_rule or "sum")


def apply_mapping(probs: np.ndarray, mapping: dict[int, str], target_classes: list[str],
                  rule: str | None = None) -> tuple[np.ndarray, dict]:
    """Map (N, K) source probabilities to (N, C) target probabilities (float32) and describe it.

    `rule`: sum (default) or mean of each target's source probabilities (default: the mapping's own)."""
    rule = rule or getattr(mapping, "rule", "sum")
    if rule not in RULES:
        from ..errors import unknown

        raise unknown("mapping rule", rule, RULES)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    bad_src = sorted(i for i in mapping if i >= k)
    if bad_src:
        raise DivergentError(f"the mapping names source classes {bad_src[:5]} but the model has {k} outputs",
                             "source indices count the model's output columns from 0 (after a dropped background class)")
    pos = {c: j for j, c in enumerate(target_classes)}
    bad_tgt = sorted({t for t in mapping.values() if t not in pos})
    if bad_tgt:
        from ..errors import suggest

        raise DivergentError(f"the mapping names target classes {bad_tgt[:5]} that the split does not have",
                             suggest(bad_tgt[0], target_classes, "class"))
    m = np.zeros((k, len(target_classes)), dtype=np.float64)
    for i, t in mapping.items():
        m[i, pos[t]] = 1.0
    if rule == "mean":
        m /= np.maximum(m.sum(axis=0, keepdims=True), 1.0)  # each target: the mean of its sources
    out = probs @ m
    sums = out.sum(axis=1, keepdims=True)
    empty = sums[:, 0] <= 0
    out = np.where(empty[:, None], 1.0 / len(target_classes), out / np.where(sums > 0, sums, 1.0))
    unmapped_targets = [c for c in target_classes if c not in set(mapping.values())]
    info = {
        "mapped_source_classes": len(mapping), "unmapped_source_classes": k - len(mapping),
        "source_classes": k, "target_classes_without_source": unmapped_targets,
        "mean_mapped_mass": float(sums.mean()), "rows_without_mapped_mass": int(empty.sum()), "rule": rule,
    }
    return out.astype(np.float32), info
