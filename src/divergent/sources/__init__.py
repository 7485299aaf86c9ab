"""Model sources: the registry of model specs (plain data) and the adapters that run them.

    from divergent.sources import resolve, list_specs, load
    spec = resolve("cifar10/resnet20")          # or "timm:resnet18@random", "onnx:m.onnx#node", ...
    runner = load(spec, device="cpu")           # runner(uint8 NHWC batch) -> (head outputs, embedding)
"""
from .registry import BUILTINS, builtin_specs, expand_models, list_specs, match, resolve, resolve_path, shared_root
from .spec import ModelSpec, Preprocess


def load(spec, device: str = "auto", class_names=None, input_size=None, runtime: str = "auto"):
    """Load a ModelSpec (or a name) into a Runner; heavy backends are imported only here.

    runtime: "auto" runs torch models on CPU through ONNX Runtime once certified equal to eager
    torch on the first batch (several times faster for depthwise convolutions); "torch" never does.
    """
    from .adapters import load as _load

    return _load(resolve(spec) if isinstance(spec, str) else spec, device=device, class_names=class_names,
                 input_size=input_size, runtime=runtime)


__all__ = ["BUILTINS", "ModelSpec", "Preprocess", "builtin_specs", "expand_models", "list_specs", "load", "match",
           "resolve", "resolve_path", "shared_root"]
