"""Recipes are data; the categories derived from their cards come out as intended; subsets are disjoint."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from divergent.cards import category
from divergent.errors import DivergentError
from divergent.train import Recipe, base_recipe, card_from_recipe, intended_categories, zoo
from divergent.train.recipes import ZOOS

PAPER = ("reinit", "hyperparameters", "architecture", "framework")


@pytest.mark.parametrize("name", ZOOS)
def test_derived_categories_match_intent(name):
    recipes = zoo(name)
    base = card_from_recipe(recipes[0])
    assert recipes[0] == base_recipe(name)
    intended = intended_categories(name)
    derived = {r.name: category(base, card_from_recipe(r)) for r in recipes}
    assert derived == intended
    assert derived[recipes[0].name] == "identical"
    assert len({r.name for r in recipes}) == len(recipes)


@pytest.mark.parametrize("name", ["fashion-mnist", "fashion-mnist-quick"])
def test_fmnist_zoos_have_three_per_category(name):
    base = card_from_recipe(base_recipe(name))
    counts = Counter(category(base, card_from_recipe(r)) for r in zoo(name))
    for c in PAPER + ("subset",):
        assert counts[c] >= 3, (c, counts)
    objectives = {r.objective for r in zoo(name)}
    assert {"contrastive", "distillation", "autoencoder", "masked-image"} <= objectives


def test_quick_zoo_has_the_same_structure():
    full, quick = zoo("fashion-mnist"), zoo("fashion-mnist-quick")
    short = lambda rs: [r.name.split("/", 1)[1] for r in rs]  # noqa: E731
    assert short(full) == short(quick)
    assert list(intended_categories("fashion-mnist").values()) == list(intended_categories("fashion-mnist-quick").values())
    assert sum(r.limit or 60000 for r in quick) < sum(r.limit or 60000 for r in full)


def test_cards_use_core_vocabularies_and_probe_heads():
    for r in zoo("fashion-mnist"):
        card = card_from_recipe(r)
        assert card.train_data == "fashion-mnist"
        assert card.head == ("linear-probe" if r.objective in ("contrastive", "autoencoder", "masked-image") else "trained")
        assert "seed" not in card.hparams


def test_recipe_round_trip_and_validation():
    r = zoo("fashion-mnist")[-1]
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(DivergentError, match="train"):
        Recipe(name="x", split="test")
    with pytest.raises(DivergentError, match="train"):
        Recipe(name="x", split="holdout")
    with pytest.raises(DivergentError, match="objective"):
        Recipe(name="x", objective="magic")
    with pytest.raises(DivergentError, match="teacher"):
        Recipe(name="x", objective="distillation")


def test_subset_indices_are_disjoint_and_seeded():
    from divergent.train.data import subset_indices

    parts = [subset_indices(60000, (k, 3), None) for k in range(3)]
    for a, b in itertools.combinations(parts, 2):
        assert np.intersect1d(a, b).size == 0
    assert sum(p.size for p in parts) == 60000
    assert np.array_equal(subset_indices(60000, None, 100), subset_indices(60000, None, 100))
    subset_models = [r for r in zoo("fashion-mnist-quick") if r.subset is not None]
    idx = [subset_indices(60000, r.subset, r.limit) for r in subset_models]
    for a, b in itertools.combinations(idx, 2):
        assert np.intersect1d(a, b).size == 0


def test_user_zoo_from_toml(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('[base]\nname = "mine/base"\nfamily = "cnn"\nlimit = 1000\n\n'
                 '[[model]]\nname = "mine/seed1"\nseed = 1\n\n'
                 '[[model]]\nname = "mine/mlp"\nfamily = "mlp"\n\n'
                 '[[model]]\nname = "mine/half"\nsubset = [0, 2]\n')
    rs = zoo(str(p))
    base = card_from_recipe(rs[0])
    assert [category(base, card_from_recipe(r)) for r in rs] == ["identical", "reinit", "architecture", "subset"]
    assert rs[3].subset == (0, 2)
    bad = tmp_path / "bad.toml"
    bad.write_text('[base]\nname = "b"\nsplit = "test"\n')
    with pytest.raises(DivergentError, match="train"):
        zoo(str(bad))


def test_shipped_toml_preset():
    from pathlib import Path

    import divergent

    p = Path(divergent.__file__).parent / "presets" / "zoo_fashion-mnist-mini.toml"
    rs = zoo(str(p))
    base = card_from_recipe(rs[0])
    assert [category(base, card_from_recipe(r)) for r in rs] == [
        "identical", "reinit", "hyperparameters", "architecture", "framework", "subset"]
