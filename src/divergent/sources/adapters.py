"""Adapters: turn a ModelSpec into a Runner that returns (head outputs, pre-logit embedding) per batch.

One adapter per *source* (not per model): the torch-family sources share one runner that
captures the input of the model's final linear layer with a forward pre-hook, so the logits
and the embedding come from the same forward pass; timm uses its own ``forward_features`` +
``forward_head(pre_logits=True)``; ONNX exposes the embedding node as an extra graph output;
TFLite reads the embedding tensor with ``experimental_preserve_all_tensors``.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._files import sha256_file
from ..errors import DivergentError, require, unknown
from .preprocess import normalize_numpy, normalize_torch
from .registry import SOURCE_EXTRAS, resolve_path
from .spec import ModelSpec, Preprocess

IMAGENET_DEFAULT = Preprocess()
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _weights_sha256(path: Path) -> str:
    """sha256 of a weights file, remembered in this process while its size and mtime stay the same."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


@dataclass
class Runner:
    """A loaded model. ``__call__(uint8 NHWC batch)`` -> (head float32 (B,K) or None, embedding float32 (B,D))."""

    spec: ModelSpec
    preprocess: Preprocess
    fn: Callable[[Any], tuple[np.ndarray | None, np.ndarray]]
    kind: str  # "torch" or "numpy"
    device: str = "cpu"
    amp: bool = False
    labels: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    module: Any = None  # the torch module, for benchmarks
    torch_forward: Any = None  # normalized input -> (head or None, embedding), for the ONNX Runtime path
    runtime: str = "torch"     # what runs the forward pass: "torch" or "onnxruntime" (set by ort_runtime)

    def __call__(self, batch) -> tuple[np.ndarray | None, np.ndarray]:
        return self.fn(batch)

    def model_input(self, batch):
        """The normalized input the model sees (torch tensor on the device, or numpy array)."""
        if self.kind == "torch":
            import torch

            x = torch.as_tensor(batch).to(self.device, non_blocking=True)
            return normalize_torch(x, self.preprocess)
        return normalize_numpy(np.asarray(batch), self.preprocess)


# ----------------------------------------------------------------------------- helpers
def _labels(spec: ModelSpec) -> list[str] | None:
    if spec.labels is None:
        return None
    if isinstance(spec.labels, (tuple, list)):
        return list(spec.labels)
    try:
        path = resolve_path(spec.labels)
    except DivergentError:
        return None
    names = [ln.rstrip("\n") for ln in path.read_text().splitlines()]
    return [n for n in names if n != ""] if names and names[-1] == "" else names


def _weights_provenance(path: Path | None, **more) -> dict[str, Any]:
    prov: dict[str, Any] = dict(more)
    if path is not None:
        prov.update(weights_file=str(path), weights_sha256=_weights_sha256(path))
    return prov


def load_state_dict_checked(module, path: Path, strip_prefix: str = "module.") -> None:
    """Load a checkpoint with weights_only=True; strip a 'module.' prefix; name mismatched keys."""
    torch = require("torch", "torch")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with the file name
        raise DivergentError(f"cannot load checkpoint {path}: {exc}", "pass a state dict saved with torch.save") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise DivergentError(f"checkpoint {path} holds no state dict", "save model.state_dict()")
    sd = {(k[len(strip_prefix):] if strip_prefix and k.startswith(strip_prefix) else k): v for k, v in obj.items()}
    own = module.state_dict()
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                    if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{what}: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''} ({len(keys)})")
        raise DivergentError(
            f"checkpoint {path} does not fit {type(module).__name__}: " + "; ".join(parts),
            "check the architecture (depth/width/classes) named in the model spec",
        )
    module.load_state_dict(sd, strict=False)


def _find_head(module, name: str | None):
    import torch.nn as nn

    if name:
        obj = module
        for part in name.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        return obj
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DivergentError(f"{type(module).__name__} has no linear head", "name the head module in the spec's embedding field")
    return linears[-1]


def _pick_device(device: str) -> tuple[str, bool]:
    import torch

    if device == "auto":
        return ("cuda", True) if torch.cuda.is_available() else ("cpu", False)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DivergentError("CUDA was requested but is not available", "use --device cpu or auto")
    return device, device.startswith("cuda")


def _torch_runner(spec, module, pre, device, head_name=None, labels=None, prov=None, forward=None) -> Runner:
    import torch

    dev, amp = _pick_device(device)
    module = module.eval().to(dev)
    captured: dict[str, Any] = {}
    if forward is None:
        head = _find_head(module, head_name)
        head.register_forward_pre_hook(lambda m, args: captured.__setitem__("emb", args[0]))

        def forward(x):
            out = module(x)
            out = getattr(out, "logits", out)
            return out, captured.pop("emb")

    def fn(batch):
        with torch.inference_mode(), torch.autocast("cuda", enabled=amp):
            x = normalize_torch(torch.as_tensor(batch).to(dev, non_blocking=True), pre)
            head_out, emb = forward(x)
            emb = emb.flatten(1)
            h = None if head_out is None else head_out.float().cpu().numpy()
            return h, emb.float().cpu().numpy()

    return Runner(spec, pre, fn, "torch", dev, amp, labels, prov or {}, module, torch_forward=forward)


# ----------------------------------------------------------------------------- sources
def _torch_constructor(spec: ModelSpec):
    """The class or factory a ``torch:`` spec names: a registered architecture, or an
    ``nn.Module`` subclass / plain function defined in a trusted module. Checked before import."""
    import inspect

    import torch.nn as nn

    from . import archs
    from .registry import check_torch_target, is_trusted

    module, attr, short = check_torch_target(spec.target, spec.name)
    if short is not None:
        return archs.get(short, attr)
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise DivergentError(f"cannot find {spec.target!r}: {exc}",
                             "write torch:<importable.module>:<Class or factory>@<checkpoint>") from exc
    defined_in = getattr(obj, "__module__", None) or ""
    is_module_class = inspect.isclass(obj) and issubclass(obj, nn.Module)
    if not (is_module_class or inspect.isfunction(obj)) or not is_trusted(defined_in):
        raise DivergentError(
            f"{spec.target!r} is {type(obj).__name__} {getattr(obj, '__qualname__', attr)!r} from module {defined_in!r}; "
            "a torch: spec may only name a torch.nn.Module subclass or a factory function defined in a trusted module",
            "name the model class or factory of your own package (trusted with --trust-module)")
    return obj


def _load_torch(spec: ModelSpec, device: str, **_) -> Runner:
    require("torch", "torch")
    import torch.nn as nn

    ctor = _torch_constructor(spec)
    path = resolve_path(spec.weights)
    kwargs = {"num_classes": spec.num_classes} if spec.num_classes else {}
    try:
        module = ctor(**kwargs)
    except Exception as exc:  # noqa: BLE001 - reported with the name of what was called
        raise DivergentError(f"{spec.target}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed: {exc}",
                             "the class or factory must build the model from at most num_classes=") from exc
    if not isinstance(module, nn.Module):
        raise DivergentError(f"{spec.target!r} returned {type(module).__name__}, not a torch.nn.Module",
                             "name a class or factory that builds the model")
    load_state_dict_checked(module, path)   # torch.load(weights_only=True): no pickled code
    pre = spec.preprocess or IMAGENET_DEFAULT
    return _torch_runner(spec, module, pre, device, spec.embedding, _labels(spec), _weights_provenance(path))


def _load_efficientnet_lite(spec: ModelSpec, device: str, **_) -> Runner:
    eff = require("efficientnet_lite_pytorch", "bundles")
    path = resolve_path(spec.weights)
    module = eff.EfficientNet.from_name(spec.target)
    load_state_dict_checked(module, path, strip_prefix="")
    return _torch_runner(spec, module, spec.preprocess, device, "_fc", _labels(spec), _weights_provenance(path))


def _load_timm(spec: ModelSpec, device: str, **_) -> Runner:
    timm = require("timm", "timm")
    from timm.data import resolve_data_config

    ckpt = None if spec.weights in (None, "random") else resolve_path(spec.weights)
    try:
        module = timm.create_model(spec.target, pretrained=spec.weights is None)
    except RuntimeError as exc:
        raise DivergentError(f"timm could not create {spec.target!r}: {exc}", f"use {spec.name.split('@')[0]}@random for random weights, or @<checkpoint path>") from exc
    except Exception as exc:  # noqa: BLE001 - unknown names, missing cache without network
        raise DivergentError(f"timm could not create {spec.target!r}: {exc}", "check the name with timm.list_models() and that its weights are in the local cache") from exc
    if ckpt is not None:
        load_state_dict_checked(module, ckpt)
    cfg = resolve_data_config({}, model=module)
    pre = spec.preprocess or timm_preprocess(cfg)

    def forward(x):
        feats = module.forward_features(x)
        return module.forward_head(feats), module.forward_head(feats, pre_logits=True)

    prov = _weights_provenance(ckpt, pretrained=spec.weights is None, timm_cfg={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()})
    if spec.weights is None:
        pc = getattr(module, "pretrained_cfg", {}) or {}
        prov["pretrained_tag"] = f"{pc.get('architecture', spec.target)}.{pc.get('tag', '')}"
    return _torch_runner(spec, module, pre, device, labels=None, prov=prov, forward=forward)


def timm_preprocess(cfg: dict) -> Preprocess:
    """A timm data config (``resolve_data_config``) as a Preprocess."""
    size = cfg["input_size"][-1]
    if cfg["input_size"][-2] != size:
        raise DivergentError(f"non-square timm input size {cfg['input_size']} is not supported", "override the preprocessing in the spec")
    mode = cfg.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise DivergentError(f"timm crop_mode {mode!r} is not supported", "use a model with center or squash cropping")
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    return Preprocess(size=size, crop_pct=crop_pct, resize=int(math.floor(size / crop_pct)),
                      resize_rule="shorter-then-crop" if mode == "center" else "exact",
                      interpolation=cfg.get("interpolation", "bilinear"), mean=cfg["mean"], std=cfg["std"])


def _load_torchvision(spec: ModelSpec, device: str, **_) -> Runner:
    require("torch", "torch")
    tv = require("torchvision", "torch")
    ckpt = None if spec.weights in (None, "random") else resolve_path(spec.weights)
    try:
        weights = tv.models.get_model_weights(spec.target).DEFAULT if spec.weights is None else None
        module = tv.models.get_model(spec.target, weights=weights)
    except Exception as exc:  # noqa: BLE001
        raise DivergentError(f"torchvision could not build {spec.target!r}: {exc}", "check the name (torchvision.models.list_models()) and the local weight cache, or use @random / @<checkpoint>") from exc
    if ckpt is not None:
        load_state_dict_checked(module, ckpt)
    pre = spec.preprocess
    labels = None
    if pre is None and weights is not None:
        t = weights.transforms()
        pre = Preprocess(size=t.crop_size[0], resize=t.resize_size[0], interpolation=t.interpolation.value,
                         mean=t.mean, std=t.std)
        labels = list(weights.meta.get("categories") or []) or None
    pre = pre or IMAGENET_DEFAULT
    prov = _weights_provenance(ckpt, torchvision_weights=str(weights) if weights is not None else None)
    return _torch_runner(spec, module, pre, device, spec.embedding, labels, prov)


def _load_hf(spec: ModelSpec, device: str, **_) -> Runner:
    require("torch", "torch")
    tr = require("transformers", "hf")
    try:
        module = tr.AutoModelForImageClassification.from_pretrained(spec.target)
        proc = tr.AutoImageProcessor.from_pretrained(spec.target)
    except Exception as exc:  # noqa: BLE001
        raise DivergentError(f"transformers could not load {spec.target!r}: {exc}", "pass a local directory or a cached repo id") from exc
    pre = spec.preprocess or hf_preprocess(proc)
    id2label = getattr(module.config, "id2label", None) or {}
    labels = [id2label[i] for i in range(len(id2label))] if id2label else None
    head_name = spec.embedding or "classifier"
    return _torch_runner(spec, module, pre, device, head_name, labels, {"hf_repo": spec.target})


def hf_preprocess(proc) -> Preprocess:
    """A transformers image processor's eval transform as a Preprocess."""
    size = getattr(proc, "size", {}) or {}
    resample = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}[int(getattr(proc, "resample", 2))]
    mean = tuple(getattr(proc, "image_mean", (0.5, 0.5, 0.5)))
    std = tuple(getattr(proc, "image_std", (0.5, 0.5, 0.5)))
    if "height" in size:
        return Preprocess(size=int(size["height"]), resize_rule="exact", interpolation=resample, mean=mean, std=std)
    crop = getattr(proc, "crop_size", None) or {}
    short = int(size.get("shortest_edge", 224))
    return Preprocess(size=int(crop.get("height", short)), resize=short, interpolation=resample, mean=mean, std=std)


def _load_open_clip(spec: ModelSpec, device: str, class_names: list[str] | None = None, **_) -> Runner:
    torch = require("torch", "torch")
    oc = require("open_clip", "open_clip")
    pretrained = None if spec.weights in (None, "", "random") else spec.weights
    try:
        model, _, preprocess = oc.create_model_and_transforms(spec.target, pretrained=pretrained)
    except Exception as exc:  # noqa: BLE001
        raise DivergentError(f"open_clip could not create {spec.target}/{spec.weights}: {exc}", "check open_clip.list_pretrained() and the local cache, or use /random") from exc
    pre = spec.preprocess or open_clip_preprocess(model)
    dev, amp = _pick_device(device)
    model = model.eval().to(dev)
    text = None
    templates = tuple(spec.options.get("templates", ("a photo of a {}.",)))
    if class_names:
        tok = oc.get_tokenizer(spec.target)
        with torch.inference_mode():
            feats = []
            for c in class_names:
                t = model.encode_text(tok([tp.format(c.replace("_", " ")) for tp in templates]).to(dev)).float()
                t = t / t.norm(dim=-1, keepdim=True)
                feats.append(t.mean(0))
            text = torch.stack(feats)
            text = text / text.norm(dim=-1, keepdim=True)
    scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0

    def forward(x):
        emb = model.encode_image(x).float()
        if text is None:
            return None, emb
        return scale * (emb / emb.norm(dim=-1, keepdim=True)) @ text.T, emb

    prov = {"open_clip": f"{spec.target}/{spec.weights}", "zero_shot_templates": list(templates), "logit_scale": scale}
    r = _torch_runner(spec, model, pre, device, labels=list(class_names) if class_names else None, prov=prov, forward=forward)
    return r


def open_clip_preprocess(model) -> Preprocess:
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    mode = cfg.get("resize_mode", "shortest")
    return Preprocess(size=int(size), resize=int(size), resize_rule="shorter-then-crop" if mode == "shortest" else "exact",
                      interpolation=cfg.get("interpolation", "bicubic"), mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                      std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))))


def _pool(emb: np.ndarray, spec: ModelSpec, layout: str) -> np.ndarray:
    if emb.ndim > 2 and spec.options.get("pool") == "mean":
        axes = (2, 3) if layout == "NCHW" else (1, 2)
        return emb.astype(np.float32).mean(axis=axes)
    return emb.reshape(emb.shape[0], -1)


def _onnx_free_size(raw: bytes, spec: ModelSpec) -> tuple[bytes, str | None]:
    """Let a graph with a fixed input size run at the spec's size: symbolic spatial dims, global final pool.

    Only when the spec's size differs from the graph's fixed one; the native size runs the graph as shipped.
    """
    from .onnx_graph import globalize_pool, input_dims, symbolic_input_dims

    pre = spec.preprocess
    if pre is None:
        return raw, None
    dims = input_dims(raw)
    axes = (2, 3) if pre.layout == "NCHW" else (1, 2)
    if len(dims) != 4 or all(not isinstance(dims[a], int) or dims[a] == pre.size for a in axes):
        return raw, None
    native = [dims[a] for a in axes]
    raw = symbolic_input_dims(raw, axes)
    pooled = globalize_pool(raw, spec.embedding) if spec.embedding else raw
    note = f"input {native[0]}x{native[1]} -> symbolic" + ("; final AveragePool -> GlobalAveragePool" if pooled != raw else "")
    return pooled, note


def _load_onnx(spec: ModelSpec, device: str, **_) -> Runner:
    ort = require("onnxruntime", "onnx")
    from .onnx_graph import add_outputs, list_nodes

    path = resolve_path(spec.target)
    raw = path.read_bytes()
    raw, resized = _onnx_free_size(raw, spec)
    outputs = {o for n in list_nodes(raw) for o in n.outputs}
    if spec.embedding not in outputs:
        from ..errors import suggest

        raise DivergentError(f"{path.name} has no tensor {spec.embedding!r}", suggest(spec.embedding, outputs, "tensor"))
    opts = ort.SessionOptions()
    threads = spec.options.get("threads")
    if threads:
        opts.intra_op_num_threads = int(threads)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers() else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(add_outputs(raw, [spec.embedding]), opts, providers=providers)
    inp = sess.get_inputs()[0]
    out_names = [o.name for o in sess.get_outputs()]
    head_name = None if spec.output == "none" else out_names[0]
    pre = spec.preprocess
    if pre is None:
        shape = inp.shape
        nchw = isinstance(shape[1], int) and shape[1] == 3
        size = shape[2] if nchw else shape[1]
        pre = Preprocess(size=int(size) if isinstance(size, int) else 224, layout="NCHW" if nchw else "NHWC")
    fetch = [n for n in (head_name, spec.embedding) if n]

    def fn(batch):
        x = normalize_numpy(batch, pre)
        res = sess.run(fetch, {inp.name: x})
        head = res[0].astype(np.float32) if head_name else None
        return head, _pool(res[-1], spec, pre.layout).astype(np.float32)

    prov = _weights_provenance(path, embedding_node=spec.embedding, head_output=head_name, providers=sess.get_providers())
    if resized:
        prov["graph_rewrite"] = resized
    return Runner(spec, pre, fn, "numpy", "cpu" if providers[0].startswith("CPU") else "cuda", False, _labels(spec), prov)


def _load_tflite(spec: ModelSpec, device: str, **_) -> Runner:
    lite = require("ai_edge_litert.interpreter", "tflite")
    import warnings

    path = resolve_path(spec.target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                  num_threads=spec.options.get("threads"))
    interp.allocate_tensors()
    by_name = {t["name"]: t for t in interp.get_tensor_details()}
    if spec.embedding not in by_name:
        from ..errors import suggest

        raise DivergentError(f"{path.name} has no tensor {spec.embedding!r}", suggest(spec.embedding, by_name, "tensor"))
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    emb_t = by_name[spec.embedding]
    h, w = int(inp["shape"][1]), int(inp["shape"][2])
    pre = spec.preprocess or Preprocess(size=h, resize_rule="exact", layout="NHWC", value_range="0-255",
                                        mean=(0, 0, 0), std=(1, 1, 1), dtype="uint8" if inp["dtype"] == np.uint8 else "float32")
    in_scale, in_zp = inp["quantization"]

    def dequant(arr, det):
        scale, zp = det["quantization"]
        if arr.dtype in (np.uint8, np.int8, np.int16, np.int32) and scale:
            return (scale * (arr.astype(np.float32) - zp)).astype(np.float32)
        return arr.astype(np.float32)

    def prepare(batch):
        x = normalize_numpy(batch, pre)
        if inp["dtype"] != x.dtype:
            if np.issubdtype(inp["dtype"], np.integer):
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x.astype(np.float32) / in_scale + in_zp), info.min, info.max).astype(inp["dtype"])
            else:
                x = x.astype(inp["dtype"])
        return x

    def fn(batch):
        x = prepare(batch)
        heads, embs = [], []
        for row in x:  # the graphs have batch 1 baked into reshapes: run image by image
            interp.set_tensor(inp["index"], row[None])
            interp.invoke()
            if spec.output != "none":
                heads.append(dequant(interp.get_tensor(out["index"]), out))
            embs.append(dequant(interp.get_tensor(emb_t["index"]), emb_t).reshape(1, -1))
        return (np.concatenate(heads) if heads else None), np.concatenate(embs)

    prov = _weights_provenance(path, embedding_tensor=spec.embedding, input_quantization=[float(in_scale), int(in_zp)],
                               output_quantization=[float(out["quantization"][0]), int(out["quantization"][1])])
    return Runner(spec, pre, fn, "numpy", "cpu", False, _labels(spec), prov)


LOADERS = {
    "torch": _load_torch, "efficientnet_lite": _load_efficientnet_lite, "timm": _load_timm,
    "torchvision": _load_torchvision, "hf": _load_hf, "open_clip": _load_open_clip,
    "onnx": _load_onnx, "tflite": _load_tflite,
}


def load(spec: ModelSpec, device: str = "auto", class_names: list[str] | None = None, input_size: int | None = None,
         runtime: str = "auto") -> Runner:
    """Load the model a spec describes. ``class_names`` builds zero-shot heads; ``input_size`` overrides the size.

    ``runtime``: for torch models on CPU, "auto" runs them through ONNX Runtime when onnx and
    onnxruntime are installed and the first batch agrees with eager torch (see ort_runtime);
    "torch" always uses eager torch; "onnxruntime" requires it.
    """
    from .ort_runtime import RUNTIMES, accelerate

    if runtime not in RUNTIMES:
        raise unknown("runtime", runtime, RUNTIMES)
    module, extra = SOURCE_EXTRAS[spec.source]
    require(module.split(".")[0], extra)
    if input_size and spec.preprocess is not None:
        spec = spec.replace(preprocess=_resized(spec.preprocess, input_size))
    runner = LOADERS[spec.source](spec, device, class_names=class_names)
    if input_size and runner.preprocess.size != input_size:
        runner.preprocess = _resized(runner.preprocess, input_size)
    runner.provenance.setdefault("source", spec.source)
    accelerate(runner, runtime)
    return runner


def _resized(pre: Preprocess, size: int) -> Preprocess:
    """The same preprocessing at another input size (the resize keeps its ratio to the crop)."""
    ratio = pre.resize_to / pre.size
    return pre.replace(size=int(size), resize=int(round(size * ratio)) if pre.resize_rule != "none" else None,
                       resize_rule="exact" if pre.resize_rule == "none" else pre.resize_rule)
