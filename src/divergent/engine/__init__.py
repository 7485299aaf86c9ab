"""Fast, exact all-pairs and greedy-ensemble engines (certified equal to the reference arithmetic).

See docs/engine.md for the algorithms and the exactness argument.
"""
from __future__ import annotations

from .greedy import GreedyStep, greedy_select
from .pairs import PairResult, all_pair_codes, pair_codes
from .prepare import ModelSource, PreparedModel, prepare, prepare_many

__all__ = [
    "ModelSource", "PreparedModel", "prepare", "prepare_many",
    "PairResult", "pair_codes", "all_pair_codes",
    "GreedyStep", "greedy_select",
]
