"""Unit versions: the checked-in table of each unit's code hashes (its function and the modules it
declares) fails when code changes while the version does not; formatting, comments and docstrings
do not count."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from divergent.study import units

TABLE = Path(__file__).parent / "unit_versions.json"


def test_every_unit_version_matches_the_table():
    problems = units.check_table(TABLE)
    assert not problems, "\n".join(problems)


def test_a_changed_hash_without_a_version_bump_asks_for_one(tmp_path):
    table = units.version_table()
    assert {"data", "train", "extract", "head", "calibrate", "pairs", "report"} <= set(table)
    entry = table["pairs"]
    assert "divergent.analyses.pairs" in entry["code"] and "divergent.study.stages.pairs_unit" in entry["code"]
    p = tmp_path / "t.json"
    entry["code"]["divergent.analyses.pairs"] = "0" * 64
    p.write_text(json.dumps(table))
    (problem,) = units.check_table(p)
    assert "'pairs' changed (divergent.analyses.pairs)" in problem and "Bump version=" in problem
    assert units.UPDATE_COMMAND in problem
    entry["version"] -= 1          # the code changed and the version was bumped: only the table is stale
    p.write_text(json.dumps(table))
    (problem,) = units.check_table(p)
    assert "Bump" not in problem and units.UPDATE_COMMAND in problem
    del table["pairs"]
    p.write_text(json.dumps(table))
    assert units.check_table(p) == [f"unit 'pairs' is not in the table; regenerate the table: {units.UPDATE_COMMAND}"]


def test_update_table_writes_what_check_reads(tmp_path):
    p = tmp_path / "t.json"
    assert units.main(["--update-table", str(p)]) == 0
    assert units.main(["--check", str(p)]) == 0 and units.check_table(p) == []


MODULE = '''
"""Docstring."""
K = 3


def helper(x):
    return x * K


def other():
    return 1


@unit(name="u", version=1)
def u(ctx, *, n):
    """What it does."""
    return {"v": helper(n)}
'''


def _hashes(tmp_path, text):
    p = tmp_path / "m.py"
    p.write_text(textwrap.dedent(text))
    return units.module_hash(p), units.function_hash(p, "u")


def test_normalised_hashes_ignore_layout_comments_docstrings_and_the_decorator(tmp_path):
    base = _hashes(tmp_path, MODULE)
    relaid = MODULE.replace('"""What it does."""', '"""Another docstring."""  # a comment').replace(
        "return x * K", "return (x\n            * K)  # layout").replace("version=1", "version=2")
    m, f = _hashes(tmp_path, relaid)
    assert f == base[1]
    assert m != base[0]          # the module's own hash sees the decorator's version change
    assert _hashes(tmp_path, relaid.replace("version=2", "version=1")) == base


def test_function_hash_follows_the_module_helpers_it_uses(tmp_path):
    base = _hashes(tmp_path, MODULE)
    assert _hashes(tmp_path, MODULE.replace("K = 3", "K = 4"))[1] != base[1]           # a constant it uses
    assert _hashes(tmp_path, MODULE.replace("x * K", "x + K"))[1] != base[1]           # a helper it calls
    assert _hashes(tmp_path, MODULE.replace("return 1", "return 2"))[1] == base[1]     # code it never uses
    assert _hashes(tmp_path, MODULE.replace("return 1", "return 2"))[0] != base[0]


def test_a_bumped_train_unit_retrains_instead_of_loading_the_finished_model(tmp_path, monkeypatch):
    import dataclasses
    import types

    import divergent.train as T
    from divergent.study.executors import UnitContext
    from divergent.study.stages import train_unit
    from divergent.train.trainer import safe_dirname

    recipe = T.zoo("fashion-mnist-quick")[0]
    mdir = tmp_path / "models" / safe_dirname(recipe.name)
    seen = []

    def fake_train(r, models_dir, **kw):     # records whether a finished model was there to load
        seen.append((mdir / "model.pt").exists())
        mdir.mkdir(parents=True, exist_ok=True)
        (mdir / "model.pt").write_bytes(b"weights")
        return types.SimpleNamespace(name=r.name, checkpoint=str(mdir / "model.pt"), train_wall_s=1.0)

    monkeypatch.setattr(T, "train_recipe", fake_train)
    monkeypatch.setattr(T, "load_trained", lambda d: types.SimpleNamespace(recipe=recipe))
    ctx = UnitContext(unit="train:x", out=tmp_path, store=tmp_path / "store", work=tmp_path / "w")
    train_unit(ctx, recipe=recipe.to_dict())
    train_unit(ctx, recipe=recipe.to_dict())
    assert seen == [False, True]              # same version: the finished model is loaded
    monkeypatch.setitem(units.REGISTRY, "train", dataclasses.replace(units.REGISTRY["train"], version=2))
    train_unit(ctx, recipe=recipe.to_dict())
    assert seen == [False, True, False]       # bumped: trained afresh
    assert json.loads((mdir / "unit.json").read_text())["version"] == 2
