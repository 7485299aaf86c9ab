"""The project-wide conventions every stage uses: split names, CLI words, id rules."""
from __future__ import annotations

from .errors import DivergentError

TRAIN, HOLDOUT, TEST = "train", "holdout", "test"
SPLITS = (TRAIN, HOLDOUT, TEST)
#: seed of the stratified holdout/test halves of an official test set
SPLIT_SEED = 0
#: bootstrap defaults
N_BOOT = 1000
CI_LEVEL = 0.95


def check_fit_split(fit_on: str, evaluate_on: str, allow_same: bool = False) -> None:
    """Refuse fitting/selecting on the split that is evaluated (unless overridden)."""
    if fit_on == evaluate_on and not allow_same:
        raise DivergentError(
            f"refusing to fit or select on {fit_on!r}, the split being evaluated",
            "fit on the holdout (--fit-on holdout) and evaluate on test (--split test); "
            "pass --allow-fit-on-eval (allow_fit_on_eval=True) only if you know why",
        )
