"""Config validation: errors name the bad key and the allowed keys or values; presets load and plan."""
from __future__ import annotations

import pytest

from divergent.errors import DivergentError
from divergent.study import config as C


def test_defaults_fill_and_presets_validate():
    for p in C.PRESETS:
        cfg = C.load(p)
        assert cfg.data.split == "test" and cfg.data.fit_on == "holdout"
    assert C.load(None).study.name == "fashion-mnist"


@pytest.mark.parametrize("raw,match", [
    ({"analysis": {"n_bot": 10}}, r"unknown config key 'analysis.n_bot'.*n_boot"),
    ({"anlysis": {}}, r"unknown config section \[anlysis\].*analysis"),
    ({"run": {"executor": "slurm"}}, r"'run.executor'.*'local', 'inline', 'ray'"),
    ({"data": {"split": "holdout"}}, r"'data.split'.*'test'"),
    ({"analysis": {"acc_band": [0.9, 0.8]}}, r"'analysis.acc_band'"),
    ({"analysis": {"acc_band": "wide"}}, r"'analysis.acc_band'.*'auto'"),
    ({"analysis": {"n_boot": "many"}}, r"'analysis.n_boot'.*int"),
    ({"analysis": {"transfer": ["voc"]}}, r"'analysis.transfer'.*digits"),
    ({"run": {"workers": 0}}, r"'run.workers'"),
    ({"analysis": {"feature_fractions": [0.5, 2]}}, r"'analysis.feature_fractions'"),
])
def test_errors_name_key_and_allowed(raw, match):
    with pytest.raises(DivergentError, match="(?s)" + match):
        C.validate(raw)  # noqa


def test_percent_band_is_converted():
    assert C.validate({"analysis": {"acc_band": [74, 78]}}).analysis.acc_band == [0.74, 0.78]


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(DivergentError, match="(?s)unknown study preset 'fashion-mnst'.*fashion-mnist"):
        C.load("fashion-mnst")
    with pytest.raises(DivergentError, match="does not exist"):
        C.load(str(tmp_path / "nope.toml"))


def test_bad_toml_says_so(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[study\nname=1")
    with pytest.raises(DivergentError, match="not valid TOML"):
        C.load(str(p))


def test_resolved_config_roundtrips(tmp_path):
    import tomllib

    cfg = C.load("cifar10")
    again = C.validate(tomllib.loads(C.dumps(cfg)))
    assert {k: getattr(again, k) for k in C.SECTIONS} == {k: getattr(cfg, k) for k in C.SECTIONS}


def test_plan_unknown_base_suggests(tmp_path):
    from divergent.study import plan

    cfg = C.load("fashion-mnist-quick", {"base.model": "fmnist-quick/cnn-bse"})
    with pytest.raises(DivergentError, match="cnn-base"):
        plan(cfg)


def test_plan_has_every_stage_in_order():
    from divergent.study import plan

    g = plan(C.load("fashion-mnist-quick"))
    assert g.stages() == ["data", "train", "extract", "head", "calibrate", "pairs", "analyses", "report"]
    assert [u.id for u in g][-1] == "report"
    # expensive analyses are scoped: one feature unit per category, not per pair
    assert sum(u.id.startswith("features:") for u in g) == 6


def test_only_unknown_recipe_is_named():
    from divergent.study import plan

    cfg = C.load("fashion-mnist-quick", {"zoo.only": ["cnn-seed1", "cnn-wider"]})
    with pytest.raises(DivergentError, match="cnn-wider"):
        plan(cfg)


def test_only_keeps_teachers():
    from divergent.study import plan

    cfg = C.load("fashion-mnist-quick", {"zoo.only": ["cnn-distill"]})
    trains = [u.id for u in plan(cfg) if u.stage == "train"]
    from divergent.train import zoo

    teacher = next(r.teacher for r in zoo("fashion-mnist-quick") if r.name.endswith("cnn-distill"))
    assert f"train:{teacher}" in trains and trains[0].endswith("cnn-base")


def test_cifar10_plan_sizes_and_unknown_models():
    import importlib

    from divergent.errors import DivergentError

    plan = importlib.import_module("divergent.study.plan")
    zp = plan.zoo_plan(C.load("cifar10"))
    sizes = {m["name"]: m["input_size"] for m in zp.backbones + zp.pretrained}
    # pretrained CIFAR models keep their own 32 px; resizable backbones get zoo.input_size
    assert sizes["pretrained/resnet56"] == 0 and sizes["imagenet/efficientnet-lite2@96px"] == 96
    assert sizes["inat-bird/mobilenet_v2_1.0_224_quant"] == 0
    units = plan.plan(C.load("cifar10")).units
    # a renamed pretrained model is extracted under its configured name (calibrate and pairs use it);
    # default-named backbones carry no name parameter (their cache keys stay put)
    assert units["extract:pretrained/resnet56"].params["name"] == "pretrained/resnet56"
    assert "name" not in units["extract:imagenet/efficientnet-lite2@96px"].params
    with pytest.raises(DivergentError, match="unknown model"):
        plan.zoo_plan(C.load("fashion-mnist", {"zoo.backbones": ["imagenet/efficientnet-lite9"]}))


def test_config_is_frozen_sections_with_one_default_each():
    import dataclasses

    from divergent.conventions import N_BOOT

    cfg = C.load("fashion-mnist-quick", {"analysis.n_boot": 50})
    assert cfg.analysis.n_boot == 50 and C.load(None).analysis.n_boot == N_BOOT == C.AnalysisSection().n_boot
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.analysis.n_boot = 10
    with pytest.raises(DivergentError, match=r"(?s)unknown config key 'analysis.n_bot'.*did you mean 'n_boot'"):
        C.load("fashion-mnist-quick", {"analysis.n_bot": 50})
    # list defaults are not shared between configs
    assert C.AnalysisSection().transfer is not C.AnalysisSection().transfer


def test_zoo_seed_and_epochs_scale_change_only_the_training_units():
    """zoo.seed k trains another draw of the same zoo (seed + 1000 k, still distinct within the zoo);
    zoo.epochs_scale scales every recipe's epochs; every unit that does not train keeps its params,
    and at their defaults the train units are unchanged (so are existing caches)."""
    from divergent.study import plan

    def units(overrides):
        return {u.id: u for u in plan(C.load("fashion-mnist-quick", overrides))}

    base, seeded, scaled = units({}), units({"zoo.seed": 2}), units({"zoo.epochs_scale": 2.5})
    assert base.keys() == seeded.keys() == scaled.keys()
    trains = [k for k in base if k.startswith("train:")]
    assert len(trains) == 10
    for k in trains:
        r0, r2, r3 = base[k].params["recipe"], seeded[k].params["recipe"], scaled[k].params["recipe"]
        assert r2["seed"] == r0["seed"] + 2000 and r2["epochs"] == r0["epochs"]
        assert r3["epochs"] == max(1, round(r0["epochs"] * 2.5)) and r3["seed"] == r0["seed"]
        assert {**r2, "seed": r0["seed"]} == r0 and {**r3, "epochs": r0["epochs"]} == r0
    assert len({seeded[k].params["recipe"]["seed"] for k in trains}) == len(trains)
    assert any(scaled[k].params["recipe"]["epochs"] != base[k].params["recipe"]["epochs"] for k in trains)
    for k in base.keys() - set(trains):
        assert seeded[k].params == base[k].params == scaled[k].params, k
    assert units({"zoo.seed": 0, "zoo.epochs_scale": 1.0}).keys() == base.keys()
    assert all(units({"zoo.seed": 0})[k].params == base[k].params for k in trains)
    for bad, match in [({"zoo.seed": -1}, "zoo.seed"), ({"zoo.epochs_scale": 0.0}, "zoo.epochs_scale")]:
        with pytest.raises(DivergentError, match=match):
            plan(C.load("fashion-mnist-quick", bad))
