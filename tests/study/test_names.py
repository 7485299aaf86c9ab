"""Every name a study turns into a directory, a store entry or a split passes the project's one
name rule at plan time, before any unit runs: a recipe named `..` cannot write into the output root."""
from __future__ import annotations

import dataclasses
import importlib

import pytest

from divergent.errors import DivergentError
from divergent.study import config as C

P = importlib.import_module("divergent.study.plan")
runner = importlib.import_module("divergent.study.runner")


@pytest.fixture
def no_units(monkeypatch):
    """Record any attempt to run the unit graph (nothing may run when a name is refused)."""
    calls = []
    monkeypatch.setattr(runner, "run_graph", lambda *a, **k: calls.append(a) or pytest.fail("a unit ran"))
    return calls


def _recipe(name: str, **more) -> str:
    fields = ", ".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in more.items())
    return "{ name = %s%s }" % (_toml_str(name), ", " + fields if fields else "")


def _toml_str(s: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in s) + '"'


BAD = ["..", "a/../b", "a\x01b", "/abs", "x/./y", "tab\there", "a\\b", "a\u202eb"]


@pytest.mark.parametrize("bad", BAD)
def test_bad_recipe_name_is_refused_before_any_unit(tmp_path, no_units, bad):
    toml = tmp_path / "study.toml"
    toml.write_text(f"[zoo]\nrecipes = [{_recipe('fmnist/base')}, {_recipe(bad)}]\n")
    with pytest.raises(DivergentError, match="recipe name"):
        P.run_study(str(toml), tmp_path / "out", echo=None)
    assert no_units == []
    assert not (tmp_path / "models").exists() and not (tmp_path / "out" / "models").exists()


@pytest.mark.parametrize("key,value,what", [
    ("zoo.pretrained", [{"model": "cifar10/resnet20", "name": ".."}], "zoo model name '..'.*'zoo.pretrained"),
    ("zoo.backbones", [{"model": "cifar10/resnet20", "name": "a/../b"}], "zoo model name 'a/../b'.*'zoo.backbones"),
    ("zoo.pretrained", ["torch:cifar_resnet:resnet20@x/../w.th"], "zoo model name"),   # derived from the spec
    ("base.high_accuracy", "..", "base model name.*'base.high_accuracy'"),
    ("study.name", "x\nInjected: line", "study name.*control character"),
])
def test_every_study_name_is_checked(no_units, key, value, what):
    cfg = C.load("fashion-mnist-quick", {key: value})
    with pytest.raises(DivergentError, match=what):
        P.plan(cfg)


def test_split_names_are_checked():
    cfg = C.load("fashion-mnist-quick")
    # past validation (e.g. a future vocabulary): the plan still refuses
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fit_on="../holdout"))
    with pytest.raises(DivergentError, match="split name"):
        P.plan(cfg)


def test_teacher_name_is_checked():
    cfg = C.load("fashion-mnist-quick", {"zoo.only": [], "zoo.recipes": [
        {"name": "base"}, {"name": "s", "objective": "distillation", "teacher": "../base"}]})
    with pytest.raises(DivergentError, match="teacher"):
        P.plan(cfg)


def test_recipes_may_not_share_a_model_directory():
    cfg = C.load("fashion-mnist-quick", {"zoo.only": [], "zoo.recipes": [{"name": "z/a"}, {"name": "z__a"}]})
    with pytest.raises(DivergentError, match="share the directory"):
        P.plan(cfg)
    cfg = C.load("fashion-mnist-quick", {"zoo.only": [], "zoo.recipes": [{"name": "Net"}, {"name": "net"}]})
    with pytest.raises(DivergentError, match="share the directory"):
        P.plan(cfg)


def test_names_must_be_nfc_so_they_match_the_store():
    cfg = C.load("fashion-mnist-quick", {"zoo.only": [], "zoo.recipes": [{"name": "cafe\u0301"}]})
    with pytest.raises(DivergentError, match="NFC") as e:
        P.plan(cfg)
    assert "caf\u00e9" in e.value.fix


def test_a_preset_name_that_is_a_directory(tmp_path, monkeypatch, no_units):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DivergentError, match="not a file"):
        P.run_study("..", tmp_path / "out", echo=None)


def test_good_names_still_plan():
    cfg = C.load("fashion-mnist-quick", {"zoo.pretrained": [{"model": "cifar10/resnet20", "name": "pre/r20 v1:a"}],
                                         "study.name": "my study"})
    assert "extract:pre/r20 v1:a" in P.plan(cfg).units
