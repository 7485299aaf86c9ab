"""Specialization of a model pair read from a store (Sections 4.3-4.4, Figures 3-4), as DataFrames.

``specialization(store, a, b)`` loads both models' calibrated probabilities on one split (the
core's reference arithmetic), computes every example's confidence angle phi, and returns tidy
tables: per-example angles, histograms of phi by outcome, a summary of how far the only-A and
only-B groups separate (bootstrap intervals), per-class margins, and class-group tests.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..conventions import CI_LEVEL, N_BOOT, TEST
from ..errors import DivergentError, unknown
from ..metrics import specialization as sm
from . import class_groups as cg
from ._select import BLOCK, NamedTables, as_store, reference_prob_blocks, temperatures

#: per-class statistics the group test can compare
GROUP_STATS = ("lean_deg", "a_margin_deg", "b_margin_deg", "specialization_deg")


# ---- store access -----------------------------------------------------------------------------

def check_split(store, split: str):
    """The split's data; refuses unknown and multi-label splits (top-1 correctness is undefined)."""
    if split not in store.splits:
        raise unknown("split", split, store.splits)
    sd = store.split(split)
    if np.asarray(sd.labels).ndim != 1:
        raise DivergentError(f"split {split!r} is multi-label; specialization and ensemble gains need one label per example",
                             "pick a single-label split")
    return sd


def temperature_of(store, model: str, split: str, calibrated: bool = True) -> float:
    """The model's fitted temperature (1.0 when ``calibrated=False``); refuses a missing fit or
    one fitted on the split being evaluated (the core's rule)."""
    if model not in store.models:
        raise unknown("model", model, store.models)
    return temperatures(store, [model], calibrated=calibrated, split=split)[model]


def prob_blocks(store, model: str, split: str, *, calibrated: bool = True, block: int = BLOCK
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, float64 probabilities) blocks of a model on a split, by the reference arithmetic."""
    yield from reference_prob_blocks(store, model, split, temperature_of(store, model, split, calibrated), block=block)


def calibrated_probs(store, model: str, split: str, *, calibrated: bool = True) -> np.ndarray:
    """(N, classes) float64 probabilities of a model on a split (the blocks of :func:`prob_blocks`)."""
    return np.concatenate([p for _, p in prob_blocks(store, model, split, calibrated=calibrated)])


def top1(store, model: str, split: str, *, calibrated: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(pred, conf) of a model on a split: top-1 class and its calibrated probability."""
    preds, confs = [], []
    for _, p in prob_blocks(store, model, split, calibrated=calibrated):
        pr, cf = sm.top1_confidence(p)
        preds.append(pr)
        confs.append(cf)
    return np.concatenate(preds), np.concatenate(confs)


# ---- the result -------------------------------------------------------------------------------

@dataclass
class SpecializationResult(NamedTables):
    """Tables of one pair's specialization; ``score`` is the scalar for reports."""

    model_a: str
    model_b: str
    split: str
    calibrated: bool
    examples: pd.DataFrame
    histogram: pd.DataFrame
    summary: pd.DataFrame
    per_class: pd.DataFrame
    groups: pd.DataFrame
    group_test: pd.DataFrame
    meta: dict = field(default_factory=dict)

    TABLES = ("examples", "histogram", "summary", "per_class", "groups", "group_test")

    @property
    def score(self) -> float:
        """mean phi(only A) - mean phi(only B), degrees (see metrics.specialization.specialization_score)."""
        row = self.summary.loc[self.summary["statistic"] == "specialization_deg", "value"]
        return float(row.iloc[0])


# ---- the pure core on arrays ------------------------------------------------------------------

def specialization_from_arrays(*, conf_a, conf_b, pred_a, pred_b, labels, class_names: Sequence[str],
                               ids=None, groups: dict[str, list[str]] | None = None,
                               group_source: str = "mapping", group_stats: Sequence[str] = ("lean_deg",),
                               model_a: str = "A", model_b: str = "B", split: str = TEST,
                               calibrated: bool = True, bins: int = sm.N_BINS, n_boot: int = N_BOOT,
                               n_perm: int = sm.N_PERM, level: float = CI_LEVEL, seed: int = 0
                               ) -> SpecializationResult:
    """Every table of :func:`specialization` from per-example arrays (no store needed)."""
    labels = np.asarray(labels, dtype=np.int64)
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    n_classes = len(class_names)
    if not (len(labels) == len(pred_a) == len(pred_b) == len(conf_a) == len(conf_b)):
        raise DivergentError("A, B and the labels must cover the same examples")
    for s in group_stats:
        if s not in GROUP_STATS:
            raise unknown("group statistic", s, GROUP_STATS)
    phi = sm.confidence_angle(conf_a, conf_b)
    outcome = sm.outcome_codes(pred_a == labels, pred_b == labels)
    names = np.asarray(class_names, dtype=object)
    ids = np.arange(len(labels)).astype(str) if ids is None else np.asarray(ids).astype(str)
    pair = {"model_a": model_a, "model_b": model_b, "split": split}

    examples = pd.DataFrame({
        "id": ids, "label": labels, "class_name": names[labels], "pred_a": pred_a, "pred_b": pred_b,
        "conf_a": np.asarray(conf_a, dtype=np.float64), "conf_b": np.asarray(conf_b, dtype=np.float64),
        "phi_deg": phi, "outcome": pd.Categorical([sm.OUTCOMES[c] for c in outcome], categories=list(sm.OUTCOMES.values())),
    })

    edges, hist = sm.angle_histogram(phi, outcome, bins)
    hrows = []
    for name, counts in hist.items():
        tot = counts.sum()
        for i, c in enumerate(counts):
            hrows.append({**pair, "outcome": name, "bin_left": edges[i], "bin_right": edges[i + 1], "count": int(c),
                          "fraction": c / tot if tot else np.nan})
    histogram = pd.DataFrame(hrows)

    sep = sm.separation(phi, outcome, n_boot=n_boot, level=level, seed=seed)
    srows = [{**pair, "statistic": f"n_{name}", "value": float((outcome == code).sum()), "ci_low": np.nan,
              "ci_high": np.nan, "p_value": np.nan, "n": len(outcome)} for code, name in sm.OUTCOMES.items()]
    srows += [{**pair, "statistic": k, **v} for k, v in sep.items()]
    summary = pd.DataFrame(srows)

    pc = sm.per_class_specialization(phi, outcome, labels, n_classes)
    source, grp = ("none", {}) if groups is None else (group_source, groups)
    gnames, gidx = cg.group_index(grp, class_names)
    per_class = pd.DataFrame({**pair, "class": np.arange(n_classes), "class_name": list(class_names),
                              "group": [gnames[i] if i >= 0 else None for i in gidx], **pc})

    grows, trows = [], []
    for gi, g in enumerate(gnames):
        mask = gidx[labels] == gi
        in_a, in_b = mask & (outcome == sm.ONLY_A), mask & (outcome == sm.ONLY_B)
        a_m = phi[in_a].mean() - 45.0 if in_a.any() else np.nan
        b_m = 45.0 - phi[in_b].mean() if in_b.any() else np.nan
        cls = per_class[per_class["group"] == g]
        grows.append({**pair, "group": g, "source": source, "n_classes": int((gidx == gi).sum()),
                      "n_examples": int(mask.sum()), "n_only_a": int(in_a.sum()), "n_only_b": int(in_b.sum()),
                      "a_margin_deg": a_m, "b_margin_deg": b_m, "lean_deg": a_m - b_m,
                      **{f"class_mean_{s}": float(cls[s].mean()) for s in GROUP_STATS}})
    if len(gnames) >= 2:
        for s in group_stats:
            t = sm.group_test(pc[s], gidx, n_perm=n_perm, seed=seed)
            trows.append({**pair, "statistic": s, "groups": " vs ".join(gnames), "source": source,
                          "n_classes": t["n_units"], "n_dropped": t["n_dropped"], "between_ss": t["statistic"],
                          "difference": t["difference"], "p_value": t["p_value"], "method": t["method"],
                          "n_perm": t["n_perm"], "kruskal_p": t["kruskal_p"]})
    groups_df = pd.DataFrame(grows, columns=None if grows else [*pair, "group"])
    test_df = pd.DataFrame(trows, columns=None if trows else [*pair, "statistic", "p_value"])
    return SpecializationResult(model_a, model_b, split, calibrated, examples, histogram, summary, per_class,
                                groups_df, test_df, meta={"group_source": source, "n_boot": n_boot,
                                                          "n_perm": n_perm, "seed": seed, "level": level})


# ---- the store-level API ----------------------------------------------------------------------

def specialization(store, a: str, b: str, split: str = TEST, groups=None, *, n_boot: int = N_BOOT,
                   seed: int = 0, calibrated: bool = True, bins: int = sm.N_BINS, n_perm: int = sm.N_PERM,
                   group_stats: Sequence[str] = ("lean_deg",), level: float = CI_LEVEL) -> SpecializationResult:
    """Specialization of model ``b`` relative to the base ``a`` on ``split``.

    ``store`` is a :class:`divergent.store.Store` or a path to one. ``groups``: None (no class
    groups), 'builtin' (CIFAR-10 nature/anthropogenic, Fashion-MNIST garments/footwear/bags),
    a path to a group file (TOML/JSON/CSV, see :func:`class_groups.load_groups`) or a mapping.
    Returns a :class:`SpecializationResult` (tables: examples, histogram, summary, per_class,
    groups, group_test; ``result.score`` = the pair's specialization score in degrees).
    """
    store = as_store(store)
    if a == b:
        raise DivergentError(f"A and B are the same model ({a!r})", "pick two different models")
    sd = check_split(store, split)
    ta, tb = temperature_of(store, a, split, calibrated), temperature_of(store, b, split, calibrated)
    pred_a, conf_a = top1(store, a, split, calibrated=calibrated)
    pred_b, conf_b = top1(store, b, split, calibrated=calibrated)
    source, grp = cg.resolve_groups(groups, sd.class_names)
    res = specialization_from_arrays(
        conf_a=conf_a, conf_b=conf_b, pred_a=pred_a, pred_b=pred_b, labels=sd.labels, class_names=sd.class_names,
        ids=sd.ids, groups=grp if groups is not None else None, group_source=source, group_stats=group_stats,
        model_a=a, model_b=b, split=split, calibrated=calibrated, bins=bins, n_boot=n_boot, n_perm=n_perm,
        level=level, seed=seed)
    res.meta.update(temperature_a=ta, temperature_b=tb)
    return res


def specialization_scores(store, pairs: pd.DataFrame, split: str = TEST, *, calibrated: bool = True) -> pd.DataFrame:
    """The scalar score of every pair in a pairs table (columns model_a, model_b): one row per pair
    with specialization_deg, a_margin_deg, b_margin_deg, auc, n_only_a, n_only_b. No intervals."""
    store = as_store(store)
    check_split(store, split)
    labels = store.split(split).labels
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for a, b in pairs[["model_a", "model_b"]].itertuples(index=False):
        for m in (a, b):
            if m not in cache:
                cache[m] = top1(store, m, split, calibrated=calibrated)
        (pa, ca), (pb, cb) = cache[a], cache[b]
        phi = sm.confidence_angle(ca, cb)
        out = sm.outcome_codes(pa == labels, pb == labels)
        sep = sm.separation(phi, out, n_boot=0)
        rows.append({"model_a": a, "model_b": b, "split": split,
                     **{k: sep[k]["value"] for k in ("specialization_deg", "a_margin_deg", "b_margin_deg", "auc")},
                     "n_only_a": int((out == sm.ONLY_A).sum()), "n_only_b": int((out == sm.ONLY_B).sum())})
    return pd.DataFrame(rows)


def representative_angles(store, base: str, reps: dict[str, str], split: str = TEST, groups=None, *,
                          n_boot: int = N_BOOT, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Figures 3-4 for the base against one representative model per category ({category: model}):
    ``angles`` (one row per example: model_b, category, phi, outcome, class_name),
    ``class_specialization`` (per class: mean phi where only the base is right minus where only
    model_b is right) and ``group_specialization`` (the same within each class group, "all" for
    classes in no group, with the percentile interval of :func:`metrics.specialization.separation`).
    Tables are absent when `reps` is empty."""
    store = as_store(store)
    ang, cls, grp = [], [], []
    for cat, m in reps.items():
        res = specialization(store, base, m, split, groups=groups, n_boot=0, seed=seed)
        ex = res.examples
        phi = ex["phi_deg"].to_numpy(float)
        labels = ex["label"].to_numpy()
        codes = sm.outcome_codes(ex["pred_a"].to_numpy() == labels, ex["pred_b"].to_numpy() == labels)
        ang.append(pd.DataFrame({"model_b": m, "category": cat, "phi": phi, "outcome": ex["outcome"].astype(str).to_numpy(),
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
            sep = sm.separation(phi[sel], codes[sel], n_boot=n_boot, seed=seed)["specialization_deg"]
            grp.append(dict(model_b=m, category=cat, group=g, specialization=sep["value"],
                            specialization_lo=sep["ci_low"], specialization_hi=sep["ci_high"],
                            n_only_a=int((codes[sel] == sm.ONLY_A).sum()), n_only_b=int((codes[sel] == sm.ONLY_B).sum())))
    if not reps:
        return {}
    return {"angles": pd.concat(ang, ignore_index=True), "class_specialization": pd.concat(cls, ignore_index=True),
            "group_specialization": pd.DataFrame(grp)}


def write_tables(result: SpecializationResult, out) -> list[Path]:
    """Write a result atomically: ``X.json`` holds every table ({name: records} plus meta);
    ``X.csv`` / ``X.parquet`` write one file per table, ``X.<table>.csv``. Returns the paths."""
    import io
    import json

    from .._files import atomic_write_bytes

    out = Path(out)
    suffix = out.suffix.lower()
    tables = result.tables()
    if suffix == ".json":
        doc = {"model_a": result.model_a, "model_b": result.model_b, "split": result.split,
               "calibrated": result.calibrated, "score_deg": result.score, "meta": result.meta,
               "tables": {k: json.loads(v.to_json(orient="records")) for k, v in tables.items()}}
        atomic_write_bytes(out, (json.dumps(doc, indent=1, default=str) + "\n").encode())
        return [out]
    if suffix not in (".csv", ".parquet"):
        raise DivergentError(f"unknown output type {suffix!r} for {out.name}", "use .json, .csv or .parquet")
    paths = []
    for name, df in tables.items():
        p = out.with_name(f"{out.stem}.{name}{suffix}")
        if suffix == ".csv":
            data = df.to_csv(index=False).encode()
        else:
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            data = buf.getvalue()
        atomic_write_bytes(p, data)
        paths.append(p)
    return paths
