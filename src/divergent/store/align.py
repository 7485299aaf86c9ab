"""Id alignment: the row order that puts a producer's example ids into a split's order."""
from __future__ import annotations

import numpy as np

from ..errors import DivergentError


def first_duplicates(ids: np.ndarray, k: int = 3) -> list[str]:
    u, c = np.unique(ids, return_counts=True)
    return [str(x) for x in u[c > 1][:k]]


def align_ids(given: np.ndarray, split_ids: np.ndarray, *, what: str) -> np.ndarray:
    """Row order that puts `given` ids into the split's order; missing/extra ids are errors."""
    if len(np.unique(given)) != len(given):
        raise DivergentError(f"{what}: duplicate ids, e.g. {first_duplicates(given)}", "ids must be unique")
    pos = {s: i for i, s in enumerate(given.tolist())}
    missing = [s for s in split_ids.tolist() if s not in pos]
    extra = sorted(set(pos) - set(split_ids.tolist()))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} split ids missing (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} ids not in the split (e.g. {extra[:3]})")
        raise DivergentError(f"{what}: ids do not match the split: " + "; ".join(parts),
                             "give predictions for exactly the split's examples, identified by the same ids")
    return np.fromiter((pos[s] for s in split_ids.tolist()), dtype=np.int64, count=len(split_ids))
