"""ModelSpec: everything needed to run a model and read its outputs, as plain data."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import DivergentError

SOURCES = ("timm", "torchvision", "open_clip", "hf", "onnx", "tflite", "torch", "efficientnet_lite")
VALUE_RANGES = ("0-1", "0-255")
RESIZE_RULES = ("shorter-then-crop", "exact", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
OUTPUTS = ("logits", "probs", "none")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input.

    PIL image -> RGB (grayscale is replicated to 3 channels) -> resize -> crop -> uint8 HWC
    -> value range (``0-1``: x/255, ``0-255``: x) -> (x - mean) / std -> channel order
    (``RGB``/``BGR``) -> layout (``NCHW``/``NHWC``) -> dtype. With ``dtype='uint8'`` (quantized
    TFLite) the raw uint8 pixels are passed and mean/std are not applied.

    Resize rules: ``shorter-then-crop`` resizes the shorter side to ``resize`` (default
    ``floor(size / crop_pct)``) keeping the aspect ratio, then center-crops ``size`` (torchvision /
    timm eval transform); ``exact`` resizes to ``resize`` x ``resize`` (default ``size``), then
    center-crops ``size`` when they differ; ``none`` requires images already at ``size``.
    (x-127)/128 on 0-255 input is ``value_range='0-255', mean=(127,)*3, std=(128,)*3``.
    """

    size: int = 224
    resize: int | None = None
    resize_rule: str = "shorter-then-crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    value_range: str = "0-1"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    gray_to_rgb: bool = True

    def __post_init__(self):
        checks = (
            (self.resize_rule, RESIZE_RULES, "resize_rule"),
            (self.interpolation, INTERPOLATIONS, "interpolation"),
            (self.value_range, VALUE_RANGES, "value_range"),
            (self.channel_order, ("RGB", "BGR"), "channel_order"),
            (self.layout, ("NCHW", "NHWC"), "layout"),
            (self.dtype, ("float32", "uint8"), "dtype"),
        )
        for value, vocab, what in checks:
            if value not in vocab:
                raise DivergentError(f"preprocessing: unknown {what} {value!r}", f"use one of {', '.join(vocab)}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def resize_to(self) -> int:
        if self.resize is not None:
            return int(self.resize)
        if self.resize_rule == "shorter-then-crop":
            import math

            return int(math.floor(self.size / self.crop_pct))
        return int(self.size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["resize"] = self.resize_to
        return d

    def replace(self, **changes) -> "Preprocess":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelSpec:
    """A model as plain data: where it comes from, how to feed it, how to read its outputs.

    ``source`` picks the adapter (one of ``SOURCES``); ``target`` is what the adapter loads
    (a timm/torchvision/open_clip/hf name, a file path, or ``module:Class``); ``weights`` a
    checkpoint path (``None``: the source's own weights; ``'random'``: random init);
    ``embedding`` the node/tensor/module whose output is the pre-logit embedding.
    Paths may start with ``$SHARED/`` (resolved against ``DIVERGENT_SHARED``, default
    ``<repo>/../shared``) or ``$PKG:<distribution-module>/`` (a file inside an installed package).

    Outputs: ``output`` says what the head emits (``logits``, ``probs`` or ``none`` for an
    embedding-only model); ``background_class`` is the index of a background class to drop
    (the 1001-way ImageNet MobileNets: 0), after which probabilities are renormalised;
    ``labels`` names the head's classes (a list, or a ``$SHARED/`` label file, one per line).
    Card fields use the vocabularies of :mod:`divergent.cards`.
    """

    name: str
    source: str
    target: str
    weights: str | None = None
    embedding: str | None = None
    preprocess: Preprocess | None = None
    output: str = "logits"
    num_classes: int | None = None
    background_class: int | None = None
    labels: tuple[str, ...] | str | None = None
    label_space: str | None = None
    extra: str | None = None
    license: str | None = None
    family: str = "unknown"
    depth: int | None = None
    width: float | None = None
    objective: str = "supervised"
    train_data: str = "unknown"
    head: str = "trained"
    notes: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise DivergentError(f"model {self.name!r}: unknown source {self.source!r}", f"use one of {', '.join(SOURCES)}")
        if self.output not in OUTPUTS:
            raise DivergentError(f"model {self.name!r}: unknown output {self.output!r}", f"use one of {', '.join(OUTPUTS)}")
        from ..cards import FAMILIES, HEADS, OBJECTIVES

        for value, vocab, what in ((self.family, FAMILIES, "family"), (self.objective, OBJECTIVES, "objective"), (self.head, HEADS, "head")):
            if value not in vocab:
                raise DivergentError(f"model {self.name!r}: unknown {what} {value!r}", f"use one of {', '.join(vocab)}")

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preprocess"] = self.preprocess.to_dict() if self.preprocess else None
        if isinstance(self.labels, tuple):
            d["labels"] = f"<{len(self.labels)} names>"
        return d
