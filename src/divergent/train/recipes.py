"""Training recipes as plain data, the zoos built from them, and the card each recipe yields.

A recipe says everything about how a model is trained; `card_from_recipe` writes its
`ModelCard` in the core vocabularies, and the category relative to the zoo's base is then
derived by `divergent.cards.category` (never typed in a recipe). A zoo is a base recipe plus
a list of `(name, changes)` entries applied to it — see docs/zoo.md for the choices.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..cards import ModelCard
from ..conventions import TRAIN
from ..errors import DivergentError, unknown
from .architectures import DEFAULT_DEPTH
from .augment import AUGMENTATIONS

OBJECTIVES = ("supervised", "contrastive", "distillation", "autoencoder", "masked-image")
OPTIMIZERS = ("adamw", "sgd")
#: objectives whose classifier is a linear head fitted on frozen features after training
PROBED = ("contrastive", "autoencoder", "masked-image")


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is trained. Every field is plain JSON-able data."""

    name: str
    dataset: str = "fashion-mnist"
    family: str = "cnn"
    width: float = 1.0
    depth: int | None = None
    objective: str = "supervised"
    split: str = TRAIN
    subset: tuple[int, int] | None = None      # (part, parts): disjoint parts of the seeded train permutation
    limit: int | None = None                    # use only the first `limit` images (of the part)
    augment: str = "none"
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    batch_size: int = 256
    epochs: int = 1
    warmup: float = 0.05                        # fraction of steps with linear warm-up, then cosine to 0
    dropout: float = 0.0
    label_smoothing: float = 0.0
    teacher: str | None = None                  # distillation: name of the teacher recipe (same zoo)
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    nt_xent_temperature: float = 0.5            # contrastive
    mask_ratio: float = 0.5                     # masked-image
    probe_l2: float = 1e-4                      # training-time linear head (PROBED objectives)
    seed: int = 0
    zoo: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.split != TRAIN:
            raise DivergentError(
                f"recipe {self.name!r} trains on split {self.split!r}",
                f"recipes may only train on {TRAIN!r}; holdout/test are never trained on",
            )
        if self.objective not in OBJECTIVES:
            raise unknown("objective", self.objective, OBJECTIVES)
        if self.augment not in AUGMENTATIONS:
            raise unknown("augmentation", self.augment, AUGMENTATIONS)
        if self.optimizer not in OPTIMIZERS:
            raise unknown("optimizer", self.optimizer, OPTIMIZERS)
        if self.family not in DEFAULT_DEPTH:
            raise unknown("architecture family", self.family, DEFAULT_DEPTH)
        if self.objective == "distillation" and not self.teacher:
            raise DivergentError(f"distillation recipe {self.name!r} has no teacher",
                                 "set teacher= to the name of a recipe in the same zoo")
        if self.epochs < 1 or self.batch_size < 2:
            raise DivergentError(f"recipe {self.name!r}: epochs must be >= 1 and batch_size >= 2")
        if self.subset is not None:
            object.__setattr__(self, "subset", tuple(int(v) for v in self.subset))

    @property
    def head(self) -> str:
        return "linear-probe" if self.objective in PROBED else "trained"

    @property
    def resolved_depth(self) -> int:
        return DEFAULT_DEPTH[self.family] if self.depth is None else int(self.depth)

    @property
    def subset_label(self) -> str | None:
        """How the training images were chosen, or None for the whole train split."""
        parts = []
        if self.subset is not None:
            parts.append(f"part{self.subset[0] + 1}of{self.subset[1]}")
        if self.limit is not None:
            parts.append(f"first{self.limit}")
        return "-".join(parts) or None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["subset"] = list(self.subset) if self.subset is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise DivergentError(f"recipe has unknown fields {bad}", f"allowed: {', '.join(sorted(known))}")
        d = dict(d)
        if d.get("subset") is not None:
            d["subset"] = tuple(d["subset"])
        return cls(**d)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


#: recipe fields that are training hyper-parameters (go to card.hparams; seed, data and model shape do not)
_HPARAM_FIELDS = ("augment", "optimizer", "lr", "weight_decay", "batch_size", "epochs", "warmup",
                  "dropout", "label_smoothing")
_OBJECTIVE_HPARAMS = {
    "distillation": ("teacher", "kd_temperature", "kd_alpha"),
    "contrastive": ("nt_xent_temperature", "probe_l2"),
    "autoencoder": ("probe_l2",),
    "masked-image": ("mask_ratio", "probe_l2"),
}


def card_from_recipe(recipe: Recipe, **provenance) -> ModelCard:
    """The model card of a recipe, in the core vocabularies (category is derived from it later)."""
    from .data import DATASETS

    hp = {k: getattr(recipe, k) for k in _HPARAM_FIELDS}
    hp.update({k: getattr(recipe, k) for k in _OBJECTIVE_HPARAMS.get(recipe.objective, ())})
    meta = DATASETS[recipe.dataset]
    return ModelCard(
        name=recipe.name,
        family=recipe.family,
        depth=recipe.resolved_depth,
        width=float(recipe.width),
        objective=recipe.objective,
        train_data=recipe.dataset,
        subset=recipe.subset_label,
        head=recipe.head,
        hparams=hp,
        seed=recipe.seed,
        source="divergent.train recipe",
        license="Apache-2.0",
        preprocessing={"size": meta["size"], "channels": meta["channels"], "scale": "uint8/255",
                       "mean": list(meta["mean"]), "std": list(meta["std"])},
        provenance={"recipe": recipe.to_dict(), "zoo": recipe.zoo, **provenance},
        notes=recipe.notes,
    )


# --------------------------------------------------------------------------------------------
# The zoos: a base recipe and (name, changes) entries. Plain data.
# --------------------------------------------------------------------------------------------

_FMNIST_BASE = dict(dataset="fashion-mnist", family="cnn", width=1.0, depth=2, objective="supervised",
                    augment="none", optimizer="adamw", lr=2e-3, weight_decay=5e-4, batch_size=128,
                    epochs=2, limit=20000, seed=0,
                    notes="base supervised CNN: 2 conv stages (16, 32 ch), hidden 128")

#: (short name, changes vs base, intended category) — the category is checked, not used
_FMNIST_ENTRIES: list[tuple[str, dict[str, Any], str]] = [
    ("cnn-base", {}, "identical"),
    # Reinit: other seeds
    ("cnn-seed1", {"seed": 1}, "reinit"),
    ("cnn-seed2", {"seed": 2}, "reinit"),
    ("cnn-seed3", {"seed": 3}, "reinit"),
    # Hyper-parameters
    ("cnn-dropout", {"dropout": 0.3, "seed": 10}, "hyperparameters"),
    ("cnn-smooth", {"label_smoothing": 0.1, "seed": 11}, "hyperparameters"),
    ("cnn-wd", {"weight_decay": 5e-2, "seed": 12}, "hyperparameters"),
    ("cnn-lr", {"lr": 5e-4, "seed": 13}, "hyperparameters"),
    ("cnn-narrow", {"width": 0.5, "seed": 14}, "hyperparameters"),
    ("cnn-deep", {"depth": 3, "seed": 15}, "hyperparameters"),
    # Architecture
    ("mlp", {"family": "mlp", "depth": 2, "seed": 20}, "architecture"),
    ("resnet8", {"family": "resnet", "depth": 8, "width": 0.5, "seed": 21}, "architecture"),
    ("mixer", {"family": "mixer", "depth": 4, "seed": 22}, "architecture"),
    # Framework (same data, other objective)
    # label-free models: settings chosen by the sweep in docs/zoo.md ("Reference floor")
    ("cnn-simclr", {"objective": "contrastive", "augment": "simclr-gray", "lr": 2e-3, "batch_size": 128,
                    "nt_xent_temperature": 0.2, "epochs": 3, "seed": 30}, "framework"),
    ("cnn-distill", {"objective": "distillation", "teacher": "cnn-deep", "seed": 31}, "framework"),
    ("cnn-autoencoder", {"objective": "autoencoder", "epochs": 4, "seed": 32}, "framework"),
    ("cnn-masked", {"objective": "masked-image", "mask_ratio": 0.25, "epochs": 4, "seed": 33}, "framework"),
    # Subset control (Nixon et al. 2020): disjoint parts of train
    ("cnn-subset1", {"subset": (0, 3), "limit": None, "seed": 40}, "subset"),
    ("cnn-subset2", {"subset": (1, 3), "limit": None, "seed": 41}, "subset"),
    ("cnn-subset3", {"subset": (2, 3), "limit": None, "seed": 42}, "subset"),
]

#: quick zoo: same entries, fewer images (the scaling is applied to `limit` and subset sizes)
_QUICK = dict(limit=8000, epochs=1)

_CIFAR_BASE = dict(dataset="cifar10", family="cnn", width=1.0, depth=3, objective="supervised",
                   augment="crop-flip", optimizer="adamw", lr=2e-3, weight_decay=5e-4, batch_size=128,
                   epochs=6, limit=None, seed=0,
                   notes="base supervised CNN for CIFAR-10 JPEG: 3 conv stages (16, 32, 64 ch), hidden 128")

#: CPU budget (docs/zoo.md): every supervised model sees 300,000 image-passes (all 50,000 JPEG
#: training images x 6 epochs); SimCLR sees 25,000 images x 15 epochs x 2 views.
_CIFAR_ENTRIES: list[tuple[str, dict[str, Any], str]] = [
    ("cnn-base", {}, "identical"),
    ("cnn-seed1", {"seed": 1}, "reinit"),
    ("cnn-seed2", {"seed": 2}, "reinit"),
    ("cnn-seed3", {"seed": 3}, "reinit"),
    ("cnn-dropout", {"dropout": 0.3, "seed": 10}, "hyperparameters"),
    ("cnn-smooth", {"label_smoothing": 0.1, "seed": 11}, "hyperparameters"),
    ("cnn-wd", {"weight_decay": 5e-2, "seed": 12}, "hyperparameters"),
    ("cnn-narrow", {"width": 0.5, "seed": 14}, "hyperparameters"),
    ("resnet8", {"family": "resnet", "depth": 8, "seed": 21}, "architecture"),
    ("mlp", {"family": "mlp", "depth": 3, "width": 2.0, "seed": 20}, "architecture"),
    ("mixer", {"family": "mixer", "depth": 4, "batch_size": 256, "seed": 22}, "architecture"),
    ("cnn-simclr", {"objective": "contrastive", "augment": "simclr", "epochs": 15, "limit": 25000,
                    "batch_size": 256, "nt_xent_temperature": 0.2, "seed": 30}, "framework"),
    ("cnn-distill", {"objective": "distillation", "teacher": "resnet8", "augment": "none", "seed": 31},
     "framework"),
]

ZOO_PREFIX = {"fashion-mnist": "fmnist", "fashion-mnist-quick": "fmnist-quick", "cifar10": "cifar10"}
ZOOS = tuple(ZOO_PREFIX)


def _build(zoo_name: str) -> list[tuple[Recipe, str]]:
    prefix = ZOO_PREFIX[zoo_name]
    if zoo_name.startswith("fashion-mnist"):
        base, entries = dict(_FMNIST_BASE), _FMNIST_ENTRIES
    else:
        base, entries = dict(_CIFAR_BASE), _CIFAR_ENTRIES
    out = []
    for short, changes, intended in entries:
        d = {**base, **changes}
        if zoo_name == "fashion-mnist-quick":
            d["epochs"] = _QUICK["epochs"] + (1 if d["objective"] == "contrastive" else 0)
            d["limit"] = _QUICK["limit"]
        if d.get("teacher"):
            d["teacher"] = f"{prefix}/{d['teacher']}"
        out.append((Recipe(name=f"{prefix}/{short}", zoo=zoo_name, **d), intended))
    return out


def zoo(name: str = "fashion-mnist") -> list[Recipe]:
    """The recipes of a zoo ('fashion-mnist' default, 'fashion-mnist-quick', 'cifar10', or a path
    to a TOML file, see `recipes_from_toml`), base first."""
    if str(name).endswith(".toml"):
        return recipes_from_toml(name)
    if name not in ZOO_PREFIX:
        raise unknown("zoo", name, ZOOS)
    return [r for r, _ in _build(name)]


def recipes_from_toml(path) -> list[Recipe]:
    """A user zoo from TOML: a `[base]` table (a full recipe, `name` included) and `[[model]]`
    tables, each holding only what differs from the base (plus its `name`). Base first."""
    import tomllib
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise DivergentError(f"zoo file {p} does not exist", "pass an existing .toml file or a built-in zoo name")
    data = tomllib.loads(p.read_text())
    if "base" not in data or "name" not in data["base"]:
        raise DivergentError(f"{p}: no [base] table with a name", "start the file with [base] name = \"zoo/base\" ...")
    base = dict(data["base"])
    out = [Recipe.from_dict({"zoo": p.stem, **base})]
    for entry in data.get("model", []):
        if "name" not in entry:
            raise DivergentError(f"{p}: a [[model]] entry has no name", "give every [[model]] a name")
        out.append(Recipe.from_dict({"zoo": p.stem, **base, **entry}))
    return out


def intended_categories(name: str = "fashion-mnist") -> dict[str, str]:
    """What each recipe of a zoo is meant to be relative to the base (for checks and docs only)."""
    if name not in ZOO_PREFIX:
        raise unknown("zoo", name, ZOOS)
    return {r.name: c for r, c in _build(name)}


def base_recipe(name: str = "fashion-mnist") -> Recipe:
    """The base recipe of a zoo (the model every category is measured against)."""
    return zoo(name)[0]


def recipe_by_name(name: str) -> Recipe:
    """Find a recipe by its full name (e.g. 'fmnist/cnn-wide') in any zoo."""
    for z in ZOOS:
        for r in zoo(z):
            if r.name == name:
                return r
    raise unknown("recipe", name, [r.name for z in ZOOS for r in zoo(z)])
