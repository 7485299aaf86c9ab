"""The model registry: built-in specs are valid data, names resolve, unknown names suggest, assets are located."""
from __future__ import annotations

import pytest

from divergent.errors import DivergentError, MissingDependencyError
from divergent.sources import ModelSpec, Preprocess, builtin_specs, expand_models, list_specs, match, resolve, resolve_path
from divergent.sources.registry import BUILTINS


def test_builtins_are_unique_and_use_card_vocabularies():
    names = [s.name for s in BUILTINS]
    assert len(names) == len(set(names))
    from divergent.cards import FAMILIES, HEADS, OBJECTIVES

    for s in BUILTINS:
        assert s.family in FAMILIES and s.objective in OBJECTIVES and s.head in HEADS
        assert s.preprocess is not None and s.embedding
        assert s.output in ("logits", "probs", "none")
    assert {"cifar10/resnet20", "cifar10/resnet56", "cifar10/resnet8-mlperf", "imagenet/efficientnet-lite0",
            "nsfw/open_nsfw", "detection/nudenet-320n", "inat-bird/mobilenet_v2_1.0_224_quant"} <= set(names)


def test_prefix_forms_parse():
    s = resolve("timm:resnet18@random")
    assert (s.source, s.target, s.weights) == ("timm", "resnet18", "random")
    s = resolve("timm:resnet18@/ckpt/x.pth")
    assert s.weights == "/ckpt/x.pth"
    assert resolve("torchvision:resnet18").weights is None
    s = resolve("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert (s.target, s.weights, s.head, s.objective) == ("ViT-B-32", "laion2b_s34b_b79k", "zero-shot", "contrastive")
    s = resolve("onnx:/m/model.onnx#Reshape:0")
    assert (s.target, s.embedding) == ("/m/model.onnx", "Reshape:0")
    s = resolve("tflite:m.tflite#AvgPool/AvgPool")
    assert s.embedding == "AvgPool/AvgPool"
    s = resolve("torch:divergent.sources.archs.cifar_resnet:resnet20@w.th")
    assert (s.target, s.weights) == ("divergent.sources.archs.cifar_resnet:resnet20", "w.th")
    assert resolve("hf:org/model").target == "org/model"


@pytest.mark.parametrize("bad", ["onnx:model.onnx", "torch:divergent.sources.archs.cifar_resnet:resnet20", "torch:nomodule@x"])
def test_malformed_specs_say_how_to_write_them(bad):
    with pytest.raises(DivergentError) as e:
        resolve(bad)
    assert "fix:" in str(e.value)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(DivergentError, match="cifar10/resnet20"):
        resolve("cifar10/resnt20")
    with pytest.raises(DivergentError, match="unknown model source"):
        resolve("tf:foo")


def test_wildcards_and_bulk_expansion():
    assert match("cifar10/resnet[24]*") == ["cifar10/resnet20", "cifar10/resnet44"]
    assert "imagenet/efficientnet-lite1" in match("efficientnet")
    assert match("resnet8*") == ["cifar10/resnet8-mlperf", "cifar10/resnet8-mlperf-int8"]
    assert expand_models("cifar10/resnet20, timm:resnet18@random,cifar10/resnet2*") == ["cifar10/resnet20", "timm:resnet18@random"]
    with pytest.raises(DivergentError, match="no built-in model matches"):
        expand_models("nothing*here")
    df = list_specs("cifar10/*", check=False)
    assert list(df["name"])[:4] == ["cifar10/resnet20", "cifar10/resnet32", "cifar10/resnet44", "cifar10/resnet56"]
    assert set(df["train_data"]) == {"cifar10"}


def test_missing_shared_asset_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DIVERGENT_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(DivergentError, match="DIVERGENT_SHARED"):
        resolve_path("$SHARED/models/cifar10-resnet-akamaster/resnet20.th")
    df = list_specs("cifar10/resnet20")
    assert df["available"].iloc[0].startswith("missing")


def test_missing_package_names_the_extra(monkeypatch):
    with pytest.raises(DivergentError, match=r"divergent\[bundles\]"):
        resolve_path("$PKG:no_such_weights_pkg/models/x.pth")
    import divergent.sources.adapters as ad

    real = __import__("importlib").import_module

    def fake(name, *a, **k):
        if name.startswith("ai_edge_litert"):
            raise ImportError("no module")
        return real(name, *a, **k)

    monkeypatch.setattr("importlib.import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"divergent\[tflite\]"):
        ad.load(resolve("tflite:x.tflite#t"), device="cpu")


def test_spec_validation():
    with pytest.raises(DivergentError, match="unknown family"):
        ModelSpec(name="x", source="torch", target="a:b", family="transformerish")
    with pytest.raises(DivergentError, match="value_range"):
        Preprocess(value_range="0-2")
    p = Preprocess(size=224, crop_pct=0.875)
    assert p.resize_to == 256 and p.to_dict()["resize"] == 256
    assert builtin_specs()["imagenet/efficientnet-lite0"].preprocess.resize_to == 256
