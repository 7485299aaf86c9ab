"""Model cards (how a model was trained, in closed vocabularies) and the paper's category rule."""
from __future__ import annotations

import dataclasses
import json
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

    def __post_init__(self):
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
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise DivergentError(
                f"card has unknown fields {bad}", f"allowed fields: {', '.join(sorted(known))}"
            )
        return cls(**d)

    @classmethod
    def load(cls, path) -> "ModelCard":
        """Read a card from JSON or TOML."""
        from pathlib import Path

        p = Path(path)
        text = p.read_text()
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
        return cls.from_dict(data)

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **changes)


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
    if (base.subset or None) != (other.subset or None):
        return "subset"
    if (base.depth, base.width, _norm(base.hparams)) != (other.depth, other.width, _norm(other.hparams)) or base.head != other.head:
        return "hyperparameters"
    if base.seed != other.seed:
        return "reinit"
    return "identical"


def _norm(h: dict) -> str:
    return json.dumps(h or {}, sort_keys=True, default=str)
