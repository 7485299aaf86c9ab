"""The report renders every section from small hand-made tables, and its numbers equal the tables."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from divergent.errors import DivergentError
from divergent.report import SECTIONS, build_report
from divergent.report.html import fmt_num, fmt_pct, fmt_pp


@pytest.fixture(scope="module")
def built(built_report):
    out, path, t = built_report
    return out, path.read_text(), t


def test_every_section_present_with_figure(built):
    out, html, _ = built
    for sid, title in SECTIONS:
        assert f'id="{sid}"' in html
        assert "Not available" not in html.split(f'id="{sid}"')[1].split("</section>")[0], sid
    assert html.count("data:image/png;base64,") == 7
    for stem in ("fig1_errors", "fig2_ensembles", "fig3_angles", "fig4_specialization", "fig5_greedy",
                 "fig6_features", "fig7_transfer"):
        for ext in ("svg", "png"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 5000
    assert (out / "figures" / "fig1_errors.svg").read_text().lstrip().startswith("<?xml")


def test_self_contained(built):
    _, html, _ = built
    assert "<script" not in html
    # no external resources: every src= is a data URI
    assert all(s.startswith("data:") for s in re.findall(r'src="([^"]+)"', html))
    assert "http://" not in html and "https://" not in html


def test_tables_written_as_csv_and_parquet_equal(built):
    out, _, t = built
    for name in ("models", "pairs", "findings", "greedy", "transfer", "table1", "category_summary"):
        a = pd.read_csv(out / "tables" / f"{name}.csv")
        b = pd.read_parquet(out / "tables" / f"{name}.parquet")
        assert list(a.columns) == list(b.columns) and len(a) == len(b)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "pairs.parquet"), t.pairs, check_dtype=False)
    md = (out / "findings.md").read_text()
    assert md.count("\n") == len(t.findings) + 2 and "| 1 | all | **holds** | 0.900 | 0.700 to 1.000 |" in md


def test_numbers_in_html_equal_tables(built):
    out, html, t = built
    t1 = pd.read_parquet(out / "tables" / "table1.parquet")
    models_sec = html.split('id="models"')[1].split("</section>")[0]
    for r in t1.itertuples():
        assert f">{fmt_pct(r.accuracy)}<" in models_sec
        if r.model != "cnn-base":
            assert f">{fmt_num(r.error_inconsistency)}<" in models_sec
            assert f">{fmt_pct(r.ensemble_acc)}<" in models_sec
    cs = pd.read_parquet(out / "tables" / "category_summary.parquet")
    err_sec = html.split('id="errors"')[1].split("</section>")[0]
    for r in cs.itertuples():
        assert f"{fmt_pct(r.error_inconsistency)} (n={r.n_pairs})" in err_sec
    # the paper's 0.0512 for the reinit pair appears as in Table 1
    assert ">0.0512<" in models_sec
    f = pd.read_parquet(out / "tables" / "findings.parquet")
    find_sec = html.split('id="findings"')[1]
    for r in f.itertuples():
        assert r.text.replace("'", "&#x27;") in find_sec
        assert f">{r.verdict}<" in find_sec
    g = t.greedy
    greedy_sec = html.split('id="greedy"')[1].split("</section>")[0]
    assert f"{fmt_pct(g.test_acc.iloc[0])} alone → {fmt_pct(g.test_acc.iloc[-1])} on test with 3 members" in greedy_sec
    best = t.pairs.sort_values("gain_vs_best").iloc[-1]
    assert fmt_pp(best.gain_vs_best) in html.split('id="ensembles"')[1].split("</section>")[0]


def test_findings_text_has_numbers(built):
    _, _, t = built
    row = t.findings[(t.findings.claim == 1) & (t.findings.scope == "all")].iloc[0]
    assert "Holds" in row.text and "+0.900" in row.text and "+0.700 to +1.000" in row.text
    row = t.findings[(t.findings.claim == 5) & (t.findings.scope == "all")].iloc[0]
    assert row.verdict == "inconclusive" and "+1.67 pp" in row.text


def test_missing_optional_section_says_why(tmp_path):
    from report_fixture import make_tables

    t = make_tables()
    t.transfer = None
    t.missing["transfer"] = "no downstream dataset configured"
    t.angles = t.class_specialization = t.group_specialization = t.feature_combination = t.dims_curve = None
    html = build_report(t, tmp_path).read_text()
    sec = html.split('id="transfer"')[1].split("</section>")[0]
    assert "no downstream dataset configured" in sec
    for sid in ("angles", "specialization", "features"):
        assert "Not available in this run" in html.split(f'id="{sid}"')[1].split("</section>")[0]
    assert html.count("data:image/png;base64,") == 3


def test_bad_table_names_the_columns(tmp_path):
    from report_fixture import make_tables

    t = make_tables()
    t.pairs = t.pairs.drop(columns=["conversion_rate"])
    with pytest.raises(DivergentError, match="conversion_rate"):
        build_report(t, tmp_path)


def test_table1_and_category_summary_written_from_the_pairs(built):
    # recomputed by hand from the fixture's pairs table (every pair has the base as model_a, one per category)
    out, _, t = built
    cs = pd.read_parquet(out / "tables" / "category_summary.parquet")
    assert list(cs.category) == ["reinit", "hyperparameters", "architecture", "framework", "dataset"]  # paper order
    pairs = t.pairs.set_index("category")
    cols = ["error_inconsistency", "both_correct", "both_wrong", "ensemble_acc", "gain_vs_best", "conversion_rate"]
    for r in cs.itertuples():
        assert r.n_pairs == 1
        assert [getattr(r, c) for c in cols] == [pairs.loc[r.category, c] for c in cols], r.category
    t1 = pd.read_parquet(out / "tables" / "table1.parquet")
    # base first, then the paper's category order (one model each here)
    assert list(t1.model) == ["cnn-base", "cnn-seed1", "cnn-drop", "mlp", "simclr", "effnet-lite0"]
    by = t1.set_index("model")
    assert by.loc["cnn-base", ["error_inconsistency", "ensemble_acc"]].isna().all()
    for r in t.pairs.itertuples():
        assert by.loc[r.model_b, "error_inconsistency"] == r.error_inconsistency
        assert by.loc[r.model_b, "ensemble_acc"] == r.ensemble_acc
    # accuracy band (0.84, 0.92) of the fixture: only effnet-lite0 (81.2 %) lies outside
    assert [m for m in t1.model if not by.loc[m, "in_band"]] == ["effnet-lite0"]
    assert list(by.temperature) == [1.10, 1.05, 0.95, 1.20, 0.80, 0.70]


def test_category_summary_and_table1_orient_and_average_pairs():
    # base "B"; two reinit pairs (one stored as (r2, B)), one architecture pair, and a pair without
    # the base that must not count; by hand: reinit = mean of two pairs, architecture = its one pair
    from divergent.report.build import base_pairs, category_summary, table1

    cols = ["error_inconsistency", "both_correct", "both_wrong", "ensemble_acc", "gain_vs_best", "conversion_rate"]
    rows = [("B", "r1", "reinit", 0.90, 0.88, [0.10, 0.80, 0.06, 0.91, 0.01, 0.60]),
            ("r2", "B", "reinit", 0.86, 0.90, [0.20, 0.76, 0.04, 0.93, 0.03, 0.70]),
            ("B", "a1", "architecture", 0.90, 0.70, [0.30, 0.65, 0.05, 0.92, 0.02, 0.80]),
            ("r1", "r2", "reinit", 0.88, 0.86, [0.90, 0.05, 0.05, 0.10, -0.5, 0.10])]
    pairs = pd.DataFrame([dict(model_a=a, model_b=b, category=c, acc_a=x, acc_b=y, **dict(zip(cols, v)))
                          for a, b, c, x, y, v in rows])
    bp = base_pairs(pairs, "B")
    assert sorted(bp.model_b) == ["a1", "r1", "r2"] and (bp.model_a == "B").all()
    assert (bp.acc_a == 0.90).all()                               # the flipped pair's accuracies swap too
    assert bp.set_index("model_b").loc["r2", "acc_b"] == 0.86
    cs = category_summary(bp).set_index("category")
    assert list(cs.index) == ["reinit", "architecture"] and list(cs.n_pairs) == [2, 1]
    for i, c in enumerate(cols):
        assert cs.loc["reinit", c] == pytest.approx((rows[0][5][i] + rows[1][5][i]) / 2, abs=1e-15), c
        assert cs.loc["architecture", c] == rows[2][5][i], c
    models = pd.DataFrame({"model": ["a1", "r2", "B", "r1"], "method": "m", "head": "h", "temperature": 1.0,
                           "accuracy": [0.70, 0.86, 0.90, 0.88],
                           "category": ["architecture", "reinit", "base", "reinit"]})
    t1 = table1(models, bp, "B", band=(0.86, 0.88))  # inclusive: r2 and r1 sit on its ends
    assert list(t1.model) == ["B", "r1", "r2", "a1"]                # base, then reinit by accuracy, then arch
    assert list(t1.error_inconsistency.fillna(-1)) == [-1, 0.10, 0.20, 0.30]
    assert list(t1.ensemble_acc.fillna(-1)) == [-1, 0.91, 0.93, 0.92]
    assert list(t1.in_band) == [False, True, True, False]
