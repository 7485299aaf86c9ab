"""Unit functions of the analysis stages: specialization (angles), greedy ensembles, feature
combination, downstream transfer, findings, and the report. Each writes tables under ctx.work."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..cards import CATEGORY_ORDER
from ..conventions import HOLDOUT, TEST, TRAIN
from ..errors import DivergentError
from ..metrics.probs import log_probs_from_probs, reference_probs
from .stages import call_with


# ---------------------------------------------------------------- helpers on the store

def probs_of(store, model: str, split: str) -> np.ndarray:
    """Calibrated float64 probabilities by the reference arithmetic."""
    t = store.temperature(model) or 1.0
    if store.has(model, split, "logits"):
        return reference_probs(np.asarray(store.array(model, split, "logits")), t)
    if store.has(model, split, "probs"):
        return reference_probs(log_probs_from_probs(np.asarray(store.array(model, split, "probs"))), t)
    raise DivergentError(f"{model!r} has no logits or probabilities on {split!r}")


def load_pairs(ctx) -> tuple[pd.DataFrame, str, dict]:
    d = ctx.dep("pairs")
    return pd.read_parquet(d["pairs"]), d["base"], d["accuracy"]


def band_of(cfg: dict, base_acc: float) -> tuple[float, float]:
    a = cfg["analysis"]
    if a["acc_band"] == "auto":
        h = a["band_halfwidth"]
        return (max(0.0, base_acc - h), min(1.0, base_acc + h))
    return tuple(a["acc_band"])


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


# ---------------------------------------------------------------- angles and specialization (Figs. 3-4)

def _sep(phi, oc) -> float:
    a, b = phi[oc == "only_a"], phi[oc == "only_b"]
    return float(a.mean() - b.mean()) if a.size and b.size else float("nan")


def angles_unit(ctx, *, split: str, groups, n_boot: int, seed: int) -> dict:
    from ..analyses.specialization import specialization
    from ..store import Store

    store = Store.open(ctx.store)
    pairs, base, acc = load_pairs(ctx)
    reps = representatives(pairs, base, acc)
    ang, cls, grp = [], [], []
    rng = np.random.default_rng(seed)
    for cat, m in reps.items():
        res = call_with(specialization, store, base, m, split, groups=None if groups == "none" else groups,
                        n_boot=0, seed=seed)
        ex = res.examples
        phi = ex["phi_deg"].to_numpy(float)
        oc = ex["outcome"].astype(str).to_numpy()
        ang.append(pd.DataFrame({"model_b": m, "category": cat, "phi": phi, "outcome": oc,
                                 "class_name": ex["class_name"].astype(str).to_numpy()}))
        pc = res.per_class
        groups_of = dict(zip(pc["class_name"], pc["group"].fillna("all")))
        cls.append(pd.DataFrame({"model_b": m, "category": cat, "class_name": pc["class_name"],
                                 "group": pc["class_name"].map(groups_of),
                                 "specialization": pc["mean_phi_only_a"] - pc["mean_phi_only_b"],
                                 "n_only_a": pc["n_only_a"], "n_only_b": pc["n_only_b"]}))
        g_ex = ex["class_name"].map(groups_of).to_numpy()
        for g in sorted(set(groups_of.values())):
            sel = g_ex == g
            p, o = phi[sel], oc[sel]
            est = _sep(p, o)
            reps_b = []
            for _ in range(min(n_boot, 1000)):
                i = rng.integers(0, p.size, p.size)
                reps_b.append(_sep(p[i], o[i]))
            r = np.asarray(reps_b, float)
            r = r[np.isfinite(r)]
            lo, hi = (np.quantile(r, [0.025, 0.975]) if r.size >= 10 else (np.nan, np.nan))
            grp.append(dict(model_b=m, category=cat, group=g, specialization=est, specialization_lo=float(lo),
                            specialization_hi=float(hi), n_only_a=int((o == "only_a").sum()),
                            n_only_b=int((o == "only_b").sum())))
    out = {}
    for name, df in (("angles", pd.concat(ang, ignore_index=True) if ang else None),
                     ("class_specialization", pd.concat(cls, ignore_index=True) if cls else None),
                     ("group_specialization", pd.DataFrame(grp) if grp else None)):
        if df is not None:
            p = Path(ctx.work) / f"{name}.parquet"
            df.to_parquet(p, index=False)
            out[name] = str(p)
    out["representatives"] = reps
    return out


# ---------------------------------------------------------------- greedy ensembles (Fig. 5)

def greedy_exact(P_fit: dict, y_fit: np.ndarray, P_eval: dict, y_eval: np.ndarray, base: str,
                 pool: list[str], max_size: int) -> list[dict]:
    """Greedy forward selection without replacement, exact by the reference arithmetic (mean of
    calibrated probabilities in member order). Ties in fit accuracy go to the lower fit NLL,
    then the smaller name."""
    S, E = P_fit[base].copy(), P_eval[base].copy()
    members = [base]
    rows = [dict(size=1, added=base, holdout_acc=float((S.argmax(1) == y_fit).mean()),
                 test_acc=float((E.argmax(1) == y_eval).mean()))]
    left = sorted(set(pool) - {base})
    while left and len(members) < max_size:
        best = None
        n = len(members) + 1
        for m in left:
            q = (S + P_fit[m]) / n
            acc = float((q.argmax(1) == y_fit).mean())
            with np.errstate(divide="ignore"):
                nll = float(-np.mean(np.log(q[np.arange(len(y_fit)), y_fit])))
            k = (-acc, nll, m)
            if best is None or k < best[0]:
                best = (k, m)
        m = best[1]
        S += P_fit[m]
        E += P_eval[m]
        members.append(m)
        left.remove(m)
        rows.append(dict(size=n, added=m, holdout_acc=-best[0][0], test_acc=float(((E / n).argmax(1) == y_eval).mean())))
    return rows


def greedy_members_correct(store, members: list[str], split: str) -> np.ndarray:
    S = None
    for m in members:
        p = probs_of(store, m, split)
        S = p.copy() if S is None else S + p
    return (S / len(members)).argmax(1) == np.asarray(store.split(split).labels)


def run_greedy(store, base: str, pool: list[str], max_size: int, cats: dict) -> tuple[pd.DataFrame, list[str]]:
    """divergent.analyses.ensembles.greedy_ensemble (the engine's certified-exact path) when present,
    else greedy_exact on full probability rows; both follow the same selection rule."""
    try:
        from ..analyses.ensembles import greedy_ensemble
    except ImportError:
        greedy_ensemble = None
    if greedy_ensemble is not None and pool:
        g = call_with(greedy_ensemble, store, base, pool=pool, fit_on=HOLDOUT, split=TEST, max_size=max_size,
                      workers=1, progress=False)
        df = pd.DataFrame({"base": base, "size": g["step"].astype(int), "added": g["member"],
                           "category": ["base"] + [cats.get(m, c) for m, c in zip(g["member"].iloc[1:], g["category"].iloc[1:])],
                           "holdout_acc": g["fit_acc"].astype(float), "test_acc": g["eval_acc"].astype(float),
                           "selected": g["best"].astype(bool)})
        best = int(df.loc[df["selected"], "size"].iloc[0])
        return df, list(df["added"].iloc[:best])
    y_fit = np.asarray(store.split(HOLDOUT).labels)
    y_ev = np.asarray(store.split(TEST).labels)
    names = [base, *pool]
    P_fit = {m: probs_of(store, m, HOLDOUT) for m in names}
    P_ev = {m: probs_of(store, m, TEST) for m in names}
    rows = greedy_exact(P_fit, y_fit, P_ev, y_ev, base, pool, max_size)
    df = pd.DataFrame(rows)
    df.insert(0, "base", base)
    df["category"] = [("base" if r["added"] == base else cats.get(r["added"], "unknown")) for r in rows]
    best = int(df.loc[df["holdout_acc"].idxmax(), "size"])  # first maximum: the smallest best size
    df["selected"] = df["size"] == best
    return df, list(df["added"].iloc[:best])


def lower_pool(store, base: str, models: list[str]) -> list[str]:
    """Models strictly less accurate than the base on the holdout (selection never looks at test)."""
    y = np.asarray(store.split(HOLDOUT).labels)
    acc = {m: float((probs_of(store, m, HOLDOUT).argmax(1) == y).mean()) for m in [base, *models]}
    return sorted(m for m in models if m != base and acc[m] < acc[base])


def greedy_unit(ctx, *, high_accuracy: str, max_size: int) -> dict:
    from ..store import Store

    store = Store.open(ctx.store)
    pairs, base, acc = load_pairs(ctx)
    hb = high_accuracy or base
    prob_models = [m for m in acc if store.has(m, HOLDOUT, "logits") or store.has(m, HOLDOUT, "probs")]
    cats = dict(zip(pairs["model_b"], pairs["category"]))
    pool = lower_pool(store, hb, prob_models)
    df, members = run_greedy(store, hb, pool, max_size, cats)
    p = Path(ctx.work) / "greedy.parquet"
    df.to_parquet(p, index=False)
    return {"greedy": str(p), "members": members, "pool": pool}


# ---------------------------------------------------------------- feature combination (Fig. 6)

def _norm(x):
    from ..probes.lbfgs import l2_normalize

    return l2_normalize(np.asarray(x, dtype=np.float32))


def _probe(Xtr, ytr, Xho, yho, Xte, yte, grid, K):
    from ..probes.lbfgs import sweep_probe

    sw = sweep_probe(Xtr, ytr, Xho, yho, grid, n_classes=K, normalize=False, warn=False)
    f = sw.best
    return float((f.predict(Xho) == yho).mean()), f.predict(Xte) == yte


def features_unit(ctx, *, category: str, fractions: list, seeds: list, dims_steps: list, grid: list) -> dict:
    """Random-subset combination at a fixed budget and the diversity-ranked dims curve for the base
    and the representative of one category; also the best single and best combined probes."""
    from ..store import Store

    store = Store.open(ctx.store)
    pairs, base, acc = load_pairs(ctx)
    reps = representatives(pairs, base, acc)
    if category not in reps:
        return {"skipped": f"no {category} model in the zoo"}
    other = reps[category]
    for m in (base, other):
        for s in (TRAIN, HOLDOUT, TEST):
            if not store.has(m, s, "features"):
                return {"skipped": f"{m!r} has no embeddings on {s!r}"}
    y = {s: np.asarray(store.split(s).labels) for s in (TRAIN, HOLDOUT, TEST)}
    K = len(store.split(TEST).class_names)
    A = {s: _norm(store.array(base, s, "features")) for s in y}
    B = {s: _norm(store.array(other, s, "features")) for s in y}
    D = min(A[TEST].shape[1], B[TEST].shape[1])
    rows = []
    cands = {}  # name -> (holdout acc, test correctness)
    for name, X in (("base", A), ("other", B), ("concat", {s: np.hstack([A[s], B[s]]) for s in y})):
        ho, te = _probe(X[TRAIN], y[TRAIN], X[HOLDOUT], y[HOLDOUT], X[TEST], y[TEST], grid, K)
        cands[name] = (ho, te)
    for p in fractions:
        for seed in seeds:
            rng = np.random.default_rng([int(seed), int(round(1000 * p))])
            ka = int(round(p * D))
            ia = np.sort(rng.choice(A[TEST].shape[1], ka, replace=False))
            ib = np.sort(rng.choice(B[TEST].shape[1], D - ka, replace=False))
            X = {s: np.hstack([A[s][:, ia], B[s][:, ib]]) for s in y}
            ho, te = _probe(X[TRAIN], y[TRAIN], X[HOLDOUT], y[HOLDOUT], X[TEST], y[TEST], grid, K)
            rows.append(dict(model_a=base, model_b=other, category=category, fraction_a=float(p), seed=int(seed),
                             n_dims=D, holdout_accuracy=ho, accuracy=float(te.mean())))
            if 0 < p < 1:
                cands[f"mix{p:.2f}s{seed}"] = (ho, te)
    # diversity-ranked: per-dimension variance of the L2-normalised concatenation, highest first (train split)
    C = {s: np.hstack([A[s], B[s]]) for s in y}
    order = np.argsort(-C[TRAIN].var(axis=0), kind="stable")
    drows = []
    for n in sorted({int(v) for v in dims_steps if int(v) <= C[TEST].shape[1]} | {C[TEST].shape[1]}):
        sel = order[:n]
        ho, te = _probe(C[TRAIN][:, sel], y[TRAIN], C[HOLDOUT][:, sel], y[HOLDOUT], C[TEST][:, sel], y[TEST], grid, K)
        drows.append(dict(model_a=base, model_b=other, category=category, n_dims=n, holdout_accuracy=ho,
                          accuracy=float(te.mean())))
    single = max((k for k in ("base", "other")), key=lambda k: (cands[k][0], k))
    combined = max((k for k in cands if k not in ("base", "other")), key=lambda k: (cands[k][0], k))
    w = Path(ctx.work)
    pd.DataFrame(rows).to_parquet(w / "feature_combination.parquet", index=False)
    pd.DataFrame(drows).to_parquet(w / "dims_curve.parquet", index=False)
    np.savez(w / "best.npz", single=cands[single][1], combined=cands[combined][1])
    return {"feature_combination": str(w / "feature_combination.parquet"), "dims_curve": str(w / "dims_curve.parquet"),
            "best": str(w / "best.npz"), "model_b": other, "category": category,
            "single": base if single == "base" else other, "single_holdout": cands[single][0],
            "combined": f"{base}+{other} ({combined})", "combined_holdout": cands[combined][0]}


# ---------------------------------------------------------------- downstream transfer (Fig. 7)

def _downstream_embeddings(ctx, model: str, task: str, split: str, kind: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a study model on a downstream split (trained zoo model or frozen backbone)."""
    from ..data import open_dataset

    ds = open_dataset(task, split)
    if kind["kind"] == "recipe":
        from PIL import Image

        from ..train import load_trained, predict

        trained = load_trained(ctx.deps[f"train:{model}"]["dir"])
        size = 28 if trained.recipe.dataset.startswith("fashion") else 32
        imgs = []
        for i in range(len(ds)):
            im = ds.image(i).convert("L" if size == 28 else "RGB").resize((size, size), Image.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.uint8))
        _, f = call_with(predict, trained, np.stack(imgs), device=ctx.device)
    else:
        from ..extract import extract
        from ..store import Store

        priv = Path(ctx.work) / f"store-{task}"
        res = call_with(extract, priv, kind["spec"], ds, split, head="features", device=ctx.device, progress=False,
                        workers=0, input_size=kind.get("input_size") or None)
        name = res.get("model", model) if isinstance(res, dict) else model
        f = np.asarray(Store.open(priv).array(name, split, "features"))
    return f, np.asarray(ds.labels)


def transfer_unit(ctx, *, tasks: list, grid: list, kinds: dict) -> dict:
    """Linear evaluation of single and pairwise-stacked embeddings of the base and one model per
    category on downstream tasks never seen upstream; best single vs best stacked for claim 5."""
    pairs, base, acc = load_pairs(ctx)
    reps = representatives(pairs, base, acc)
    models = [base, *[m for m in reps.values() if m != base]]
    models = [m for m in models if m in kinds]
    rows, best = [], {}
    for task in tasks:
        E = {}
        for m in models:
            try:
                E[m] = {s: _downstream_embeddings(ctx, m, task, s, kinds[m], 0) for s in (TRAIN, HOLDOUT, TEST)}
            except Exception as exc:  # noqa: BLE001 - record a failing model and carry on
                rows.append(dict(embedding=m, kind="single", task=task, metric="accuracy", score=np.nan,
                                 error=f"{type(exc).__name__}: {exc}"))
        if not E:
            continue
        y = {s: next(iter(E.values()))[s][1] for s in (TRAIN, HOLDOUT, TEST)}
        K = int(max(y[TRAIN].max(), y[TEST].max())) + 1
        combos = [(m,) for m in E] + [(a, b) for i, a in enumerate(E) for b in list(E)[i + 1:]]
        for combo in combos:
            X = {s: np.hstack([_norm(E[m][s][0]) for m in combo]) for s in y}
            ho, te = _probe(X[TRAIN], y[TRAIN], X[HOLDOUT], y[HOLDOUT], X[TEST], y[TEST], grid, K)
            kind = "single" if len(combo) == 1 else "stacked"
            rows.append(dict(embedding="+".join(combo), kind=kind, task=task, metric="accuracy",
                             score=float(te.mean()), holdout_score=ho, upstream_acc=float(np.mean([acc[m] for m in combo]))))
            k = (task, kind)
            if k not in best or ho > best[k][0]:
                best[k] = (ho, te, "+".join(combo))
    w = Path(ctx.work)
    df = pd.DataFrame(rows)
    df.to_parquet(w / "transfer.parquet", index=False)
    out = {"transfer": str(w / "transfer.parquet")}
    if tasks and (tasks[0], "single") in best and (tasks[0], "stacked") in best:
        s, c = best[(tasks[0], "single")], best[(tasks[0], "stacked")]
        np.savez(w / "best.npz", single=s[1], combined=c[1])
        out.update(best=str(w / "best.npz"), single=s[2], combined=c[2], task=tasks[0])
    return out


# ---------------------------------------------------------------- findings and report

def evidence_for(store, pairs: pd.DataFrame, base: str, models: list[str], split: str, greedy_members: list[str] | None,
                 features: list[dict], transfer: dict | None):
    from ..analyses.pairs import pair_outcome_codes
    from ..analyses.specialization import top1
    from ..report.findings import Evidence

    ev = Evidence()
    bp = pairs[(pairs["model_a"] == base) & pairs["model_b"].isin(models)]
    bp = bp[np.isfinite(bp["ensemble_acc"].astype(float))]
    plist = [(base, m) for m in bp["model_b"]]
    if plist:
        oc = pair_outcome_codes(store, plist, split=split, calibrated=True)
        for (a, m), df in oc.items():
            ev.correct_base = df["a_correct"].to_numpy()
            ev.correct[m] = df["b_correct"].to_numpy()
            ev.ens_correct[m] = df["ensemble_correct"].to_numpy()
        ev.category = dict(zip(bp["model_b"], bp["category"]))
    acc = dict(zip(bp["model_b"], bp["acc_b"]))
    acc[base] = float(bp["acc_a"].iloc[0]) if len(bp) else np.nan
    reps = representatives(pairs, base, acc, models=list(bp["model_b"]))
    labels = np.asarray(store.split(split).labels)
    if reps:
        pa, ca = top1(store, base, split, calibrated=True)
        for cat, m in reps.items():
            pb, cb = top1(store, m, split, calibrated=True)
            phi = np.degrees(np.arctan2(ca, cb))
            a_ok, b_ok = pa == labels, pb == labels
            ev.phi[cat] = phi
            ev.outcome[cat] = np.where(a_ok & ~b_ok, "only_a", np.where(b_ok & ~a_ok, "only_b",
                                                                         np.where(a_ok, "both", "neither")))
            ev.rep_model[cat] = m
    if greedy_members is not None and len(greedy_members) > 1:
        ev.greedy_correct = greedy_members_correct(store, greedy_members, split)
        ev.greedy_members = greedy_members[1:]
        if ev.correct_base is None:
            ev.correct_base = labels == probs_of(store, base, split).argmax(1)
    elif greedy_members is not None:
        ev.greedy_correct = ev.correct_base
        ev.greedy_members = []
    cands = [f for f in features if "best" in f]
    if transfer and "best" in transfer:
        cands.append({**transfer, "single_holdout": 0, "combined_holdout": 0, "_transfer": True})
    if cands:
        # prefer the downstream (stacked transfer) result; else the best feature combination by holdout
        pick = next((c for c in cands if c.get("_transfer")), None) or max(cands, key=lambda c: c["combined_holdout"])
        z = np.load(pick["best"])
        ev.single_correct, ev.combined_correct = z["single"], z["combined"]
        ev.single_name, ev.combined_name = pick["single"], pick["combined"]
    return ev


def findings_unit(ctx, *, split: str, n_boot: int, seed: int, max_size: int, high_accuracy: str) -> dict:
    from ..report.findings import findings_table
    from ..store import Store

    store = Store.open(ctx.store)
    pairs, base, acc = load_pairs(ctx)
    band = band_of(ctx.config, acc[base])
    all_models = [m for m in acc if m != base]
    in_band = [m for m in all_models if band[0] <= acc[m] <= band[1]]
    features = [v for k, v in ctx.deps.items() if k.startswith("features:")]
    transfer = next((v for k, v in ctx.deps.items() if k.startswith("transfer")), None)
    g = ctx.dep("greedy")
    cats = dict(zip(pairs["model_b"], pairs["category"]))
    hb = high_accuracy or base
    prob_models = [m for m in in_band if store.has(m, HOLDOUT, "logits") or store.has(m, HOLDOUT, "probs")]
    _, band_members = run_greedy(store, hb, lower_pool(store, hb, prob_models), max_size, cats)
    ev = {"all": evidence_for(store, pairs, base, all_models, split, g["members"], features, transfer),
          "band": evidence_for(store, pairs, base, in_band, split, band_members, features, transfer)}
    f = findings_table(ev, n_boot=n_boot, seed=seed)
    p = Path(ctx.work) / "findings.parquet"
    f.to_parquet(p, index=False)
    return {"findings": str(p), "acc_band": list(band), "n_in_band": len(in_band)}


def _read(d: dict | None, key: str):
    return pd.read_parquet(d[key]) if d and d.get(key) else None


def _method(row) -> str:
    obj = {"supervised": "Sup.", "contrastive": "Cont.", "distillation": "Distill.", "autoencoder": "AE",
           "masked-image": "Masked", "pseudo-label": "Pseudo-label"}.get(row["objective"], row["objective"])
    return f"{obj} / {row['train_data']}"


def report_unit(ctx, *, title: str = "") -> dict:
    from ..report import ReportTables, build_report

    pairs, base, acc = load_pairs(ctx)
    mt = pd.read_parquet(ctx.dep("pairs")["model_table"])
    models = pd.DataFrame({"model": mt["model"], "method": mt.apply(_method, axis=1), "head": mt["head"],
                           "temperature": mt["temperature"].astype(float), "accuracy": mt["accuracy"].astype(float),
                           "category": ["base" if m == base else c for m, c in zip(mt["model"], mt["category"])],
                           "family": mt["family"], "objective": mt["objective"], "train_data": mt["train_data"]})
    ang = ctx.deps.get("angles")
    feats = [v for k, v in ctx.deps.items() if k.startswith("features:") and "feature_combination" in v]
    tr = next((v for k, v in ctx.deps.items() if k.startswith("transfer")), None)
    fnd = ctx.dep("findings")
    missing = {}
    if not feats:
        missing["features"] = "feature analyses were disabled or no model had embeddings"
    if tr is None or not tr.get("transfer"):
        missing["transfer"] = "no downstream task configured (analysis.transfer = [])"
    cfg = ctx.config
    t = ReportTables(
        models=models, pairs=pairs, findings=_read(fnd, "findings"),
        angles=_read(ang, "angles"), class_specialization=_read(ang, "class_specialization"),
        group_specialization=_read(ang, "group_specialization"), greedy=_read(ctx.deps.get("greedy"), "greedy"),
        feature_combination=pd.concat([pd.read_parquet(f["feature_combination"]) for f in feats], ignore_index=True) if feats else None,
        dims_curve=pd.concat([pd.read_parquet(f["dims_curve"]) for f in feats], ignore_index=True) if feats else None,
        transfer=_read(tr, "transfer"), base=base, missing=missing,
        meta={"acc_band": tuple(fnd["acc_band"]), "dataset": cfg["data"]["dataset"], "study": cfg["study"]["name"],
              "split": cfg["data"]["split"], "fit_on": cfg["data"]["fit_on"]},
    )
    if t.transfer is not None and "score" in t.transfer:
        t.transfer = t.transfer[np.isfinite(t.transfer["score"].astype(float))].reset_index(drop=True)
    target = cfg["analysis"]["dims_target"]
    path = build_report(t, ctx.out, title=title or None, target=None if target == "auto" else float(target))
    return {"report": str(path)}
