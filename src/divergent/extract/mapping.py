"""Class mapping (the paper's "Class Mapping" head): a model's own classes -> the split's classes.

A mapping file assigns source class indices (columns of the model's output, after a
background class is dropped) to target class names:

* CSV: rows ``source_index,target_class`` (a header row ``source,target`` is allowed);
* TOML: a ``[mapping]`` table ``"<source_index>" = "target class"`` or target-keyed lists
  ``[targets] "target class" = [i, j, ...]``.

A target's score is the sum of its mapped source probabilities, renormalised over the targets
(rows whose mapped mass is zero become uniform); unmapped source classes are dropped and
counted on the card.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DivergentError


def load_mapping(path) -> dict[int, str]:
    """Read a CSV or TOML mapping file into {source index: target class name}."""
    p = Path(path)
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
    return out


def apply_mapping(probs: np.ndarray, mapping: dict[int, str], target_classes: list[str]) -> tuple[np.ndarray, dict]:
    """Map (N, K) source probabilities to (N, C) target probabilities (float32) and describe it."""
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
    out = probs @ m
    sums = out.sum(axis=1, keepdims=True)
    empty = sums[:, 0] <= 0
    out = np.where(empty[:, None], 1.0 / len(target_classes), out / np.where(sums > 0, sums, 1.0))
    unmapped_targets = [c for c in target_classes if c not in set(mapping.values())]
    info = {
        "mapped_source_classes": len(mapping), "unmapped_source_classes": k - len(mapping),
        "source_classes": k, "target_classes_without_source": unmapped_targets,
        "mean_mapped_mass": float(sums.mean()), "rows_without_mapped_mass": int(empty.sum()),
    }
    return out.astype(np.float32), info
