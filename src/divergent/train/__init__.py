"""The zoo: training recipes as data, a deterministic resumable trainer, and prediction for the store.

    from divergent.train import zoo, base_recipe, train_recipe, predict
    trained = [train_recipe(r, "runs/zoo") for r in zoo("fashion-mnist-quick")]
    logits, features = predict(trained[0], images_uint8)
"""
from __future__ import annotations

from .recipes import (Recipe, ZOOS, base_recipe, card_from_recipe, intended_categories, recipe_by_name,
                      zoo)
from .trainer import TrainedModel, load_trained, predict, train_recipe, train_zoo, training_indices

__all__ = [
    "Recipe", "ZOOS", "TrainedModel", "base_recipe", "card_from_recipe", "intended_categories",
    "load_trained", "predict", "recipe_by_name", "train_recipe", "train_zoo", "training_indices", "zoo",
]
