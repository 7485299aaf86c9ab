"""Model cards from timm model names (``resnet50.a1_in1k``, ``timm:convnext_base.clip_laion2b_ft_in1k``).

A timm name is ``<architecture>.<pretrained tag>``. The architecture gives the family (one of
:data:`divergent.cards.FAMILIES`, else ``other`` with the architecture's stem kept in
``card.architecture`` so that two different architectures outside the list still compare as
different), the depth when the name carries it (``resnet50``), and the exact variant in
``hparams['timm_model']``. The tag gives the training data — the data the model was trained on
first: ``in21k_ft_in1k`` is ImageNet-21k, ``laion2b`` LAION-2B — the objective (``clip``/``laion``/
``openai``: contrastive; ``mae``/``mim``/``fcmae``: masked-image; ``dino``: self-supervised;
``dist``: distillation; ``ns``/``ssl``/``swsl``: pseudo-label) and the recipe
(``hparams['recipe']``), so that ``resnet50.a1_in1k`` vs ``resnet50.a2_in1k`` is a
hyper-parameter pair. A name without a tag takes timm's default tag when timm is installed.
"""
from __future__ import annotations

import re

from ..cards import ModelCard

#: architecture stem -> family (closed vocabulary); first match by prefix, longest first
FAMILY_OF = {
    "wide_resnet": "wide-resnet", "resnext": "resnext", "resnet": "resnet", "resnetv2": "resnet",
    "vgg": "vgg", "densenet": "densenet", "inception": "inception", "efficientnet": "efficientnet",
    "tf_efficientnet": "efficientnet", "efficientnetv2": "efficientnet", "mobilenet": "mobilenet",
    "tf_mobilenet": "mobilenet", "vit": "vit", "deit": "deit", "deit3": "deit", "swin": "swin",
    "swinv2": "swin", "convnext": "convnext", "convnextv2": "convnext", "mixer": "mixer", "regnet": "regnet",
    "resmlp": "mlp", "gmlp": "mlp", "lenet": "lenet", "yolo": "yolo",
}
#: pretrained-tag token -> canonical training data
DATA_TOKENS = {
    "in1k": "imagenet", "in21k": "imagenet-21k", "in22k": "imagenet-21k", "in12k": "imagenet-12k",
    "laion2b": "laion-2b", "laion400m": "laion-400m", "laion": "laion-2b", "openai": "openai-wit",
    "yfcc100m": "yfcc100m", "ig1b": "instagram-1b", "ig3b": "instagram-3b", "jft": "jft-300m",
    "jft300m": "jft-300m", "webli": "webli", "dfn2b": "dfn-2b", "dfn5b": "dfn-5b", "datacompxl": "datacomp-xl",
    "metaclip": "metaclip", "cc12m": "cc12m", "lvd142m": "lvd-142m", "lvd1689m": "lvd-1689m", "m38m": "merged-38m",
    "merged2b": "merged-2b", "mim": None,
}
#: tag token -> objective
OBJECTIVE_TOKENS = {
    "clip": "contrastive", "laion2b": "contrastive", "laion400m": "contrastive", "openai": "contrastive",
    "siglip": "contrastive", "dfn2b": "contrastive", "dfn5b": "contrastive", "datacompxl": "contrastive",
    "metaclip": "contrastive", "webli": "contrastive",
    "mae": "masked-image", "mim": "masked-image", "fcmae": "masked-image", "beit": "masked-image",
    "dino": "self-supervised", "dinov2": "self-supervised", "dinov3": "self-supervised",
    "dist": "distillation", "distilled": "distillation",
    "ns": "pseudo-label", "ssl": "pseudo-label", "swsl": "pseudo-label",
}
_OLD_PREFIXES = ("gluon_", "legacy_", "ig_", "ssl_", "swsl_", "tv_")


def split_name(name: str) -> tuple[str, str | None]:
    """(architecture, pretrained tag or None) of a timm model name; ``timm:`` and ``@weights`` dropped."""
    n = str(name).strip()
    n = n.split(":", 1)[1] if n.startswith("timm:") else n
    n = n.split("@", 1)[0]
    n = n.rsplit("/", 1)[-1]
    arch, _, tag = n.partition(".")
    return arch, (tag or None)


def architecture_stem(arch: str) -> str:
    """The architecture without its size/variant: resnet50d -> resnet, vit_base_patch16_224 -> vit,
    wide_resnet50_2 -> wide_resnet, mobilenetv3_large_100 -> mobilenetv3, coatnet_0_rw_224 -> coatnet."""
    a = arch.lower()
    for p in _OLD_PREFIXES:
        if a.startswith(p):
            a = a[len(p):]
    for two in ("wide_resnet", "inception_resnet", "tf_efficientnet", "tf_mobilenet", "inception_next"):
        if a.startswith(two):
            return two
    head = a.split("_", 1)[0]
    if re.search(r"v\d+$", head):
        return head
    return re.sub(r"\d+[a-z]*$", "", head) or head


def family_of(stem: str) -> str:
    for key in sorted(FAMILY_OF, key=len, reverse=True):
        if stem == key or stem.startswith(key):
            return FAMILY_OF[key]
    return "other"


def _default_tag(arch: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return None
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - an unknown architecture simply has no default tag
        return None
    return getattr(cfg, "tag", None) if cfg is not None else None


def card_from_name(name: str, *, source: str = "timm", model: str | None = None,
                   default_tag: bool = True) -> ModelCard:
    """A card derived from a timm model name (see the module docstring)."""
    arch, tag = split_name(name)
    if tag is None and default_tag:
        tag = _default_tag(arch)
    stem = architecture_stem(arch)
    family = family_of(stem)
    depth = None
    m = re.match(r"^[a-z_]*?(\d+)", arch.lower().removeprefix("tf_"))
    if m and family in ("resnet", "wide-resnet", "resnext", "vgg", "densenet") and not stem.endswith("v2"):
        depth = int(m.group(1))
    tokens = re.split(r"[_\-]", tag.lower()) if tag else []
    data = [DATA_TOKENS[t] for t in tokens if DATA_TOKENS.get(t)]
    objective = next((OBJECTIVE_TOKENS[t] for t in tokens if t in OBJECTIVE_TOKENS), "supervised")
    if objective == "supervised" and "distilled" in arch.lower():
        objective = "distillation"  # deit_base_distilled_patch16_224
    head = "fine-tuned" if "ft" in tokens else "trained"
    hparams = {"timm_model": arch}
    if tag:
        hparams["recipe"] = tag
    return ModelCard(name=model or str(name), family=family, depth=depth, objective=objective,
                     train_data=data[0] if data else "unknown", head=head, hparams=hparams, source=source,
                     architecture=stem if family in ("other", "unknown") else "",
                     notes=f"card derived from the timm name {arch}{'.' + tag if tag else ''}")
