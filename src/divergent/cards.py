"""Model cards (how a model was trained, in closed vocabularies) and the paper's category rule."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .errors import DivergentError, suggest

FAMILIES = (
    "resnet", "wide-resnet", "resnext", "vgg", "densenet", "inception", "efficientnet",
    "mobilenet", "vit", "deit", "swin", "convnext", "mlp", "mixer", "cnn", "lenet",
    "regnet", "yolo", "clip", "other", "unknown",
)
OBJECTIVES = (
    "supervised", "contrastive", "distillation", "autoencoder", "masked-image",
    "detection", "pseudo-label", "self-supervised", "unknown",
)
HEADS = ("trained", "fine-tuned", "linear-probe", "zero-shot", "class-mapping", "none")
#: the paper's categories, from most similar to most different (Section 3.1)
CATEGORIES = ("reinit", "hyperparameters", "architecture", "framework", "dataset")
#: controls that are not among the paper's five
CONTROLS = ("subset", "identical")
CATEGORY_ORDER = ("identical", "reinit", "subset", "hyperparameters", "architecture", "framework", "dataset")

#: canonical names of training datasets: a JPEG copy of CIFAR-10 is CIFAR-10
DATASET_ALIASES = {
    "cifar-10": "cifar10", "cifar10-jpeg": "cifar10", "cifar10": "cifar10",
    "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "imagenet-1k": "imagenet", "in1k": "imagenet", "ilsvrc2012": "imagenet", "imagenet": "imagenet",
    "inat": "inaturalist", "inaturalist": "inaturalist",
}


def canonical_dataset(name: str | None) -> str:
    if not name:
        return "unknown"
    key = name.strip().lower()
    return DATASET_ALIASES.get(key, key)


@dataclass
class ModelCard:
    """What is known about how a model was trained; every field is plain JSON."""

    name: str
    family: str = "unknown"
    depth: int | None = None
    width: float | None = None
    objective: str = "supervised"
    train_data: str = "unknown"
    subset: str | None = None
    head: str = "trained"
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    source: str = ""
    license: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: the architecture's own name when `family` is other/unknown (e.g. coatnet, levit): compared by name
    architecture: str = ""

    def __post_init__(self):
        _check_types(self)
        self.train_data = canonical_dataset(self.train_data)
        for value, vocab, what in (
            (self.family, FAMILIES, "family"),
            (self.objective, OBJECTIVES, "objective"),
            (self.head, HEADS, "head"),
        ):
            if value not in vocab:
                raise DivergentError(
                    f"card of {self.name!r}: unknown {what} {value!r}",
                    f"use one of {', '.join(vocab)} ({suggest(value, vocab, what)})",
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "card") -> "ModelCard":
        if not isinstance(d, dict):
            raise DivergentError(f"{source} must be a table of fields (name = ..., family = ...), "
                                 f"got a {_json_type(d)}", "write the card as one JSON object or a TOML table")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise DivergentError(
                f"{source} has unknown fields {bad}", f"allowed fields: {', '.join(sorted(known))}"
            )
        if "name" not in d:
            raise DivergentError(f"{source} has no `name` field",
                                 'add name = "MODEL" (the model\'s name in the store)')
        try:
            return cls(**d)
        except DivergentError as exc:
            if source == "card":
                raise
            raise DivergentError(f"{source}: {exc.problem}", exc.fix) from None

    @classmethod
    def load(cls, path) -> "ModelCard":
        """Read a card from JSON or TOML."""
        from pathlib import Path

        p = Path(path)
        if p.suffix not in (".toml", ".json"):
            raise DivergentError(f"cannot read the card {p}: unknown file type {p.suffix or '(none)'!r}",
                                 "give a .toml or .json card")
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DivergentError(f"no such card file: {p}", "check the --card path") from None
        except UnicodeDecodeError as exc:
            raise DivergentError(f"the card {p} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                 "save the card as UTF-8") from None
        except OSError as exc:
            raise DivergentError(f"cannot read the card {p} ({exc.strerror or exc})",
                                 "give the path of a readable .toml or .json file") from None
        try:
            if p.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
            raise DivergentError(f"the card {p} is not valid {p.suffix[1:].upper()}: {exc}",
                                 "fix the syntax at the position given") from None
        return cls.from_dict(data, source=f"the card {p}")

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **changes)


#: field -> (allowed types, what to write in a message); ints and floats are coerced to plain
#: Python numbers so that the manifest stores them as numbers
_FIELD_TYPES = {
    "name": ("str", "a string"), "family": ("str", "a string"), "objective": ("str", "a string"),
    "train_data": ("str", "a string"), "head": ("str", "a string"), "source": ("str", "a string"),
    "notes": ("str", "a string"),
    "architecture": ("str", "a string"),
    "subset": ("str?", "a string"), "license": ("str?", "a string"),
    "depth": ("int?", "an integer"), "seed": ("int?", "an integer"),
    "width": ("float?", "a finite number"),
    "hparams": ("dict", "a table of values"), "preprocessing": ("dict", "a table of values"),
    "provenance": ("dict", "a table of values"), "extra": ("dict", "a table of values"),
}


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean ({v!r})"
    if isinstance(v, str):
        return f"string ({v!r})"
    if isinstance(v, numbers.Number):
        return f"number ({v!r})"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "table"
    return type(v).__name__


def _check_types(card: "ModelCard") -> None:
    """Refuse a field of the wrong type, naming it and the expected type; coerce numpy numbers."""
    name = card.name if isinstance(card.name, str) else "?"
    for fld, (kind, expected) in _FIELD_TYPES.items():
        v = getattr(card, fld)
        optional = kind.endswith("?")
        base = kind.rstrip("?")
        if v is None and optional:
            continue
        ok = False
        if base == "str":
            ok = isinstance(v, str)
        elif base == "int":
            ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
            if ok:
                v = int(v)
        elif base == "float":
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            if ok:
                v = int(v) if isinstance(v, numbers.Integral) else float(v)
        elif base == "dict":
            ok = isinstance(v, dict)
        if not ok:
            raise DivergentError(f"card of {name!r}: field {fld!r} must be {expected}"
                                 + (" or absent" if optional else "") + f", got a {_json_type(v)}",
                                 f"write {fld} as {expected}" + (" (or leave it out)" if optional else ""))
        setattr(card, fld, v)


def category(base: ModelCard, other: ModelCard) -> str:
    """The paper's category of `other` relative to `base` (Section 3.1, Appendix A.2).

    Dataset if the source training data differ, else Framework if the objective differs,
    else Architecture if the family differs, else `subset` (Nixon et al. control) if only
    the data subset differs, else Hyper-parameters (depth and width count here), else Reinit
    when only the seed differs, else `identical`.
    """
    if base.train_data != other.train_data:
        return "dataset"
    if base.objective != other.objective:
        return "framework"
    if base.family != other.family:
        return "architecture"
    if base.family in ("other", "unknown") and base.architecture and other.architecture \
            and base.architecture != other.architecture:
        return "architecture"  # families outside the closed list: compared by architecture name
    if (base.subset or None) != (other.subset or None):
        return "subset"
    if (base.depth, base.width, _norm(base.hparams)) != (other.depth, other.width, _norm(other.hparams)) or base.head != other.head:
        return "hyperparameters"
    if base.seed != other.seed:
        return "reinit"
    return "identical"


def _norm(h: dict) -> str:
    return json.dumps(h or {}, sort_keys=True, default=str)
