"""Human-likeness of decisions (Geirhos et al. 2020, 2021): per pair of observers and condition,
the squared accuracy difference, the observed consistency and the error consistency (Cohen's kappa
on correctness, 1 when the observed consistency is 1). Pure functions of correctness vectors."""
from __future__ import annotations

import numpy as np

from .pairs import error_consistency_from_rates


def by_condition(correct_a, correct_b, conditions) -> dict[str, np.ndarray]:
    """For each distinct condition (in sorted order): accuracy of A and B, squared accuracy
    difference, observed consistency (share of trials both right or both wrong), error consistency."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    conds = np.asarray(conditions).astype(str)
    if not (a.shape == b.shape == conds.shape):
        raise ValueError(f"correctness vectors and conditions differ in shape: {a.shape}, {b.shape}, {conds.shape}")
    names, code = np.unique(conds, return_inverse=True)
    n = np.bincount(code, minlength=len(names)).astype(np.float64)
    acc_a = np.bincount(code, weights=a, minlength=len(names)) / n
    acc_b = np.bincount(code, weights=b, minlength=len(names)) / n
    c_obs = np.bincount(code, weights=a == b, minlength=len(names)) / n
    return {"condition": names, "n": n.astype(np.int64), "acc_a": acc_a, "acc_b": acc_b,
            "accuracy_difference": np.square(acc_a - acc_b), "observed_consistency": c_obs,
            "error_consistency": error_consistency_from_rates(acc_a, acc_b, c_obs)}
