"""The report's sections on distribution shift and representation similarity.

Renders the tables of the study's shift and similarity units (divergent.study.shift_stages:
shift_pairs, shift_categories, shift_findings, lines_*, cka, cka_relation) with their figures
(divergent.report.figures_shift); computes no statistics. build_report calls :func:`render`;
every table shown is also written to OUT/tables/.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import html as H
from . import style
from .figures import save_figure
from .figures_shift import fig_cka, fig_lines, fig_shift_categories, split_order

SECTIONS = [
    ("shift", "11. Distribution shift: pair metrics and accuracy on the line"),
    ("similarity", "12. Representation similarity (linear CKA)"),
]
#: the tables this module renders, in the order they are written
TABLES = ("shift_pairs", "shift_categories", "shift_findings", "lines_estimates", "lines_lines", "lines_categories",
          "lines_errors", "lines_warnings", "cka", "cka_relation")
NO_SHIFTS = "no shifted splits were configured (set analysis.shifts, e.g. [\"gaussian_noise:3\"]; docs/shift.md)"
_PCT = ("error_inconsistency", "gain_vs_best", "conversion_rate", "acc_id", "acc_true", "aline_s", "aline_d", "atc",
        "mae", "max_abs_error")


def _fig(make, out: Path, stem: str, caption: str) -> str:
    res = save_figure(make(), Path(out) / "figures" / stem)
    return H.figure_html(res["png"], alt=caption, caption=H.esc(caption), stem=stem)


def _wide_categories(cats: pd.DataFrame) -> pd.DataFrame:
    """Category means per split, one row per (split, category), one column per metric."""
    want = [m for m in ("error_inconsistency", "gain_vs_best", "conversion_rate") if m in set(cats["metric"])]
    c = cats[cats["metric"].isin(want)]
    w = c.pivot_table(index=["split", "category", "n_pairs"], columns="metric", values="mean", aggfunc="first")
    w = w.reset_index()[["split", "category", "n_pairs", *want]]
    order = {s: i for i, s in enumerate(split_order(w["split"]))}
    rank = {c: i for i, c in enumerate(style.category_order(w["category"]))}
    w = w.sort_values(["split", "category"], key=lambda s: s.map(order) if s.name == "split" else s.map(rank))
    w["category"] = w["category"].map(style.label)
    return w.reset_index(drop=True)


def _shift_section(t: dict, out: Path) -> str:
    f, cats = t.get("shift_findings"), t.get("shift_categories")
    parts = []
    if cats is not None and len(cats):
        splits = split_order(cats["split"])
        parts.append(f"<p>The base's pairs on the evaluated split and on {len(splits) - 1} shifted cop"
                     f"{'y' if len(splits) == 2 else 'ies'} of it ({H.esc(', '.join(s for s in splits if '~' in s))}): "
                     "the same examples and labels, corrupted before each model's preprocessing; temperatures are "
                     "the in-distribution ones. Does the paper's ordering (Reinit &lt; Hyper-parameters &lt; "
                     "Architecture &lt; Framework &lt; Dataset) persist under shift?</p>")
    if f is not None and len(f):
        items = "".join(f'<li class="{H.esc(r.verdict)}">{H.esc(r.text)}</li>' for r in f.itertuples())
        parts.append(f"<ul>{items}</ul>")
    if cats is not None and len(cats):
        parts.append(_fig(lambda: fig_shift_categories(cats), out, "fig_shift_categories",
                          "Mean error inconsistency, ensemble gain and conversion rate of the base's pairs by category, "
                          "on the evaluated split (ID) and each shifted split, with 95% shared-resample intervals."))
        parts.append(H.table_html(_wide_categories(cats), formats={c: H.fmt_pct for c in _PCT},
                                  left=("split", "category")))
    if f is not None and len(f):
        cols = ["split", "statistic", "estimate", "lo", "hi", "verdict", "n_pairs"]
        parts.append(H.table_html(f[cols], formats={c: (lambda v: H.fmt_num(v, 3)) for c in ("estimate", "lo", "hi")},
                                  row_class="verdict", left=("split", "statistic", "verdict")))
    est, err, lines_ = t.get("lines_estimates"), t.get("lines_errors"), t.get("lines_lines")
    if est is not None and len(est):
        parts.append("<h3>Accuracy and agreement on the line</h3><p>Each model's shifted accuracy estimated without "
                     "shifted labels (ALine-S, ALine-D from the agreement of pairs; ATC from calibrated confidence "
                     "with a threshold fitted on the holdout), scored against the true shifted accuracy; "
                     "<code>id_accuracy</code> is the naive estimate (no change).</p>")
        parts.append(_fig(lambda: fig_lines(est), out, "fig_shift_lines",
                          "Shifted vs in-distribution accuracy of every model (probit axes): true (dots) and the "
                          "ALine-D estimate (crosses)."))
        if err is not None and len(err):
            parts.append(H.table_html(err[["shifted_split", "method", "mae", "max_abs_error", "n_models", "lines_hold"]],
                                      formats={c: H.fmt_pct for c in _PCT}, left=("shifted_split", "method")))
        if lines_ is not None and len(lines_):
            cols = ["shifted_split", "line", "n_points", "slope", "slope_lo", "slope_hi", "bias", "bias_lo", "bias_hi",
                    "r2", "lines_hold"]
            parts.append(H.table_html(lines_[cols], formats={c: (lambda v: H.fmt_num(v, 3)) for c in cols[3:-1]},
                                      left=("shifted_split", "line")))
        w = t.get("lines_warnings")
        if w is not None and len(w):
            parts.append("<p><b>Where the lines do not hold</b> (ALine's estimates are unreliable there): "
                         + H.esc("; ".join(w["warning"].astype(str))) + "</p>")
    return "".join(parts) + H.files_html([n for n in TABLES[:8] if t.get(n) is not None])


def _similarity_section(t: dict, out: Path, base: str | None) -> str:
    cka, rel = t.get("cka"), t.get("cka_relation")
    parts = []
    if rel is not None and len(rel):
        r = rel.iloc[0]
        parts.append(f"<p>Linear CKA (Kornblith et al. 2019) between the embeddings of every pair of models on "
                     f"'{H.esc(r['split'])}', exact and streamed over the examples. Do similar representations make "
                     f"similar errors? Over {int(r['n_pairs'])} pairs, the Spearman correlation between CKA and error "
                     f"inconsistency is {H.fmt_num(r['estimate'], 3)} (95% CI {H.fmt_num(r['lo'], 3)} to "
                     f"{H.fmt_num(r['hi'], 3)}, {int(r['n_boot'])} example resamples shared by both quantities); "
                     "negative: the more similar two representations, the fewer examples exactly one model gets right.</p>")
    parts.append(_fig(lambda: fig_cka(cka, base), out, "fig_cka",
                      "Left: linear CKA of every pair, models ordered by category relative to the base (label colour). "
                      "Right: CKA against error inconsistency, one point per pair, coloured by the pair's category."))
    shown = cka
    if base is not None:
        shown = cka[(cka["model_a"] == base) | (cka["model_b"] == base)].copy()
        shown["model"] = [b if a == base else a for a, b in zip(shown["model_a"], shown["model_b"])]
        shown["category"] = shown["category_to_base"] if "category_to_base" in shown else shown["category"]
        rank = {c: i for i, c in enumerate(style.category_order(shown["category"]))}
        shown = shown.sort_values(["category", "cka"], key=lambda s: s.map(rank) if s.name == "category" else -s)
        shown = shown[["model", "category", "cka", "cka_lo", "cka_hi", "error_inconsistency"]]
        parts.append(f"<p>The base (<b>{H.esc(base)}</b>) against every model:</p>")
    parts.append(H.table_html(shown.reset_index(drop=True),
                              formats={**{c: (lambda v: H.fmt_num(v, 3)) for c in ("cka", "cka_lo", "cka_hi")},
                                       "error_inconsistency": H.fmt_pct}, left=("model", "model_a", "model_b", "category")))
    return "".join(parts) + H.files_html(["cka", "cka_relation"])


def render(tables: dict | None, out, base: str | None = None) -> tuple[dict[str, str], dict[str, pd.DataFrame]]:
    """The HTML of the shift and similarity sections (section id -> body) and the tables to write."""
    out = Path(out)
    if tables is None:
        return {sid: H.missing_html(NO_SHIFTS) for sid, _ in SECTIONS}, {}
    t = {k: v for k, v in tables.items() if v is not None}
    bodies = {}
    if t.get("shift_categories") is not None or t.get("lines_estimates") is not None:
        bodies["shift"] = _shift_section(t, out)
    else:
        bodies["shift"] = H.missing_html("the shift units did not finish (see study.log)")
    cka = t.get("cka")
    if cka is not None and len(cka) and np.isfinite(cka["cka"].astype(float)).any():
        bodies["similarity"] = _similarity_section(t, out, base)
    else:
        bodies["similarity"] = H.missing_html("fewer than two models have embeddings, or the CKA unit did not finish")
    return bodies, {k: t[k] for k in TABLES if k in t}
