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
            assert f">{fmt_pct(r.error_inconsistency)}<" in models_sec  # a percentage, like its neighbours
            assert f">{fmt_pct(r.ensemble_acc)}<" in models_sec
    cs = pd.read_parquet(out / "tables" / "category_summary.parquet")
    err_sec = html.split('id="errors"')[1].split("</section>")[0]
    for r in cs.itertuples():
        assert f"{fmt_pct(r.error_inconsistency)} (n={r.n_pairs})" in err_sec
    # the reinit pair's error inconsistency 0.0512 appears as a percentage, as accuracy does
    assert ">5.12%<" in models_sec and ">0.0512<" not in models_sec
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


def test_caption_numbers_equal_the_tables(built):
    """Fig. 2's line and caption: OLS of gain over the members' mean on error inconsistency over the
    pairs whose members both lie in the band (recomputed here from the written pairs table); Fig. 3's
    histograms: each outcome group normalised within itself (recomputed with numpy)."""
    import numpy as np

    out, html, t = built
    pairs = pd.read_parquet(out / "tables" / "pairs.parquet")
    lo, hi = t.meta["acc_band"]
    inb = pairs[pairs.acc_a.between(lo, hi) & pairs.acc_b.between(lo, hi)]
    assert 0 < len(inb) < len(pairs)                         # the fixture has an out-of-band pair
    slope = np.polyfit(inb.error_inconsistency, inb.gain_vs_mean, 1)[0]
    slope_all = np.polyfit(pairs.error_inconsistency, pairs.gain_vs_mean, 1)[0]
    assert fmt_num(slope, 3) != fmt_num(slope_all, 3)
    sec = html.split('id="ensembles"')[1].split("</section>")[0]
    assert f"over the {len(inb)} pairs whose members both lie in the accuracy band (slope {fmt_num(slope, 3)}" in sec
    assert f"slope {fmt_num(slope, 3)}." in sec
    # the findings' claim-2 rows are quoted with their verdicts; the title carries no verdict
    for r in t.findings[t.findings.claim == 2].itertuples():
        assert f"{r.verdict}, slope {fmt_num(r.estimate, 3)}" in sec
    svg = (out / "figures" / "fig2_ensembles.svg").read_text()
    assert f"slope {slope:.3f}" in svg and "ensembles gain" not in svg and "decorrelate" not in svg
    h = pd.read_parquet(out / "tables" / "angle_histograms.parquet")
    for (m, oc), g in h.groupby(["model_b", "outcome"]):
        phi = t.angles[(t.angles.model_b == m) & (t.angles.outcome == oc)].phi.to_numpy()
        counts = np.histogram(phi, bins=np.r_[g["lo"].to_numpy(), g["hi"].iloc[-1]])[0]
        assert np.allclose(g["share"], 100 * counts / phi.size) and abs(g["share"].sum() - 100) < 1e-9


def test_too_few_in_band_pairs_draw_no_line(tmp_path):
    from report_fixture import make_tables

    t = make_tables()
    t.meta["acc_band"] = (0.895, 0.905)                      # only cnn-seed1 with the base
    html = build_report(t, tmp_path).read_text()
    sec = html.split('id="ensembles"')[1].split("</section>")[0]
    assert "no line: too few pairs whose members both lie in the accuracy band (1)" in sec
    assert "too few in-band pairs for a line (1)" in (tmp_path / "figures" / "fig2_ensembles.svg").read_text()


def test_findings_say_what_each_claim_is_without_repeating(built):
    _, html, t = built
    glance = html.split('class="glance"')[1].split("</div>")[0]
    find_sec = html.split('id="findings"')[1].split("</section>")[0]
    for c, name in t.findings.groupby("claim")["claim_name"].first().items():
        assert f"Claim {c} ({name})" in glance.replace("&#x27;", "'")
    assert "holds</span> (all)" in glance
    # each finding once: "Claim 1 (...). Holds all models: ...", not "Claim 1 holds (all): Holds all models"
    assert "Claim 1</b> (errors decorrelate as training diverges). Holds all models: over 5 pairs" in find_sec
    assert not re.search(r"Claim \d</b> <span[^>]*>\w+</span> \(\w+\): (Holds|Inconclusive|Contradicted)", find_sec)


def test_one_rule_for_numbers_in_tables():
    import numpy as np

    from divergent.report.tables import fmt_value, format_frame

    df = pd.DataFrame({"model": ["a", "b"], "seed": [15.0, np.nan], "depth": [0.0, 3.0],
                       "acc": [0.8123456, np.nan], "lam": [1e-5, 0.01], "n_only_a": [251, 3]})
    f = format_frame(df)
    assert list(f.seed) == ["15", ""] and list(f.depth) == ["0", "3"] and list(f.n_only_a) == ["251", "3"]
    assert list(f.acc) == ["0.8123", ""] and list(f.lam) == ["1.000e-05", "0.0100"]
    assert fmt_value(float("nan")) == "" and fmt_value(None) == "" and fmt_value(2.5e7) == "2.500e+07"
    assert fmt_value(251.0, 3, integer=True) == "251" and fmt_value(251.5, 3, integer=True) == "251.500"


def test_cli_tables_print_integers_and_blanks(capsys):
    import numpy as np

    from divergent.cli._output import show_table

    show_table(pd.DataFrame({"model": ["a", "b"], "seed": [15.0, np.nan], "depth": [0.0, np.nan],
                             "temperature": [1.25, 0.5]}))
    out = capsys.readouterr().out
    assert "15.0000" not in out and "0.0000" not in out and "NaN" not in out and "nan" not in out
    lines = out.splitlines()
    assert lines[1].split() == ["a", "15", "0", "1.2500"] and lines[2].split() == ["b", "0.5000"]


def test_transfer_lambda_in_scientific_notation_and_edge_flagged(tmp_path):
    from report_fixture import make_tables

    t = make_tables()
    t.transfer = t.transfer.assign(lam=[1e-5, 1e-5, 1e-4, 1e-3, 1e-5],
                                   lam_edge=["lowest", "lowest", "", "", "lowest"])
    html = build_report(t, tmp_path).read_text()
    sec = html.split('id="transfer"')[1].split("</section>")[0]
    assert ">1.0e-05<" in sec and ">0.0000<" not in sec
    assert "the lowest value of the grid for 3 of 5 probes" in sec
    # the flag as the transfer study writes it (probes.transfer.lam_edge over the values fitted)
    from divergent.probes.transfer import lam_edge

    grid = [1e-2, 1e-3, 1e-4, 1e-5]
    assert [lam_edge(v, grid) for v in (1e-5, 1e-3, 1e-2)] == ["lowest", "", "highest"]
    assert lam_edge(1e-4, [1e-4]) == ""


def test_model_tick_labels_are_distinct_and_never_silently_cut():
    """The CKA heatmap names models by the last part of their names; a long one is shortened in
    the middle with an ellipsis (both ends kept: '@96px' stays), and two models that share the
    last part keep their whole names."""
    from divergent.report.figures_shift import fig_cka
    from divergent.report.style import model_labels

    names = ["cifar10/cnn-base", "imagenet/efficientnet-lite1@96px", "inat-bird/mobilenet_v2_1.0_224_quant",
             "inat-insect/mobilenet_v2_1.0_224_quant", "imagenet/mobilenet_v1_1.0_224_embedding"]
    labs = model_labels(names)
    assert labs[:2] == ["cnn-base", "efficientnet-lite1@96px"]
    assert len(set(labs)) == len(names) and all(len(lab) <= 24 for lab in labs)
    for n, lab in zip(names, labs):
        head, cut, tail = lab.partition("…")
        assert n.endswith(tail) and head in n if cut else n.endswith(lab)
    assert labs[2].startswith("inat-bird/") and labs[3].startswith("inat-insect/")
    assert model_labels(["a/x", "b/x"]) == ["a/x", "b/x"]
    alike = ["p/" + "a" * 15 + "-one-" + "z" * 15, "p/" + "a" * 15 + "-two-" + "z" * 15]   # shortened alike
    assert model_labels(alike) == alike
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    cka = pd.DataFrame({"model_a": [a for a, _ in pairs], "model_b": [b for _, b in pairs],
                        "category": "dataset", "cka": 0.5})
    fig = fig_cka(cka)
    shown = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(shown) == sorted(labs)
