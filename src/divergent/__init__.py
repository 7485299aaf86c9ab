"""divergent: how differently-trained models differ (Gontijo-Lopes, Dauphin, Cubuk, ICLR 2022).

The public API, re-exported lazily (importing divergent loads no heavy dependency):

    Store, ModelCard, category, open_store, import_predictions, cards_table,
    calibrate, pairs, pair_outcomes, model_table,
    greedy_ensemble, base_plus_one, specialization, lines, cka, shift_pairs,
    extract, fit_head, feature_combination, ranked_features, transfer, run_study
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Store": "divergent.store",
    "ModelCard": "divergent.cards",
    "category": "divergent.cards",
    "DivergentError": "divergent.errors",
    "open_store": "divergent.api",
    "cards_table": "divergent.api",
    "import_predictions": "divergent.store.formats",
    "calibrate": "divergent.analyses.calibration",
    "pairs": "divergent.analyses.pairs",
    "pair_outcomes": "divergent.analyses.pairs",
    "model_table": "divergent.analyses.pairs",
    "category_summary": "divergent.analyses.categories",
    "greedy_ensemble": "divergent.analyses.ensembles",
    "base_plus_one": "divergent.analyses.ensembles",
    "specialization": "divergent.analyses.specialization",
    "lines": "divergent.api",
    "cka": "divergent.api",
    "shift_pairs": "divergent.api",
    "extract": "divergent.extract",
    "fit_head": "divergent.probes.heads",
    "feature_combination": "divergent.probes.features",
    "ranked_features": "divergent.probes.features",
    "transfer": "divergent.probes.transfer",
    "run_study": "divergent.study",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'divergent' has no attribute {name!r}")


def __dir__():
    return __all__
