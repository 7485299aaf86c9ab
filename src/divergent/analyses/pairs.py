"""The pairs table (Sections 4.1-4.2, Appendix Table 1): every pair's metrics with 95 % intervals.

Per-example outcome codes come from the exact engine (divergent.engine), are cached under
STORE/cache/pairs/<split>/ keyed by everything they depend on (the labels' and both models' score
content hashes, both kinds and temperatures, the engine version), so adding a model to an N-model
store computes only its new pairs. Each cached file also records those inputs and its own
checksum, checked on every read; the arrays behind a cached pair are checked against their sha256
too (once per process), so a cache never hides a corrupted input.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..cards import category as card_category
from ..conventions import CI_LEVEL, N_BOOT, TEST
from ..errors import DivergentError, unknown
from ..metrics.bootstrap import count_bootstrap
from ..metrics.pairs import A_OK, AGREE, B_OK, ENS_OK, INCONSISTENT_CODES, METRICS, code_counts, encode, metrics_from_counts
from ..store import Store
from ._select import accuracies, as_store, in_band, predictions, resolve_models, temperatures

ENGINE_VERSION = "1"
METRIC_COLUMNS = list(METRICS)


def _content(store: Store, split: str, m: str, t: float, kind: str) -> dict:
    return {"kind": kind, "sha256": store.content_hash(m, split, kind), "temperature": repr(float(t))}


def pair_deps(store: Store, split: str, a: str, b: str, ta: float, tb: float, kinds: tuple[str, str]) -> dict:
    """Everything the outcome codes of the pair (a, b) depend on: their cache key and check."""
    return {"engine": ENGINE_VERSION, "split": split, "labels": store.labels_sha256(split),
            "a": _content(store, split, a, ta, kinds[0]), "b": _content(store, split, b, tb, kinds[1])}


def score_kind(store: Store, m: str, split: str) -> str:
    """The scores the engine reads of a model with scores: its logits, else its probabilities."""
    return "logits" if store.has(m, split, "logits") else "probs"


def model_key(store: Store, split: str, m: str, temperature: float) -> dict:
    """What a model's part of every pair's codes depends on (score kind, content hash,
    temperature): the key of its engine summaries."""
    return _content(store, split, m, temperature, score_kind(store, m, split))


def model_source(store: Store, split: str, m: str, temperature: float):
    """The engine's view of a model's scores on `split` at `temperature`."""
    from ..engine import ModelSource

    kind = score_kind(store, m, split)
    return ModelSource(store.array(m, split, kind), float(temperature), kind, m)


def counts_inputs(store: Store, *, split: str, models: list[str]) -> dict:
    """What :func:`pair_counts` of these models (with their temperatures) and :func:`model_table`'s
    rows of them read from the store, as plain data from its manifest (no array is read): the
    labels' hash and each model's score kind and hash, temperature (and the split it was fitted
    on) and card. Equal inputs give an equal result, so it serves as a cache key."""
    store = as_store(store)
    have = set(store.models)
    out = {}
    for m in models:
        if m not in have:
            continue
        kind = next((k for k in ("logits", "probs", "pred") if store.has(m, split, k)), None)
        if kind is None:
            continue
        cal = store.calibration(m) or {}   # its temperature and split: not its time or fit statistics
        out[m] = {"kind": kind, "sha256": store.content_hash(m, split, kind), "card": store.card(m).to_dict(),
                  "temperature": repr(float(cal["temperature"])) if cal else None, "fit_on": cal.get("fit_on")}
    return {"engine": ENGINE_VERSION, "split": split, "labels": store.labels_sha256(split), "models": out}


class _Codes:
    """Computes (or loads cached) per-example outcome codes for pairs of one split."""

    def __init__(self, store: Store, split: str, names: list[str], temps: dict[str, float], *,
                 cache: bool = True, progress: bool = False, runner=None, block: int | None = None,
                 prepared: dict | None = None):
        self.store, self.split, self.temps, self.cache, self.progress = store, split, temps, cache, progress
        self.runner, self.block = runner, block  # a runner: code counts in blocks of models on it
        self.blocks = None  # what the last run in blocks did (divergent.engine.distributed.PairCounts)
        self.labels = store.split(split).labels
        self.prob_models = [m for m in names if store.has_scores(m, split)]
        self._prepared: dict[str, object] = {}
        self.cached = store.derived_cache("pairs", split)
        self.n_fallback = 0
        self.n_gather = 0
        self.reused: list[str] = []   # models whose summaries came from `prepared`
        for m, (key, summ) in (prepared or {}).items():
            self._reuse(m, key, summ)

    def _reuse(self, m: str, key: dict, summ: dict) -> None:
        """Use a model's summaries computed elsewhere (model_summary) when they were computed from
        exactly what this run reads (score kind, content hash, temperature); else prepare anew."""
        from ..engine.distributed import attach

        n = len(self.labels)
        if m not in self.prob_models or key != self.key(m) or np.shape(summ.get("pred")) != (n,):
            return
        self._prepared[m] = attach(summ, self.source(m), self.labels)
        self.reused.append(m)

    def kind(self, m: str) -> str:
        return score_kind(self.store, m, self.split)

    def key(self, m: str) -> dict:
        return model_key(self.store, self.split, m, self.temps[m])

    def source(self, m: str):
        return model_source(self.store, self.split, m, self.temps[m])

    def _deps(self, a: str, b: str) -> dict:
        return pair_deps(self.store, self.split, a, b, self.temps[a], self.temps[b], (self.kind(a), self.kind(b)))

    def check_inputs(self, models: list[str]) -> None:
        """The labels and the models' scores against their sha256 (hashed once per process)."""
        check = getattr(self.store, "ensure_checked", None)
        if check is not None:
            check([self.store.split_info(self.split, "labels")] + [self.store.info(m, self.split, self.kind(m)) for m in models])

    def _prepare(self, names: list[str]):
        from ..engine import prepare_many

        todo = [m for m in names if m not in self._prepared]
        if todo:
            srcs = [self.source(m) for m in todo]
            for m, p in zip(todo, prepare_many(srcs, self.labels, progress=self.progress)):
                self._prepared[m] = p

    def codes(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        out, todo = {}, []
        self.check_inputs(sorted({m for ab in pairs for m in ab if m in self.prob_models}))
        for a, b in pairs:
            if a in self.prob_models and b in self.prob_models:
                hit = self.cached.get(self._deps(a, b)) if self.cache else None
                if hit is not None:
                    codes = hit.get("codes")
                    if codes is None or codes.shape != (len(self.labels),) or codes.dtype != np.uint8:
                        from ..errors import CorruptStoreError

                        raise CorruptStoreError(f"cached pair codes {self.cached.path(self._deps(a, b))} have the "
                                                "wrong shape or type", "delete that file (it is recomputed)")
                    out[(a, b)] = codes
                    continue
                todo.append((a, b))
            else:  # decision-only: no ensemble bit
                pa, pb = predictions(self.store, a, self.split), predictions(self.store, b, self.split)
                out[(a, b)] = encode(pa == self.labels, pb == self.labels, None, pa == pb)
        if todo:
            from ..engine import all_pair_codes

            need = sorted({m for ab in todo for m in ab})
            self._prepare(need)
            prepared = [self._prepared[m] for m in need]
            idx = {m: i for i, m in enumerate(need)}
            for res in all_pair_codes(prepared, [(idx[a], idx[b]) for a, b in todo], progress=self.progress):
                a, b = need[res.a], need[res.b]
                out[(a, b)] = res.codes
                self.n_fallback += res.n_fallback
                self.n_gather += res.n_gather
                if self.cache:
                    self.cached.put(self._deps(a, b), {"codes": np.asarray(res.codes, dtype=np.uint8)})
        return out

    def counts(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """(P, 16) code counts of the pairs. With a runner, the pairs of models with scores run in
        blocks of models on it (divergent.engine.distributed; the same counts, bit for bit), each
        block cached under STORE/cache/pair-blocks/<split>/ by its models' content."""
        scored = [ab for ab in pairs if ab[0] in self.prob_models and ab[1] in self.prob_models]
        if self.runner is None or not scored:
            codes = self.codes(pairs)
            return np.stack([code_counts(codes[ab]) for ab in pairs])
        from ..engine.distributed import DEFAULT_BLOCK, pair_counts

        self.check_inputs(sorted({m for ab in scored for m in ab}))
        need = [m for m in self.prob_models if any(m in ab for ab in scored)]
        idx = {m: i for i, m in enumerate(need)}
        srcs = [self.source(m) for m in need]
        keys = [self.key(m) for m in need]  # each model's content: kind, sha256, temperature
        blocks = self.store.derived_cache("pair-blocks", self.split) if self.cache else None
        res = pair_counts(srcs, self.labels, [(idx[a], idx[b]) for a, b in scored], size=self.block or DEFAULT_BLOCK,
                          runner=self.runner, cache=blocks, model_keys=keys,
                          cache_deps={"engine": ENGINE_VERSION, "split": self.split,
                                      "labels": self.store.labels_sha256(self.split)})
        self.n_gather += int(res.n_gather.sum())
        self.n_fallback += int(res.n_fallback.sum())
        self.blocks = res
        got = dict(zip(scored, res.counts))
        rest = [ab for ab in pairs if ab not in got]
        if rest:
            codes = self.codes(rest)
            got.update({ab: code_counts(codes[ab]) for ab in rest})
        return np.stack([got[ab] for ab in pairs])


def _check_inputs(store: Store, names: list[str], split: str) -> None:
    """Every array the table reads, against its sha256 (in parallel; once per process and file)."""
    check = getattr(store, "ensure_checked", None)
    if check is None:
        return
    infos = [store.split_info(split, "labels")]
    for m in names:
        kind = next((k for k in ("logits", "probs", "pred") if store.has(m, split, k)), None)
        if kind is not None:
            infos.append(store.info(m, split, kind))
    check(infos)


def _pairs_for(names: list[str], base: str | None) -> list[tuple[str, str]]:
    if base is not None:
        return [(base, m) for m in names if m != base]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def pairs(store, *, split: str = TEST, base: str | None = None, models=None, acc_band=None,
          calibrated: bool = True, n_boot: int = N_BOOT, level: float = CI_LEVEL, seed: int = 0,
          categories: dict | None = None, include_self: bool = False, cache: bool = True,
          progress: bool = False, runner=None, block: int | None = None) -> pd.DataFrame:
    """One row per pair: the paper's pair metrics with paired-bootstrap intervals.

    `base` compares one model with every other (the paper's setting); otherwise all pairs.
    `acc_band` (LO,HI) keeps models whose accuracy on `split` lies in the band (the base is
    always kept). `categories` overrides the derived category: {(a, b): category}. `runner`
    (divergent.engine.distributed.LocalRunner / RayRunner) computes the pairs in blocks of
    `block` x `block` models on it, with the same result.
    Columns: model_a, model_b, category, n, the metrics of divergent.metrics.pairs.METRICS,
    their `_lo`/`_hi` interval bounds, and `missing_reason` (why ensemble metrics are NaN).
    It is :func:`pairs_from_counts` of :func:`pair_counts`.
    """
    counts = pair_counts(store, split=split, base=base, models=models, acc_band=acc_band, calibrated=calibrated,
                         categories=categories, include_self=include_self, cache=cache, progress=progress,
                         runner=runner, block=block)
    return pairs_from_counts(counts, n_boot=n_boot, level=level, seed=seed)


#: the code-count columns of a counts table (pair_counts): code c's count in column f"count_{c}"
COUNT_COLUMNS = [f"count_{c}" for c in range(16)]


def pair_counts(store, *, split: str = TEST, base: str | None = None, models=None, acc_band=None,
                calibrated: bool = True, categories: dict | None = None, include_self: bool = False,
                cache: bool = True, progress: bool = False, runner=None, block: int | None = None,
                prepared: dict | None = None) -> pd.DataFrame:
    """The pairs of :func:`pairs` with their outcome-code counts, before any bootstrap: one row per
    pair (model_a, model_b, category, decision_only, temperature_a, temperature_b, COUNT_COLUMNS).

    `prepared` ({model: (key, summaries)} of :func:`model_summary`) gives models' engine summaries
    computed once elsewhere (the study's base, shared by every block); one whose key differs from
    what this call reads (another content hash or temperature) is prepared anew.

    Every row depends on its own pair only, so the counts tables of disjoint sets of models
    against one base, concatenated in the order of the whole, are the whole's counts table (the
    study's pairs stage computes them in blocks of models, divergent.study.stages)."""
    store = as_store(store)
    names = resolve_models(store, models, split=split, need="pred")
    if base is not None and base not in names:
        raise unknown("base model", base, names or store.models)
    if not names:
        raise DivergentError(f"no model has predictions on split {split!r}", "extract or import predictions first")
    _check_inputs(store, names, split)
    acc = accuracies(store, names, split)
    kept = in_band(acc, acc_band)
    if base is not None and base not in kept:
        kept = [base] + kept
    names = [m for m in names if m in kept]
    prob_models = [m for m in names if store.has_scores(m, split)]
    temps = temperatures(store, prob_models, calibrated=calibrated, split=split)
    plist = _pairs_for(names, base)
    if include_self and base is not None:
        plist = [(base, base)] + plist
    if not plist:
        raise DivergentError("fewer than two models to compare", "add models, widen --acc-band, or check names")
    engine = _Codes(store, split, names, temps, cache=cache, progress=progress, runner=runner, block=block,
                    prepared=prepared)
    counts = engine.counts(plist)
    cards = {m: store.card(m) for m in names}
    df = pd.DataFrame({"model_a": [a for a, _ in plist], "model_b": [b for _, b in plist],
                       "category": [(categories or {}).get((a, b)) or card_category(cards[a], cards[b]) for a, b in plist],
                       "decision_only": [a not in prob_models or b not in prob_models for a, b in plist],
                       "temperature_a": [temps.get(a, np.nan) for a, _ in plist],
                       "temperature_b": [temps.get(b, np.nan) for _, b in plist]})
    df[COUNT_COLUMNS] = np.asarray(counts, dtype=np.int64)
    df.attrs.update({"split": split, "base": base, "calibrated": calibrated,
                     "engine_fallback_examples": engine.n_fallback, "engine_gathered_examples": engine.n_gather})
    if getattr(engine, "blocks", None) is not None:
        df.attrs.update({"blocks": engine.blocks.blocks, "blocks_computed": engine.blocks.computed})
    if prepared:
        df.attrs["summaries_reused"] = list(engine.reused)
    return df


def model_summary(store, *, split: str, model: str, calibrated: bool = True) -> tuple[dict, dict[str, np.ndarray]] | None:
    """One model's engine summaries on `split` (divergent.engine.prepare at its temperature) and the
    key they were computed from (score kind, content hash, temperature), for
    :func:`pair_counts`'s `prepared`; None for a model without scores (decision-only)."""
    from ..engine import prepare
    from ..engine.distributed import summary

    store = as_store(store)
    resolve_models(store, [model], split=split, need="pred")
    if not store.has_scores(model, split):
        return None
    _check_inputs(store, [model], split)
    t = temperatures(store, [model], calibrated=calibrated, split=split)[model]
    src = model_source(store, split, model, t)
    return model_key(store, split, model, t), summary(prepare(src, store.split(split).labels))


def pairs_from_counts(table: pd.DataFrame, *, n_boot: int = N_BOOT, level: float = CI_LEVEL,
                      seed: int = 0) -> pd.DataFrame:
    """The pairs table of a counts table (:func:`pair_counts`): metrics and their intervals.

    The intervals' resamples come from one generator over the pairs in the table's order
    (metrics.bootstrap.count_bootstrap), so they depend on the whole table: bootstrap the whole
    table at once, never parts of it."""
    counts = table[COUNT_COLUMNS].to_numpy(dtype=np.int64)
    vals = metrics_from_counts(counts)
    ci = count_bootstrap(counts, metrics_from_counts, n_boot=n_boot, level=level, seed=seed) if n_boot else {}
    rows = []
    for i, r in enumerate(table[["model_a", "model_b", "category", "decision_only", "temperature_a",
                                 "temperature_b"]].itertuples(index=False)):
        decision_only = bool(r.decision_only)
        row = {"model_a": r.model_a, "model_b": r.model_b, "category": r.category, "n": int(counts[i].sum())}
        reason = ""
        if decision_only:
            reason = "decision-only model: ensemble metrics need probabilities"
        elif counts[i][list(INCONSISTENT_CODES)].sum() == 0:
            reason = "no inconsistent examples: conversion rate undefined"
        for k in METRIC_COLUMNS:
            v = float(vals[k][i])
            lo, hi = (float(ci[k][0][i]), float(ci[k][1][i])) if ci else (np.nan, np.nan)
            if decision_only and METRICS[k].needs_probs:
                v, lo, hi = np.nan, np.nan, np.nan
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = v, lo, hi
        row["temperature_a"] = r.temperature_a
        row["temperature_b"] = r.temperature_b
        row["missing_reason"] = reason
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update({**{k: table.attrs[k] for k in ("split", "base", "calibrated") if k in table.attrs},
                     "n_boot": n_boot, "level": level})
    df.attrs.update({k: v for k, v in table.attrs.items() if k not in df.attrs})
    return df


def pair_outcomes(store, a: str, b: str, *, split: str = TEST, calibrated: bool = True) -> pd.DataFrame:
    """Per-example outcomes of one pair: a_correct, b_correct, ensemble_correct, agree."""
    store = as_store(store)
    return pair_outcome_codes(store, [(a, b)], split=split, calibrated=calibrated)[(a, b)]


def pair_outcome_codes(store, plist: list[tuple[str, str]], *, split: str = TEST, calibrated: bool = True,
                       as_codes: bool = False) -> dict:
    """Per-example outcomes for several pairs (for shared-resample statistics across pairs)."""
    store = as_store(store)
    names = sorted({m for ab in plist for m in ab})
    resolve_models(store, names, split=split, need="pred")
    prob_models = [m for m in names if store.has_scores(m, split)]
    temps = temperatures(store, prob_models, calibrated=calibrated, split=split)
    codes = _Codes(store, split, names, temps).codes(plist)
    if as_codes:
        return codes
    return {ab: pd.DataFrame({"a_correct": (c & A_OK) > 0, "b_correct": (c & B_OK) > 0,
                              "ensemble_correct": (c & ENS_OK) > 0, "agree": (c & AGREE) > 0},
                             index=store.split(split).ids)
            for ab, c in codes.items()}


def model_table(store, *, split: str = TEST, base: str | None = None, calibrated: bool = True, models=None,
                pairs_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: card fields (family, objective, train_data, head), temperature and
    accuracy on `split`, and (with a base) category, error inconsistency and ensemble accuracy
    relative to the base. The study's report lays it out as Appendix Table 1
    (divergent.report.build.table1). `models` keeps those models (default: every model, in the
    store's order); `pairs_table`, the base's pairs table of :func:`pairs` (with these models and
    the same `calibrated`), gives the base-relative columns without computing them again."""
    store = as_store(store)
    names = resolve_models(store, None, split=split, need="pred")
    if models is not None:
        keep = set(models)
        names = [m for m in names if m in keep]
    acc = accuracies(store, names, split)
    rows = []
    for m in names:
        c = store.card(m)
        rows.append({"model": m, "family": c.family, "objective": c.objective, "train_data": c.train_data,
                     "head": c.head, "temperature": store.temperature(m), "accuracy": acc[m]})
    df = pd.DataFrame(rows)
    if base is not None:
        pt = pairs_table
        if pt is None:
            pt = pairs(store, split=split, base=base, calibrated=calibrated, n_boot=0, include_self=False)
        pt = pt[pt["model_a"] == base].set_index("model_b")
        df["category"] = [card_category(store.card(base), store.card(m)) for m in df["model"]]
        df["error_inconsistency"] = df["model"].map(pt["error_inconsistency"])
        df["ensemble_acc"] = df["model"].map(pt["ensemble_acc"])
    return df
