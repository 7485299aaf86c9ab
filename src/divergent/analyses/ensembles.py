"""Ensembles on a store (Sections 3.3, 4.2, 4.5): greedy forward selection and base + one model;
the study's greedy run of a high-accuracy model with lower-accuracy ones (Fig. 5) and the one
representative model per category that the other analyses compare with the base.

Rules: "mean-probs" (default; the mean of calibrated probabilities, exact by the reference
arithmetic through divergent.engine), "mean-logits" (the mean of temperature-scaled logits
z = float64(float32(l)) / T, argmax), "weighted" (members chosen as for mean-probs; then simplex
weights fitted by NLL on the fit split for every prefix of the path, and that weighted mean of
probabilities is evaluated). Everything fitted or selected uses `fit_on` (holdout); `split`
(test) is only evaluated; the two may not be the same split unless allow_fit_on_eval=True.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..cards import CATEGORY_ORDER, category
from ..conventions import HOLDOUT, N_BOOT, TEST, check_fit_split
from ..engine import ModelSource, greedy_select, pair_codes, prepare, prepare_many
from ..errors import DivergentError
from ._select import accuracies, as_store, fraction, in_band, resolve_models, temperatures

RULES = ("mean-probs", "mean-logits", "weighted")


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise DivergentError(f"unknown ensemble rule {rule!r}", f"use one of {', '.join(RULES)}")


def _frac(x):
    return None if x is None else fraction(x)


def _candidates(store, base, pool, split, fit_on, acc_max, acc_band, replacement, lower_only=False):
    """Pool models with scores on both splits, filtered by accuracy on the evaluated split."""
    names = resolve_models(store, pool, split=split, need="scores")
    names = [m for m in names if store.has_scores(m, fit_on)]
    if base not in store.models:
        resolve_models(store, [base])  # raises with suggestions
    for s in (split, fit_on):
        if not store.has_scores(base, s):
            raise DivergentError(f"base {base!r} has no logits/probabilities on split {s!r}",
                                 "extract or import them for that split")
    others = [m for m in names if m != base]
    acc = accuracies(store, sorted(set(others) | {base}), split)
    keep = in_band({m: acc[m] for m in others}, acc_band)
    amax = _frac(acc_max)
    if amax is not None:
        keep = [m for m in keep if acc[m] <= amax]
    if lower_only:
        keep = [m for m in keep if acc[m] < acc[base]]
    if replacement:
        keep = [base] + keep
    if not keep:
        raise DivergentError("no candidate models are left after the pool and accuracy filters",
                             "widen --pool, --acc-max or --acc-band")
    return keep, acc


def _sources(store, models, split, temps) -> list[ModelSource]:
    out = []
    for m in models:
        kind, arr = store.scores(m, split)
        out.append(ModelSource(arr, temps[m], kind, m))
    return out


def _category(store, base, other) -> str:
    try:
        return category(store.card(base), store.card(other))
    except DivergentError:
        return "unknown"


def _fit_simplex_weights(plabels: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """Weights w >= 0, sum 1 minimising -mean log(sum_m w_m p_m[y]) (plabels: (N, M))."""
    from scipy.optimize import minimize

    m = plabels.shape[1]
    if m == 1:
        return np.ones(1)
    x0 = np.log(init) if init is not None else np.zeros(m)

    def f(v):
        w = np.exp(v - v.max())
        w /= w.sum()
        q = np.maximum(plabels @ w, 1e-300)
        val = -np.mean(np.log(q))
        g_w = -np.mean(plabels / q[:, None], axis=0)
        return val, w * (g_w - np.dot(w, g_w))

    res = minimize(f, x0, jac=True, method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def _weighted_accuracy(sources: list[ModelSource], w: np.ndarray, labels: np.ndarray, block: int = 2048) -> float:
    hits = 0
    n = sources[0].n
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        acc = None
        for src, wi in zip(sources, w):
            p = src.probs(slice(r0, r1)) * wi
            acc = p if acc is None else acc + p
        hits += int(np.sum(np.argmax(acc, axis=1) == labels[r0:r1]))
    return hits / n


def _label_probs(src: ModelSource, labels: np.ndarray, block: int = 2048) -> np.ndarray:
    out = np.empty(src.n)
    for r0, r1, p, _, _ in src.blocks(block):
        out[r0:r1] = p[np.arange(r1 - r0), labels[r0:r1]]
    return out


def _greedy_mean_logits(fit_src, eval_src, yf, ye, base, pool, max_size, replacement):
    """Naive greedy selection for the mean of scaled logits (full rows; small stores)."""
    from ..engine.rows import scaled_logits

    def z(src):
        return scaled_logits(np.asarray(src.scores), src.kind, src.temperature)

    def score(S, n, y):
        q = S / np.float64(n)
        acc = int(np.sum(np.argmax(q, axis=1) == y))
        q = q - q.max(axis=1, keepdims=True)
        lse = np.log(np.exp(q).sum(axis=1))
        return acc, float(np.mean(lse - q[np.arange(len(y)), y]))

    names = [s.name for s in fit_src]
    S, Se = z(fit_src[base]), z(eval_src[base])
    acc, nll = score(S, 1, yf)
    steps = [(base, acc / len(yf), nll, score(Se, 1, ye)[0] / len(ye))]
    chosen = {base}
    for size in range(2, max_size + 1):
        cands = pool if replacement else [j for j in pool if j not in chosen]
        if not cands:
            break
        scored = []
        for j in cands:
            a, l = score(S + z(fit_src[j]), size, yf)
            scored.append((-a, l, names[j], j))
        _, _, _, j = min(scored)
        S += z(fit_src[j])
        Se += z(eval_src[j])
        a, l = score(S, size, yf)
        steps.append((j, a / len(yf), l, score(Se, size, ye)[0] / len(ye)))
        chosen.add(j)
    return steps


def greedy_ensemble(store, base: str, pool=None, fit_on: str = HOLDOUT, split: str = TEST, max_size: int = 10,
                    replacement: bool = False, acc_max=None, acc_band=None, rule: str = "mean-probs",
                    allow_fit_on_eval: bool = False, calibrated: bool = True, k: int = 6, workers: int = 2,
                    progress: bool = False) -> pd.DataFrame:
    """Greedy forward selection (Caruana et al. 2004) from `base` over `pool`, selected on `fit_on`.

    One row per size: step (1 = the base alone), member added, its category relative to the base,
    fit_acc / fit_nll on `fit_on`, eval_acc on `split`, and `best` (the size with the highest
    fit-split accuracy, ties to the smaller ensemble). Ties between candidates go to the lower
    fit-split NLL, then to the smaller model name. acc_max / acc_band filter the pool by accuracy
    on the evaluated split (the paper's "lower-accuracy models", Fig. 5).
    """
    _check_rule(rule)
    check_fit_split(fit_on, split, allow_fit_on_eval)
    store = as_store(store)
    cands, acc = _candidates(store, base, pool, split, fit_on, acc_max, acc_band, replacement)
    models = [base] + [m for m in cands if m != base]
    temps = temperatures(store, models, calibrated=calibrated, split=split)
    yf, ye = store.split(fit_on).labels, store.split(split).labels
    fit_src, eval_src = _sources(store, models, fit_on, temps), _sources(store, models, split, temps)
    pool_idx = [models.index(m) for m in cands]
    if rule == "mean-logits":
        raw = _greedy_mean_logits(fit_src, eval_src, yf, ye, 0, pool_idx, max_size, replacement)
        rows = [dict(member=models[j], fit_acc=a, fit_nll=l, eval_acc=e) for j, a, l, e in raw]
    else:
        prepared = prepare_many(fit_src, yf, k=k, workers=workers, progress=progress)
        steps = greedy_select(prepared, 0, pool=pool_idx, max_size=max_size, replacement=replacement,
                              eval_sources=eval_src, eval_labels=ye, workers=workers, progress=progress)
        rows = [dict(member=s.name, fit_acc=s.fit_acc, fit_nll=s.fit_nll, eval_acc=s.eval_acc) for s in steps]
        if rule == "weighted":
            idx = [s.member for s in steps]
            pl_f = {j: prepared[j].plabel for j in set(idx)}
            for t, r in enumerate(rows):
                members = idx[: t + 1]
                uniq = sorted(set(members), key=members.index)
                init = np.array([members.count(j) for j in uniq], dtype=np.float64)
                w = _fit_simplex_weights(np.stack([pl_f[j] for j in uniq], axis=1), init / init.sum())
                q = np.stack([pl_f[j] for j in uniq], axis=1) @ w
                r["fit_nll"] = float(-np.mean(np.log(np.maximum(q, 1e-300))))
                r["fit_acc"] = _weighted_accuracy([fit_src[j] for j in uniq], w, yf)
                r["eval_acc"] = _weighted_accuracy([eval_src[j] for j in uniq], w, ye)
                r["weights"] = {models[j]: float(wi) for j, wi in zip(uniq, w)}
    df = pd.DataFrame(rows)
    df.insert(0, "step", np.arange(1, len(df) + 1))
    df.insert(2, "category", ["base"] + [_category(store, base, m) for m in df["member"].iloc[1:]])
    df.insert(3, "member_acc", [acc.get(m, np.nan) for m in df["member"]])
    best_fit = df["fit_acc"].max()
    df["best"] = df["step"] == df.loc[df["fit_acc"] == best_fit, "step"].min()
    df["base"] = base
    df["rule"] = rule
    df["fit_on"] = fit_on
    df["split"] = split
    return df


def base_plus_one(store, base: str, pool=None, fit_on: str = HOLDOUT, split: str = TEST, acc_max=None,
                  acc_band=None, lower_only: bool = True, rule: str = "mean-probs", allow_fit_on_eval: bool = False,
                  calibrated: bool = True, n_boot: int = N_BOOT, seed: int = 0, k: int = 6) -> pd.DataFrame:
    """Experiment 1 of Section 4.5: the base ensembled with each (lower-accuracy) candidate alone.

    One row per candidate: member, category, base_acc, member_acc, ensemble_acc on `split` with a
    95% paired bootstrap interval (mean-probs), gain_vs_base. `lower_only` keeps candidates whose
    accuracy on `split` is below the base's. For rule="weighted" the two weights are fitted on `fit_on`.
    """
    from ..metrics.bootstrap import count_bootstrap
    from ..metrics.pairs import metrics_from_counts

    _check_rule(rule)
    check_fit_split(fit_on, split, allow_fit_on_eval)
    store = as_store(store)
    cands, acc = _candidates(store, base, pool, split, fit_on, acc_max, acc_band, False, lower_only=lower_only)
    models = [base] + cands
    temps = temperatures(store, models, calibrated=calibrated, split=split)
    y = store.split(split).labels
    src = _sources(store, models, split, temps)
    rows = []
    if rule == "mean-probs":
        pb = prepare(src[0], y, k=k)
        counts = []
        for j, m in enumerate(cands, start=1):
            codes, _, _ = pair_codes(pb, prepare(src[j], y, k=k))
            counts.append(np.bincount(codes, minlength=16))
        counts = np.array(counts)
        point = metrics_from_counts(counts)
        ci = count_bootstrap(counts, metrics_from_counts, n_boot=n_boot, seed=seed)
        for t, m in enumerate(cands):
            rows.append(dict(member=m, ensemble_acc=float(point["ensemble_acc"][t]),
                             ci_low=float(ci["ensemble_acc"][0][t]), ci_high=float(ci["ensemble_acc"][1][t]),
                             error_inconsistency=float(point["error_inconsistency"][t])))
    else:
        from ..engine.rows import scaled_logits

        fsrc = _sources(store, models, fit_on, temps) if rule == "weighted" else None
        yf = store.split(fit_on).labels
        for j, m in enumerate(cands, start=1):
            if rule == "mean-logits":
                zsum = scaled_logits(np.asarray(src[0].scores), src[0].kind, src[0].temperature)
                zsum += scaled_logits(np.asarray(src[j].scores), src[j].kind, src[j].temperature)
                ens = float(np.mean(np.argmax(zsum / 2.0, axis=1) == y))
                rows.append(dict(member=m, ensemble_acc=ens))
            else:
                pl = np.stack([_label_probs(fsrc[0], yf), _label_probs(fsrc[j], yf)], axis=1)
                w = _fit_simplex_weights(pl, np.array([0.5, 0.5]))
                rows.append(dict(member=m, ensemble_acc=_weighted_accuracy([src[0], src[j]], w, y),
                                 weight_base=float(w[0])))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df.insert(1, "category", [_category(store, base, m) for m in df["member"]])
    df.insert(2, "base_acc", acc[base])
    df.insert(3, "member_acc", [acc[m] for m in df["member"]])
    df["gain_vs_base"] = df["ensemble_acc"] - df["base_acc"]
    df["base"] = base
    df["rule"] = rule
    df["split"] = split
    return df.sort_values(["ensemble_acc", "member"], ascending=[False, True], ignore_index=True)


# ---- the study's greedy run (Fig. 5) and representatives ----------------------------------------

def representatives(pairs: pd.DataFrame, base: str, acc: dict, models: list[str] | None = None) -> dict[str, str]:
    """One model per category: the one whose test accuracy is closest to the base's (ties: by name)."""
    bp = pairs[pairs["model_a"] == base]
    if models is not None:
        bp = bp[bp["model_b"].isin(models)]
    reps = {}
    for cat in CATEGORY_ORDER:
        sub = bp[bp["category"] == cat]
        if cat == "identical" or not len(sub):
            continue
        key = sorted(sub["model_b"], key=lambda m: (abs(acc[m] - acc[base]), m))
        reps[cat] = key[0]
    return reps


def lower_pool(store, base: str, models: list[str]) -> list[str]:
    """Models strictly less accurate than the base on the holdout (selection never looks at test)."""
    acc = accuracies(store, sorted({base, *models}), HOLDOUT)
    return sorted(m for m in models if m != base and acc[m] < acc[base])


def run_greedy(store, base: str, pool: list[str], max_size: int, cats: dict) -> tuple[pd.DataFrame, list[str]]:
    """:func:`greedy_ensemble` (the engine's certified-exact greedy_select) from `base` over `pool`:
    selected on the holdout, reported on test; ties by holdout NLL, then name. Returns the table
    (base, size, added, category from `cats`, holdout_acc, test_acc, selected) and the members of
    the selected size."""
    if not pool:  # the base alone
        accs = [accuracies(store, [base], s)[base] for s in (HOLDOUT, TEST)]
        return pd.DataFrame([dict(base=base, size=1, added=base, category="base", holdout_acc=accs[0],
                                  test_acc=accs[1], selected=True)]), [base]
    g = greedy_ensemble(store, base, pool=pool, fit_on=HOLDOUT, split=TEST, max_size=max_size, workers=1)
    df = pd.DataFrame({"base": base, "size": g["step"].astype(int), "added": g["member"],
                       "category": ["base"] + [cats.get(m, c) for m, c in zip(g["member"].iloc[1:], g["category"].iloc[1:])],
                       "holdout_acc": g["fit_acc"].astype(float), "test_acc": g["eval_acc"].astype(float),
                       "selected": g["best"].astype(bool)})
    best = int(df.loc[df["selected"], "size"].iloc[0])
    return df, list(df["added"].iloc[:best])


def lower_accuracy_greedy(store, base: str, models: list[str], *, max_size: int, cats: dict
                          ) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The greedy run of `base` with those of `models` that have scores on the holdout and are less
    accurate than the base there (claim 4, Fig. 5): (table, selected members, pool)."""
    store = as_store(store)
    pool = lower_pool(store, base, [m for m in models if store.has_scores(m, HOLDOUT)])
    df, members = run_greedy(store, base, pool, max_size, cats)
    return df, members, pool


def members_correct(store, members: list[str], split: str) -> np.ndarray:
    """Per-example correctness of the mean of the members' calibrated probabilities on `split`."""
    from ..metrics.probs import ensemble_probs
    from .specialization import calibrated_probs

    store = as_store(store)
    q = ensemble_probs([calibrated_probs(store, m, split) for m in members])
    return q.argmax(1) == np.asarray(store.split(split).labels)
