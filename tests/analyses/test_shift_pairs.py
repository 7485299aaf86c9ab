"""Pair metrics under shift: each shifted split's rows equal the analyses run directly on that
split, and the findings' ordering statistic equals its definition (synthetic scores: property
tests; the study's end-to-end test runs it on real models)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import divergent as dv
from divergent.analyses.categories import category_summary
from divergent.analyses.findings import CATEGORY_RANK
from divergent.analyses.shift import shift_findings, shift_of, shift_pairs
from divergent.cards import ModelCard
from divergent.errors import DivergentError
from divergent.metrics.relationships import ols_slope, spearman
from divergent.store import Store

N, C = 600, 6
#: model -> (card fields, skill); the base is m-base, one or two models per category
MODELS = {
    "m-base": (dict(family="resnet", seed=0, train_data="cifar10"), 2.4),
    "m-seed1": (dict(family="resnet", seed=1, train_data="cifar10"), 2.3),
    "m-deep": (dict(family="resnet", depth=50, seed=0, train_data="cifar10"), 2.2),
    "m-vgg": (dict(family="vgg", seed=0, train_data="cifar10"), 1.9),
    "m-simclr": (dict(family="resnet", objective="contrastive", seed=0, train_data="cifar10"), 1.6),
    "m-inet": (dict(family="resnet", seed=0, train_data="imagenet"), 1.3),
}
SHIFTS = ("test~gaussian_noise-3", "test~gaussian_blur-1")
#: a copy of test~gaussian_noise-3 stored in the order of test (rows matched by id must give the same numbers)
SAME = "test~speckle_noise-2"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Calibrated models on holdout, test and two shifted copies of test stored in other row
    orders; a model's errors move further from the base's the more its training differs."""
    rng = np.random.default_rng(0)
    st = Store.create(tmp_path_factory.mktemp("shift") / "store")
    names = [f"c{i}" for i in range(C)]
    with st.writer() as w:
        for split in ("holdout", "test"):
            y = rng.integers(0, C, N)
            ids = np.array([f"{split}/{i:04d}" for i in range(N)])
            w.add_split(split, labels=y, class_names=names, ids=ids, dataset="toy")
            common = rng.normal(size=(N, C))
            perms = {sh: rng.permutation(N) for sh in SHIFTS}
            if split == "test":
                for sh, p in perms.items():
                    w.add_split(sh, labels=y[p], class_names=names, ids=ids[p], dataset="toy")
                w.add_split(SAME, labels=y, class_names=names, ids=ids, dataset="toy")
            for i, (m, (card, skill)) in enumerate(MODELS.items()):
                own = rng.normal(size=(N, C))
                z = (1.0 - 0.15 * i) * common + (0.4 + 0.15 * i) * own
                z[np.arange(N), y] += skill
                feats = np.concatenate([z, rng.normal(size=(N, 4 + i))], axis=1).astype(np.float32)
                w.put(m, split, logits=z.astype(np.float32), features=feats, card=ModelCard(name=m, **card))
                if split == "test":
                    for k, (sh, p) in enumerate(perms.items()):
                        zs = z + (0.6 + 0.4 * k) * rng.normal(size=(N, C))
                        zs[np.arange(N), y] -= 0.3 * skill
                        w.put(m, sh, logits=zs[p].astype(np.float32))
                        if k == 0:
                            w.put(m, SAME, logits=zs.astype(np.float32))
    dv.calibrate(st.root, fit_on="holdout", progress=False)
    return Store.open(st.root)


def test_shift_tables_equal_analyses_on_each_split(store):
    res = shift_pairs(store, base="m-base", split="test", shifted=list(SHIFTS), n_boot=20, seed=3)
    assert list(res.pairs["split"].unique()) == ["test", *SHIFTS]
    for s in ["test", *SHIFTS]:
        direct = dv.pairs(store, split=s, base="m-base", n_boot=20, seed=3)
        got = res.pairs[res.pairs["split"] == s].drop(columns=["split", "shift", "corruption", "severity"])
        pd.testing.assert_frame_equal(got.reset_index(drop=True), direct, check_exact=True)
        cs = category_summary(store, base="m-base", split=s, n_boot=20, seed=3)
        gotc = res.categories[res.categories["split"] == s].drop(columns=["split", "shift", "corruption", "severity"])
        pd.testing.assert_frame_equal(gotc.reset_index(drop=True), cs, check_exact=True)
    # the shift really changes the numbers (the tables are not the in-distribution ones repeated)
    ei = res.pairs.groupby("split")["error_inconsistency"].mean()
    assert ei["test~gaussian_noise-3"] > ei["test"] + 0.02
    assert set(res.categories["metric"]) >= {"error_inconsistency", "gain_vs_best", "conversion_rate"}
    row = res.pairs[res.pairs["split"] == "test~gaussian_noise-3"].iloc[0]
    assert (row["shift"], row["corruption"], row["severity"]) == ("gaussian_noise-3", "gaussian_noise", 3)


def _direct_rho(store, split, order=None):
    """Spearman(category rank, error inconsistency) and slope(gain on EI) from predictions and
    ensembles computed here (argmax of the calibrated probabilities and of their mean)."""
    from divergent.metrics.probs import reference_probs

    y = np.asarray(store.split(split).labels)
    def probs(m):
        return reference_probs(np.asarray(store.array(m, split, "logits")), store.temperature(m))
    pb = probs("m-base")
    ranks, ei, gain = [], [], []
    for m in MODELS:
        if m == "m-base":
            continue
        cat = dv.category(store.card("m-base"), store.card(m))
        pm = probs(m)
        a, b = pb.argmax(1) == y, pm.argmax(1) == y
        e = ((pb + pm) / 2).argmax(1) == y
        ranks.append(CATEGORY_RANK[cat])
        ei.append((a != b).mean())
        gain.append(e.mean() - (a.mean() + b.mean()) / 2)
    return float(spearman(np.array(ranks, float), np.array(ei))), float(ols_slope(np.array(ei), np.array(gain)))


def test_findings_equal_their_definition(store):
    f = shift_findings(store, base="m-base", split="test", n_boot=200, seed=0)
    assert list(f["split"].unique()) == ["test", *sorted([*SHIFTS, SAME])]
    t = f.set_index(["split", "statistic"])
    rho_id, slope_id = _direct_rho(store, "test")
    assert t.loc[("test", "order_rho"), "estimate"] == pytest.approx(rho_id, abs=1e-12)
    assert t.loc[("test", "gain_slope"), "estimate"] == pytest.approx(slope_id, abs=1e-12)
    for sh in SHIFTS:
        rho, slope = _direct_rho(store, sh)
        assert t.loc[(sh, "order_rho"), "estimate"] == pytest.approx(rho, abs=1e-12)
        assert t.loc[(sh, "gain_slope"), "estimate"] == pytest.approx(slope, abs=1e-12)
        assert t.loc[(sh, "order_rho_change"), "estimate"] == pytest.approx(rho - rho_id, abs=1e-12)
    # constructed so that the ordering holds in distribution: the interval excludes 0
    r = t.loc[("test", "order_rho")]
    assert r["lo"] <= r["estimate"] <= r["hi"] and r["lo"] > 0 and r["verdict"] == "holds"
    assert f["text"].str.len().min() > 20 and not f[["estimate", "lo", "hi"]].isna().any().any()
    # rows are matched by id: the same predictions stored in another order give the same intervals
    cols = ["statistic", "estimate", "lo", "hi", "verdict"]
    a = f[f["split"] == SHIFTS[0]][cols].reset_index(drop=True)
    b = f[f["split"] == SAME][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_order_rho_takes_claim_1s_bca_interval_and_the_slope_the_percentile_one(store):
    """order_rho's interval is BCa (as claim 1's in the findings, docs/report.md), recomputed here
    from the same resamples and jackknife; gain_slope's stays the percentile interval."""
    from divergent.analyses import shift as S
    from divergent.metrics.bootstrap import bca_interval, jackknife_values, percentile_interval, resample_weights

    f = shift_findings(store, base="m-base", split="test", n_boot=200, seed=3).set_index(["split", "statistic"])
    others = f.attrs["models"]
    base_card = store.card("m-base")
    rank = np.array([CATEGORY_RANK[dv.category(base_card, store.card(m))] for m in others], dtype=np.float64)
    n = len(store.split("test").labels)
    W = resample_weights(n, n_boot=200, seed=3)
    differs = []
    for s in ["test", *SHIFTS]:
        order = None if s == "test" else S._aligned(store, "test", s)
        ei, gain = S._pair_matrices(store, "m-base", s, others, order, True)
        (rho0,), _ = S._order_stats(ei, gain, rank, None)
        rho, slope = S._order_stats(ei, gain, rank, W)
        jack = jackknife_values(lambda w: S._order_stats(ei, gain, rank, w)[0], n)
        bca = bca_interval(rho0, rho, jack, 0.95, min_n=10)
        pct = percentile_interval(rho, 0.95, min_n=10)
        row = f.loc[(s, "order_rho")]
        assert (row["lo"], row["hi"]) == pytest.approx(bca, abs=0, rel=0) and row["estimate"] == rho0
        differs.append((row["lo"], row["hi"]) != pytest.approx(pct, abs=1e-12))
        sl = f.loc[(s, "gain_slope")]
        assert (sl["lo"], sl["hi"]) == pytest.approx(percentile_interval(slope, 0.95, min_n=10), abs=0, rel=0)
    assert any(differs)   # where rho varies over the resamples, BCa and percentile differ: the choice shows


def test_shift_of_and_refusals(store):
    assert shift_of("test") == ("none", "none", 0)
    assert shift_of("test~imagenet-r") == ("imagenet-r", "imagenet-r", 0)
    with pytest.raises(DivergentError, match="no split matches"):
        shift_pairs(store, base="m-base", shifted="test~fog*", n_boot=0)
    with pytest.raises(DivergentError, match="base model"):
        shift_pairs(store, base="nope", n_boot=0)


def _section(html: str, sid: str) -> str:
    return html.split(f'id="{sid}"')[1].split("</section>")[0]


def test_report_sections_render_the_tables_without_nan(store, tmp_path):
    """The report's shift and similarity sections, from the tables the study's units write."""
    import re
    import warnings

    from divergent.analyses.cka import cka_error_inconsistency
    from divergent.analyses.lines import LinesDoNotHoldWarning
    from divergent.report.shift import SECTIONS, render

    res = shift_pairs(store, base="m-base", shifted=list(SHIFTS), n_boot=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LinesDoNotHoldWarning)
        ln = dv.lines(store, split="test", shifted=list(SHIFTS), n_boot=20)
    assert isinstance(ln, pd.DataFrame) and set(ln.tables()) == {"estimates", "lines", "categories", "errors"}
    ck = cka_error_inconsistency(store, split="test", n_boot=20)
    ck["category_to_base"] = [dv.category(store.card(a), store.card(b)) if a == "m-base" else ""
                              for a, b in zip(ck["model_a"], ck["model_b"])]
    rel = pd.DataFrame([{"split": "test", "statistic": "spearman_cka_error_inconsistency", "n_pairs": len(ck),
                         "estimate": ck.attrs["spearman"], "lo": ck.attrs["spearman_lo"], "hi": ck.attrs["spearman_hi"],
                         "n_boot": 20}])
    tables = {"shift_pairs": res.pairs, "shift_categories": res.categories, "shift_findings": res.findings,
              **{f"lines_{k}": v for k, v in ln.tables().items()}, "cka": ck, "cka_relation": rel,
              "lines_warnings": pd.DataFrame({"warning": [str(w.message) for w in caught]}, dtype=object)}
    (tmp_path / "figures").mkdir()
    bodies, written = render(tables, tmp_path, base="m-base")
    assert set(bodies) == {sid for sid, _ in SECTIONS} == {"shift", "similarity"}
    for sid, sec in bodies.items():
        assert "Not available" not in sec and "data:image/png;base64," in sec, sid
        text = re.sub(r'src="data:image/png;base64,[^"]*"', "", sec)
        assert not re.search(r"\bnan\b|n/a", text, flags=re.I), sid
    for r in res.findings.itertuples():
        assert r.text.replace("'", "&#x27;") in bodies["shift"]
    assert f"{ck.attrs['spearman']:.3f}" in bodies["similarity"]
    assert {"shift_pairs", "shift_findings", "lines_errors", "cka", "cka_relation"} <= set(written)
    for stem in ("fig_shift_categories", "fig_shift_lines", "fig_cka"):
        assert (tmp_path / "figures" / f"{stem}.svg").exists()
    # without shift tables the sections say why
    bodies, written = render(None, tmp_path)
    assert "analysis.shifts" in bodies["shift"] and written == {}
