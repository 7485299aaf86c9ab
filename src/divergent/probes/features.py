"""Feature combination (Section 4.6, Appendix A.5): random-subset concatenation and ranked selection.

Every representation is L2-normalised per example before any operation (Appendix A.5).

* Random-subset concatenation at inverse rates: with the budget D = min(dim A, dim B),
  round(p * D) random dimensions of A and the remaining D - round(p * D) of B, for
  several seeds; linear-probe accuracy as a function of p (:func:`feature_combination`).
* Ranked selection (:func:`ranked_features`). The paper ranks the dimensions of the two
  models' concatenated embeddings "from highest to lowest covariance" and selects the
  "most diverse" first. We read that as the per-dimension variance (the diagonal of the
  covariance) of the L2-normalised concatenated embeddings, highest first
  (``ranking="variance"``). We also offer the least-redundant ranking: lowest mean
  absolute covariance with the other dimensions first (``ranking="redundancy"``), and a
  seeded random order as a control (``ranking="random"``). Statistics are computed on the
  fit split only. Accuracy vs number of dimensions (steps of ``step``; the paper uses
  multiples of 256), and :func:`dims_to_target` gives the first number of dimensions whose
  accuracy reaches a target -- NaN with ``reached=False`` when none does.
"""
from __future__ import annotations

import numpy as np

from ..analyses._select import as_store, fraction
from ..conventions import HOLDOUT, TEST, TRAIN, check_fit_split
from ..errors import DivergentError
from ._io import embeddings, split_data, stratified_subset
from .lbfgs import sweep_probe

RANKINGS = ("variance", "redundancy", "random")


def _load_pair(store, a, b, fit_on, select_on, split, max_train, seed, allow_fit_on_eval):
    if select_on == fit_on:
        raise DivergentError("lam would be selected on the fit split", "use --fit-on train --select-on holdout")
    check_fit_split(fit_on, split, allow_fit_on_eval)
    check_fit_split(select_on, split, allow_fit_on_eval)
    data = {}
    for s in (fit_on, select_on, split):
        sd = split_data(store, s)
        data[s] = (embeddings(store, a, s), embeddings(store, b, s), np.asarray(sd.labels, dtype=np.int64))
    Xa, Xb, y = data[fit_on]
    idx = stratified_subset(y, max_train, seed)
    data[fit_on] = (Xa[idx], Xb[idx], y[idx])
    if data[fit_on][0].shape[1] != data[split][0].shape[1] or data[fit_on][1].shape[1] != data[split][1].shape[1]:
        raise DivergentError("embedding dimensions differ between splits", "re-extract every split with one model")
    return data, len(split_data(store, fit_on).class_names)


def _evaluate(data, fit_on, select_on, split, cols_a, cols_b, K, grid, lam, scores=None, **kw):
    def take(s):
        Xa, Xb, y = data[s]
        return np.concatenate([Xa[:, cols_a], Xb[:, cols_b]], axis=1), y

    Xf, yf = take(fit_on)
    Xs, ys = take(select_on)
    Xt, yt = take(split)
    sw = sweep_probe(Xf, yf, Xs, ys, [lam] if lam is not None else grid, n_classes=K, normalize=False, **kw)
    fit = sw.best
    z = fit.decision_function(Xt)
    if scores is not None:
        scores.append(z)
    acc = float((z.argmax(1) == yt).mean())
    return dict(lam=fit.lam, select_accuracy=float(sw.table.loc[sw.table.selected, "select_score"].iloc[0]),
                accuracy=acc, converged=bool(sw.table.converged.all()))


def feature_combination(store, a: str, b: str, fit_on: str = TRAIN, select_on: str = HOLDOUT, split: str = TEST,
                        *, rates=(0.0, 0.25, 0.5, 0.75, 1.0), seeds=(0, 1, 2), grid=None, lam: float | None = None,
                        max_train: int | None = None, subset_seed: int = 0, allow_fit_on_eval: bool = False,
                        return_scores: bool = False, **probe_kw):
    """Accuracy of random-subset concatenations of A and B at inverse rates (one row per (p, seed)).

    p is the fraction of the budget D = min(dim A, dim B) taken from A. Dimensions are drawn
    by ``numpy.random.default_rng([seed, i])`` for the i-th rate. lam is selected on
    ``select_on`` for each combination (or fixed with ``lam=``). With ``return_scores`` the
    result is ``(table, scores)``: scores[i] is the (N, K) probe decision values on ``split``
    of the table's row i (for per-example comparisons such as paired bootstraps).
    """
    store = as_store(store)
    import pandas as pd

    data, K = _load_pair(store, a, b, fit_on, select_on, split, max_train, subset_seed, allow_fit_on_eval)
    dA, dB = data[fit_on][0].shape[1], data[fit_on][1].shape[1]
    D = min(dA, dB)
    rows, scores = [], ([] if return_scores else None)
    for i, p in enumerate(rates):
        if not 0.0 <= float(p) <= 1.0:
            raise DivergentError(f"rate {p!r} is outside [0, 1]", "rates are fractions of the budget taken from A")
        kA = int(round(float(p) * D))
        for seed in seeds:
            rng = np.random.default_rng([int(seed), i])
            cols_a = np.sort(rng.choice(dA, kA, replace=False))
            cols_b = np.sort(rng.choice(dB, D - kA, replace=False))
            r = _evaluate(data, fit_on, select_on, split, cols_a, cols_b, K, grid, lam, scores, **probe_kw)
            rows.append(dict(a=a, b=b, p=float(p), seed=int(seed), n_a=kA, n_b=D - kA, dims=D, split=split, **r))
    return (pd.DataFrame(rows), scores) if return_scores else pd.DataFrame(rows)


def rank_dimensions(Z: np.ndarray, ranking: str = "variance", seed: int = 0) -> np.ndarray:
    """Column order of Z (examples x dims, already L2-normalised per representation)."""
    Z = np.asarray(Z, dtype=np.float64)
    if ranking == "variance":
        return np.argsort(-Z.var(axis=0), kind="stable")
    if ranking == "redundancy":
        C = np.cov(Z, rowvar=False)
        A = np.abs(C)
        mean_abs = (A.sum(axis=1) - np.diag(A)) / max(Z.shape[1] - 1, 1)
        return np.argsort(mean_abs, kind="stable")
    if ranking == "random":
        return np.random.default_rng(seed).permutation(Z.shape[1])
    raise DivergentError(f"unknown ranking {ranking!r}", f"use one of {', '.join(RANKINGS)}")


def ranked_features(store, a: str, b: str, fit_on: str = TRAIN, select_on: str = HOLDOUT, split: str = TEST,
                    *, rankings=("variance", "redundancy"), step: int = 32, max_dims: int | None = None,
                    dims=None, grid=None, lam: float | None = None, max_train: int | None = None,
                    subset_seed: int = 0, seed: int = 0, allow_fit_on_eval: bool = False, **probe_kw):
    """Accuracy vs number of dimensions selected by rank from the concatenation [A, B].

    One row per (ranking, dims): how many came from A and B, selected lam, accuracy on
    ``split``. ``dims`` overrides the steps (step, 2*step, ... up to max_dims or dim A + dim B).
    """
    store = as_store(store)
    import pandas as pd

    data, K = _load_pair(store, a, b, fit_on, select_on, split, max_train, subset_seed, allow_fit_on_eval)
    dA, dB = data[fit_on][0].shape[1], data[fit_on][1].shape[1]
    total = dA + dB
    if dims is None:
        if step < 1:
            raise DivergentError(f"step must be >= 1, got {step}")
        top = min(total, max_dims or total)
        dims = list(range(step, top + 1, step))
        if not dims or dims[-1] != top:
            dims.append(top)
    dims = [int(d) for d in dims]
    if min(dims) < 1 or max(dims) > total:
        raise DivergentError(f"dims must lie in [1, {total}], got {dims}")
    Zf = np.concatenate(data[fit_on][:2], axis=1)
    rows = []
    for ranking in rankings:
        order = rank_dimensions(Zf, ranking, seed)
        for d in dims:
            cols = np.sort(order[:d])
            ca, cb = cols[cols < dA], cols[cols >= dA] - dA
            r = _evaluate(data, fit_on, select_on, split, ca, cb, K, grid, lam, **probe_kw)
            rows.append(dict(a=a, b=b, ranking=ranking, dims=d, n_a=int(ca.size), n_b=int(cb.size), split=split, **r))
    return pd.DataFrame(rows)


def dims_to_target(curve, target: float, metric: str = "accuracy"):
    """Per ranking, the fewest dims whose accuracy reaches ``target`` (fraction).

    Never a made-up number: ``dims`` is NaN and ``reached`` False when no tested number
    of dimensions reaches the target; ``best`` gives the best accuracy seen.
    """
    import pandas as pd

    target = fraction(target)
    rows = []
    keys = ["a", "b", "ranking"] if "ranking" in curve else ["a", "b"]
    for key, g in curve.groupby(keys, sort=False):
        g = g.sort_values("dims")
        hit = g[g[metric] >= target]
        rows.append(dict(zip(keys, key), target=target, reached=not hit.empty,
                         dims=float(hit.dims.iloc[0]) if not hit.empty else float("nan"),
                         best=float(g[metric].max()), max_dims_tested=int(g.dims.max())))
    return pd.DataFrame(rows)


def pair_feature_study(store, base: str, other: str, *, category: str, fractions, seeds, dims_steps, grid,
                       fit_on: str = TRAIN, select_on: str = HOLDOUT, split: str = TEST):
    """Section 4.6 for one pair, as the study reports it: random-subset combination at a fixed
    budget (feature_combination), the variance-ranked dims curve (ranked_features), and the best
    single and best combined probe chosen on `select_on` (ties to the later name).

    Returns (combination rows, dims-curve rows, best) where best holds the names, holdout scores
    and per-example correctness on `split` of the best single and best combined embeddings."""
    import pandas as pd

    from .transfer import transfer

    from ..metrics.ranking import top1_correct

    store = as_store(store)
    y = np.asarray(store.split(split).labels)

    def correct(z):
        return top1_correct(z, y)

    kw = dict(fit_on=fit_on, select_on=select_on, split=split, grid=grid, warn=False)
    # whole embeddings: base, other and their full concatenation
    whole, wz = transfer(store, [base, other], task=None, pairs=True, return_scores=True, **kw)
    hold = dict(zip(whole["models"], whole["select_score"].astype(float)))
    cands = {"base": (hold[base], correct(wz[base])), "other": (hold[other], correct(wz[other])),
             "concat": (hold[f"{base}+{other}"], correct(wz[f"{base}+{other}"]))}
    fc, fz = feature_combination(store, base, other, rates=[float(p) for p in fractions],
                                 seeds=[int(s) for s in seeds], return_scores=True, **kw)
    for r, z in zip(fc.itertuples(), fz):
        if 0 < r.p < 1:
            cands[f"mix{r.p:.2f}s{r.seed}"] = (float(r.select_accuracy), correct(z))
    rows = pd.DataFrame({"model_a": base, "model_b": other, "category": category, "fraction_a": fc["p"].astype(float),
                         "seed": fc["seed"].astype(int), "n_dims": fc["dims"].astype(int),
                         "holdout_accuracy": fc["select_accuracy"].astype(float),
                         "accuracy": fc["accuracy"].astype(float), "lam": fc["lam"].astype(float)})
    total = int(store.array(base, split, "features").shape[1] + store.array(other, split, "features").shape[1])
    dims = sorted({int(v) for v in dims_steps if 1 <= int(v) <= total} | {total})
    rc = ranked_features(store, base, other, rankings=("variance",), dims=dims, **kw)
    drows = pd.DataFrame({"model_a": base, "model_b": other, "category": category, "n_dims": rc["dims"].astype(int),
                          "n_a": rc["n_a"].astype(int), "n_b": rc["n_b"].astype(int),
                          "holdout_accuracy": rc["select_accuracy"].astype(float),
                          "accuracy": rc["accuracy"].astype(float), "lam": rc["lam"].astype(float)})
    single = max(("base", "other"), key=lambda k: (cands[k][0], k))
    combined = max((k for k in cands if k not in ("base", "other")), key=lambda k: (cands[k][0], k))
    best = dict(single=base if single == "base" else other, single_holdout=cands[single][0],
                single_correct=cands[single][1], combined=f"{base}+{other} ({combined})",
                combined_holdout=cands[combined][0], combined_correct=cands[combined][1])
    return rows, drows, best
