"""How often a last-bit difference of `exp` changes a decision of a study, measured on its store.

numpy's AVX-512 `exp` and the libm / AVX2 one differ in the last bit on a few percent of arguments
(docs/study.md, Reproducibility). Everything divergent computes from logits goes through `exp`
(metrics.probs: the softmax; metrics.calibration: the NLL the temperature minimises), so the same
store gives results equal up to those bits on two machines — and a decision can still differ where
it is a near tie. This script measures how often, by running the reference arithmetic twice on
one machine: once with this machine's `np.exp`, once with `other_exp`, a deterministic function of
its argument that differs from it by one ulp on ~4 % of arguments (selected by a hash of the
argument's bits, so equal arguments give equal results, as another `exp` would). For every model
that has logits it refits the temperature on the holdout (checked equal to the store's own) and
compares: temperatures, each model's decisions, and the decision of every pair's two-model
ensemble (argmax of the mean calibrated probability) on the test split — the decisions every pair
metric, gain and finding is counted from. It also counts the ensemble decisions whose top-two margin
is within 1e-6 / 1e-9 / 1e-12 of the top probability (and the smallest such margin): the near ties
that such a change can flip.

    python scripts/near_ties.py OUT [--share 0.04] [--models N]

OUT is a study's output directory (its store is OUT/store) or a store. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from divergent.conventions import HOLDOUT, TEST
from divergent.metrics.calibration import fit_temperature
from divergent.metrics.probs import ensemble_probs, reference_probs
from divergent.train.evaluate import markdown as markdown_table
from divergent.store import Store

_NP_EXP = np.exp
#: multiplier of the argument hash (Knuth's 64-bit golden ratio): spreads nearby arguments' bits
_MIX = np.uint64(0x9E3779B97F4A7C15)


def other_exp(share: float = 0.04):
    """An `exp` that differs from numpy's by one ulp (up or down, by a second hash bit) on `share`
    of its arguments, chosen as a function of the argument's bits."""
    cut = np.uint64(int(share * 2**16))

    def exp(x, out=None, **kw):
        x = np.asarray(x, dtype=np.float64)
        r = np.asarray(_NP_EXP(x))
        h = (x.view(np.uint64) * _MIX) >> np.uint64(48)
        pick = (h & np.uint64(0xFFFF)) < cut
        if pick.any():
            r = np.array(r, copy=True)
            up = ((x.view(np.uint64) * _MIX) >> np.uint64(47)) & np.uint64(1)
            r[pick] = np.where(up[pick] == 1, np.nextafter(r[pick], np.inf), np.nextafter(r[pick], 0.0))
        if out is not None:
            out[...] = r
            return out
        return r if r.ndim else r[()]

    return exp


@contextlib.contextmanager
def exp_replaced(fn):
    """np.exp is `fn` inside the block (every module reads `np.exp` when it calls it)."""
    np.exp = fn
    try:
        yield
    finally:
        np.exp = _NP_EXP


def _models(store: Store) -> list[str]:
    return [m for m in store.models if all(store.has(m, s, "logits") for s in (HOLDOUT, TEST))]


def measure(store: Store, *, share: float = 0.04, limit: int | None = None) -> tuple[pd.DataFrame, dict]:
    models = _models(store)[:limit]
    y_fit, y = np.asarray(store.split(HOLDOUT).labels), np.asarray(store.split(TEST).labels)
    alt = other_exp(share)
    rows, p_ref, p_alt = [], {}, {}
    for m in models:
        lf, lt = np.asarray(store.array(m, HOLDOUT, "logits")), np.asarray(store.array(m, TEST, "logits"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_ref = fit_temperature(lf, y_fit).temperature
            with exp_replaced(alt):
                t_alt = fit_temperature(lf, y_fit).temperature
                p_alt[m] = reference_probs(lt, t_alt)
        p_ref[m] = reference_probs(lt, t_ref)
        stored = store.temperature(m)
        rows.append({"model": m, "temperature": t_ref, "equals_store": stored is not None and stored == t_ref,
                     "temperature_other_exp": t_alt, "relative_change": abs(t_alt - t_ref) / t_ref,
                     "decisions_changed": int((p_ref[m].argmax(1) != p_alt[m].argmax(1)).sum())})
    n_pairs = flips = pairs_changed = 0
    max_change = 0
    margins = {1e-6: 0, 1e-9: 0, 1e-12: 0}
    smallest = np.inf
    for a, b in itertools.combinations(models, 2):
        er, ea = ensemble_probs([p_ref[a], p_ref[b]]), ensemble_probs([p_alt[a], p_alt[b]])
        dr, da = er.argmax(1), ea.argmax(1)
        n_pairs += 1
        changed = dr != da
        flips += int(changed.sum())
        delta = int((da == y).sum()) - int((dr == y).sum())
        pairs_changed += delta != 0
        max_change = max(max_change, abs(delta))
        top2 = np.sort(er, axis=1)[:, -2:]
        rel = (top2[:, 1] - top2[:, 0]) / top2[:, 1]
        smallest = min(smallest, float(rel.min()))
        for t in margins:
            margins[t] += int((rel <= t).sum())
    summary = {"models": len(models), "examples": len(y), "pairs": n_pairs, "ensemble_decisions": n_pairs * len(y),
               "ensemble_decisions_changed": flips, "pairs_with_changed_ensemble_accuracy": int(pairs_changed),
               "largest_change_examples": max_change, "share_of_exp_arguments_changed": share,
               **{f"ensemble_margins_within_{t:g}": v for t, v in margins.items()},
               "smallest_relative_margin": smallest}
    return pd.DataFrame(rows), summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="a study's output directory or a store")
    ap.add_argument("--share", type=float, default=0.04, help="share of exp arguments changed by one ulp")
    ap.add_argument("--models", type=int, default=None, help="the first N models only")
    a = ap.parse_args(argv)
    path = Path(a.out) / "store" if (Path(a.out) / "store").is_dir() else Path(a.out)
    table, summary = measure(Store.open(path), share=a.share, limit=a.models)
    print(markdown_table(table))
    print()
    print(markdown_table(pd.DataFrame({"quantity": list(summary), "value": [str(v) for v in summary.values()]})))


if __name__ == "__main__":
    sys.exit(main())
