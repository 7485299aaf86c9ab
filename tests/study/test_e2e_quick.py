"""End to end, like a user: the quick preset from scratch, then the report's contents checked
against its tables, then a rerun that does nothing."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from divergent.report import SECTIONS
from divergent.report.html import fmt_pct


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path, fmnist_dir):
    from divergent.study import run_study

    out = tmp_path / "study"
    s = run_study("fashion-mnist-quick", out, progress=False, echo=None)
    assert s.ok, s.failed
    html = (out / "report.html").read_text()
    # every section present; the core sections have their figure
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in html
    for sid in ("errors", "ensembles", "angles", "specialization", "greedy", "features", "models", "findings"):
        sec = html.split(f'id="{sid}"')[1].split("</section>")[0]
        assert "Not available" not in sec, sid
    assert html.count("data:image/png;base64,") >= 6
    # numbers in the HTML equal the tables
    t1 = pd.read_parquet(out / "tables" / "table1.parquet")
    models_sec = html.split('id="models"')[1].split("</section>")[0]
    for r in t1.itertuples():
        assert f">{fmt_pct(r.accuracy)}<" in models_sec
        if r.category != "base":
            assert f">{fmt_pct(r.error_inconsistency)}<" in models_sec
    f = pd.read_parquet(out / "tables" / "findings.parquet")
    assert set(f["claim"]) == {1, 2, 3, 4, 5} and set(f["scope"]) == {"all", "band"}
    assert set(f["verdict"]) <= {"holds", "contradicted", "inconclusive"}
    for r in f.itertuples():
        assert r.text.replace("'", "&#x27;") in html
    # every table is also CSV
    for p in (out / "tables").glob("*.parquet"):
        assert p.with_suffix(".csv").exists()
    assert (out / "study.resolved.toml").exists() and (out / "study.log").exists()
    # the real report renders in a headless browser (when Debian chromium is installed)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
    from test_browser import CHROMIUM, MIN_TEXT_PX, check_in_browser, check_report_tables, figure_text_px

    check_report_tables(out)  # band findings name in-band models only; Fig. 2's caption equals the pairs table
    if CHROMIUM is not None:
        check_in_browser(out / "report.html", tmp_path, n_figures=html.count("data:image/png;base64,"))
        px = figure_text_px(out / "report.html", tmp_path)
        assert min(px.values()) >= MIN_TEXT_PX, px
    # a rerun does nothing
    s2 = run_study("fashion-mnist-quick", out, progress=False, echo=None)
    assert s2.ran == [] and s2.ok
