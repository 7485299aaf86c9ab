"""Class mapping: hand-computed sums and renormalisation; CSV and TOML files; bad files are refused."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.extract import apply_mapping, load_mapping
from divergent.extract.run import finish_head, plan_head
from divergent.sources import ModelSpec


def test_sum_and_renormalise_by_hand():
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 1.0]])
    out, info = apply_mapping(p, {0: "a", 1: "a", 2: "b"}, ["a", "b"])
    np.testing.assert_allclose(out[0], [0.3 / 0.6, 0.3 / 0.6], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.5, 0.5])  # no mapped mass -> uniform
    assert out.dtype == np.float32
    assert info["unmapped_source_classes"] == 1 and info["rows_without_mapped_mass"] == 1


def test_csv_and_toml(tmp_path):
    (tmp_path / "m.csv").write_text("source,target\n0,cat\n# comment\n3, dog\n")
    assert load_mapping(tmp_path / "m.csv") == {0: "cat", 3: "dog"}
    (tmp_path / "m.toml").write_text('[mapping]\n"0" = "cat"\n[targets]\ndog = [3, 4]\n')
    assert load_mapping(tmp_path / "m.toml") == {0: "cat", 3: "dog", 4: "dog"}


@pytest.mark.parametrize("text,match", [
    ("0,cat\n0,dog\n", "mapped twice"),
    ("x,cat\n1,dog\n", None),  # a header row is allowed
    ("1,dog\nfoo,cat\n", "not an integer"),
    ("", "maps no classes"),
])
def test_bad_csv(tmp_path, text, match):
    (tmp_path / "m.csv").write_text(text)
    if match is None:
        assert load_mapping(tmp_path / "m.csv") == {1: "dog"}
    else:
        with pytest.raises(DivergentError, match=match):
            load_mapping(tmp_path / "m.csv")


def test_out_of_range_and_unknown_targets():
    p = np.full((1, 3), 1 / 3)
    with pytest.raises(DivergentError, match="model has 3 outputs"):
        apply_mapping(p, {5: "a"}, ["a"])
    with pytest.raises(DivergentError, match="does not have"):
        apply_mapping(p, {0: "zebra"}, ["a", "b"])


def test_background_drop_then_mapping_through_logits():
    spec = ModelSpec(name="m", source="torch", target="a:b", background_class=0, output="logits")
    logits = np.log(np.array([[0.5, 0.25, 0.125, 0.125]], dtype=np.float32))
    plan = plan_head(spec, 4, None, ["x", "y"], mapping={0: "x", 1: "y", 2: "y"})
    kind, arr, info = finish_head(plan, spec, logits, ["x", "y"])
    # background (0.5) dropped: [0.25, 0.125, 0.125] / 0.5 -> x = 0.5, y = 0.5
    assert kind == "probs"
    np.testing.assert_allclose(arr, [[0.5, 0.5]], rtol=1e-6)
    assert info["background_mass_mean"] == pytest.approx(0.5)


def test_head_reordered_by_class_name():
    spec = ModelSpec(name="m", source="torch", target="a:b", output="logits")
    plan = plan_head(spec, 3, ["b", "c", "a"], ["a", "b", "c"])
    kind, arr, _ = finish_head(plan, spec, np.array([[1.0, 2.0, 3.0]], dtype=np.float32), ["a", "b", "c"])
    assert kind == "logits" and arr.tolist() == [[3.0, 1.0, 2.0]]
    plan = plan_head(spec, 3, ["p", "q", "r"], ["a", "b", "c"])
    assert plan.store == "none" and "not the split's" in plan.reason
    with pytest.raises(DivergentError, match="not the split's"):
        plan_head(spec, 3, ["p", "q", "r"], ["a", "b", "c"], head="logits")
