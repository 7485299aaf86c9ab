"""Run a torch runner's forward pass through ONNX Runtime on CPU, certified against eager torch.

Depthwise convolutions (EfficientNet-Lite, MobileNets) are several times faster in ONNX Runtime
than in eager PyTorch on CPU. `accelerate` exports the runner's (logits, embedding) forward to
ONNX on the first batch, runs that batch both ways and keeps ONNX Runtime only when the outputs
agree to float32 rounding (max |ort - torch| <= ATOL + RTOL * max|torch|, per output); otherwise,
or when the export fails, the eager torch path is kept. The choice and the measured difference
are recorded in the runner's provenance, so every row of an extraction comes from one runtime.
"""
from __future__ import annotations

import io
import logging
import warnings
from typing import Callable

import numpy as np

from .preprocess import normalize_torch

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")
RTOL = 1e-4
ATOL = 1e-5


def _available() -> str | None:
    """None when onnx export and onnxruntime are importable, else the install hint."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "pip install 'divergent[onnx]' (onnx and onnxruntime) for the faster CPU runtime"
    return None


def _export(forward: Callable, x, module=None) -> tuple[bytes, int]:
    """ONNX bytes of forward(x) -> (head or None, embedding), dynamic batch; and the output count."""
    import torch

    class _Both(torch.nn.Module):
        def __init__(self, fwd, mod):
            super().__init__()
            self.fwd = fwd
            self.mod = mod   # registered, so its parameters are weights of the graph, not constants

        def forward(self, inp):
            head, emb = self.fwd(inp)
            emb = emb.flatten(1)
            return emb if head is None else (head, emb)

    # eval() on the wrapper: export restores the wrapper's training flag afterwards, recursively,
    # so a wrapper left in training mode would switch the model's BatchNorm/dropout to training
    wrapper = _Both(forward, module).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        outs = wrapper(x)
        n_out = 1 if isinstance(outs, torch.Tensor) else len(outs)
        names = ["embedding"] if n_out == 1 else ["head", "embedding"]
        torch.onnx.export(wrapper, (x,), buf, dynamo=False, input_names=["x"], output_names=names,
                          dynamic_axes={"x": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=17)
    if module is not None:
        module.eval()
    return buf.getvalue(), n_out


def _close(ort_out: np.ndarray, ref: np.ndarray) -> tuple[bool, float]:
    diff = float(np.max(np.abs(ort_out.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return bool(np.isfinite(diff) and diff <= ATOL + RTOL * scale), diff


def accelerate(runner, runtime: str = "auto") -> None:
    """Switch a CPU torch runner to ONNX Runtime after certifying it on its first batch (in place)."""
    if runtime == "torch" or runner.kind != "torch" or runner.device != "cpu" or runner.torch_forward is None:
        runner.provenance["runtime"] = "torch"
        return
    hint = _available()
    if hint is not None:
        if runtime == "onnxruntime":
            from ..errors import DivergentError
            raise DivergentError("runtime 'onnxruntime' was requested but onnx/onnxruntime are not installed", hint)
        runner.provenance["runtime"] = "torch"
        return
    eager_fn, forward, pre = runner.fn, runner.torch_forward, runner.preprocess

    def as_pair(res, n_out):
        return (None, res[0]) if n_out == 1 else (res[0], res[1])

    def stay_on_torch(reason: str):
        runner.provenance["runtime"] = f"torch ({reason})"
        runner.fn = eager_fn

    def first_call(batch):
        import onnxruntime as ort
        import torch

        head, emb = eager_fn(batch)
        x = normalize_torch(torch.as_tensor(batch), pre)
        try:
            blob, n_out = _export(forward, x, runner.module)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, torch.get_num_threads())
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
            outs = sess.run(None, {"x": x.numpy()})
            two = sess.run(None, {"x": torch.cat([x[:1], x[:1]]).numpy()})   # the batch size must be dynamic
        except Exception as exc:  # noqa: BLE001 - any export/runtime failure falls back to the exact eager path
            log.info("%s: ONNX Runtime not used (%s: %s); staying on torch", runner.spec.name, type(exc).__name__, exc)
            stay_on_torch(f"onnx export failed: {type(exc).__name__}")
            return head, emb
        ref = [emb] if head is None else [head, emb]
        checks = ([_close(o, r) for o, r in zip(outs, ref)]
                  + [_close(o, np.concatenate([r[:1], r[:1]])) for o, r in zip(two, ref)]
                  if len(outs) == len(ref) == len(two) else [(False, float("inf"))])
        worst = max(d for _, d in checks)
        if not all(ok for ok, _ in checks):
            log.warning("%s: ONNX Runtime output differs from torch by %.3g; staying on torch", runner.spec.name, worst)
            stay_on_torch(f"onnxruntime differed by {worst:.3g} on the first batch")
            return head, emb
        runner.runtime = "onnxruntime"
        runner.provenance["runtime"] = f"onnxruntime {ort.__version__} (certified: max |diff| {worst:.2g} on the first batch)"

        def ort_fn(b):
            return as_pair(sess.run(None, {"x": normalize_torch(torch.as_tensor(b), pre).numpy()}), n_out)

        runner.fn = ort_fn
        return as_pair(outs, n_out)

    runner.fn = first_call
