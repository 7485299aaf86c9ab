"""Class groups for per-class specialization: built-in groupings as plain data, and group files.

A grouping is a plain ``{group name: [class names]}`` dict. Built-ins cover datasets with a
natural split (the paper's nature vs anthropogenic on CIFAR-10; garments / footwear / bags on
Fashion-MNIST). ImageNet classes are grouped through WordNet ancestors, which the user supplies
as a file (class -> group, or class -> ancestor ids plus group roots).
"""
from __future__ import annotations

import csv
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DivergentError, suggest

#: built-in groupings: name -> (the dataset's class names, {group: [class names]})
BUILTIN_GROUPS: dict[str, dict] = {
    "cifar10": {
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "groups": {
            "nature": ["bird", "cat", "deer", "dog", "frog", "horse"],          # animals
            "anthropogenic": ["airplane", "automobile", "ship", "truck"],      # vehicles
        },
    },
    "fashion-mnist": {
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot"],
        "groups": {
            "garments": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"],
            "footwear": ["Sandal", "Sneaker", "Ankle boot"],
            "bags": ["Bag"],
        },
    },
}

#: WordNet roots (noun synset ids) of the paper's nature vs anthropogenic split, for
#: :func:`groups_from_ancestors` on ImageNet (the first matching group wins, in this order)
IMAGENET_WORDNET_ROOTS: dict[str, list[str]] = {
    "anthropogenic": ["n00021939"],                      # artifact, artefact
    "nature": ["n00015388", "n00017222", "n12992868",    # animal, plant, fungus
               "n09287968", "n00019128"],                # geological formation, natural object
}


def normalize(name: str) -> str:
    """Case- and punctuation-insensitive class key: 'T-shirt/top' -> 'tshirttop'."""
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


def builtin_for(class_names: Sequence[str]) -> tuple[str, dict[str, list[str]]]:
    """(name, groups) of the built-in grouping whose classes are exactly these (order-free)."""
    want = sorted(normalize(c) for c in class_names)
    for name, spec in BUILTIN_GROUPS.items():
        if sorted(normalize(c) for c in spec["classes"]) == want:
            return name, {g: list(cs) for g, cs in spec["groups"].items()}
    raise DivergentError(
        f"no built-in class groups for these {len(class_names)} classes "
        f"(built-ins: {', '.join(BUILTIN_GROUPS)})",
        "pass a group file (--groups FILE: TOML/JSON {group = [class names]}, or a class -> group "
        "mapping, e.g. from WordNet ancestors for ImageNet)",
    )


def groups_from_ancestors(class_ancestors: Mapping[str, Sequence[str]],
                          roots: Mapping[str, Sequence[str]] = IMAGENET_WORDNET_ROOTS) -> dict[str, list[str]]:
    """Group classes by WordNet ancestors: a class joins the first group (in ``roots`` order)
    one of whose root ids is among its ancestors; classes matching no root stay ungrouped."""
    out: dict[str, list[str]] = {g: [] for g in roots}
    for cls, anc in class_ancestors.items():
        anc_set = set(anc)
        for g, rs in roots.items():
            if anc_set.intersection(rs):
                out[g].append(cls)
                break
    return {g: cs for g, cs in out.items() if cs}


def _from_mapping(data: Mapping) -> dict[str, list[str]]:
    if "ancestors" in data:
        return groups_from_ancestors(data["ancestors"], data.get("roots", IMAGENET_WORDNET_ROOTS))
    if "groups" in data and isinstance(data["groups"], Mapping):
        data = data["groups"]
    elif "classes" in data and isinstance(data["classes"], Mapping):
        data = data["classes"]
    if not data:
        raise DivergentError("the group file defines no groups", "write {group = [class names]} entries")
    values = list(data.values())
    if all(isinstance(v, str) for v in values):              # class -> group
        out: dict[str, list[str]] = {}
        for cls, g in data.items():
            out.setdefault(g, []).append(str(cls))
        return out
    if all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in values):
        return {str(g): list(cs) for g, cs in data.items()}
    raise DivergentError(
        "the group file mixes forms or has values that are neither class lists nor group names",
        "use either {group: [class, ...]} or {class: group} (or {ancestors: {class: [wnid, ...]}, roots: ...})",
    )


def load_groups(path: str | Path) -> dict[str, list[str]]:
    """Read a group file: TOML or JSON ({group: [classes]}, {class: group}, optionally under a
    'groups' / 'classes' key, or {ancestors: {class: [wnids]}, roots: {group: [wnids]}}), or a
    CSV/TSV with columns class,group."""
    path = Path(path)
    if not path.is_file():
        raise DivergentError(f"group file {str(path)!r} does not exist", "pass the path of a TOML, JSON or CSV file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        elif suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                if not reader.fieldnames or not {"class", "group"} <= set(reader.fieldnames):
                    raise DivergentError(f"{path.name}: needs a header with columns 'class' and 'group'",
                                         "write a first line 'class,group'")
                data = {row["class"]: row["group"] for row in reader if row["class"]}
        else:
            raise DivergentError(f"unknown group file type {suffix!r}", "use .toml, .json, .csv or .tsv")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise DivergentError(f"cannot parse group file {path.name}: {exc}", "fix the file's syntax") from exc
    if not isinstance(data, Mapping):
        raise DivergentError(f"{path.name} must hold a mapping", "write {group: [class names]}")
    return _from_mapping(data)


def resolve_groups(groups, class_names: Sequence[str]) -> tuple[str, dict[str, list[str]]]:
    """(source, groups) from None / 'builtin' / a path / a mapping; source says where they came from."""
    if groups is None:
        return "none", {}
    if isinstance(groups, str) and groups == "builtin":
        name, g = builtin_for(class_names)
        return f"builtin:{name}", g
    if isinstance(groups, Mapping):
        return "mapping", _from_mapping(groups)
    return f"file:{Path(groups).name}", load_groups(groups)


def group_index(groups: Mapping[str, Sequence[str]], class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(group names, per-class group index with -1 for ungrouped); every named class must exist
    (matched case- and punctuation-insensitively, by name or by index string) and be in one group."""
    keys = {normalize(c): i for i, c in enumerate(class_names)}
    names = list(groups)
    idx = np.full(len(class_names), -1, dtype=np.int64)
    for gi, g in enumerate(names):
        for cls in groups[g]:
            k = normalize(cls)
            ci = keys.get(k)
            if ci is None and str(cls).isdigit() and int(cls) < len(class_names):
                ci = int(cls)
            if ci is None:
                raise DivergentError(f"group {g!r} names class {cls!r}, which is not in this split",
                                     suggest(str(cls), class_names, "class"))
            if idx[ci] >= 0 and idx[ci] != gi:
                raise DivergentError(f"class {class_names[ci]!r} is in two groups ({names[idx[ci]]!r} and {g!r})",
                                     "put every class in at most one group")
            idx[ci] = gi
    return names, idx
