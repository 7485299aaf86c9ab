"""Build OUT/report.html, OUT/figures/*.{svg,png} and OUT/tables/*.{csv,parquet} from ReportTables."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as F
from . import gallery as G
from . import html as H
from . import shift as SHIFT
from . import style
from .tables import ReportTables, write_tables

SECTIONS = [
    ("errors", "1. Error inconsistency by category (Figs. 1 and 8)"),
    ("ensembles", "2. Ensembles vs error inconsistency (Fig. 2)"),
    ("angles", "3. Confidence-confidence angles (Fig. 3)"),
    ("specialization", "4. Per-class specialization (Fig. 4)"),
    ("greedy", "5. Greedy ensembles with lower-accuracy models (Fig. 5)"),
    ("features", "6. Feature combination (Fig. 6)"),
    ("transfer", "7. Downstream transfer (Fig. 7)"),
    ("models", "8. The model table (Appendix Table 1)"),
    ("findings", "9. Findings: the paper's five claims"),
    ("gallery", "10. Galleries: where only one model is right"),
]


# ---------- derived tables (pure functions; every number in the text comes from one of these)

def base_pairs(pairs: pd.DataFrame, base: str) -> pd.DataFrame:
    """Rows of the pairs table that involve the base, oriented so model_a is the base."""
    a = pairs[pairs["model_a"] == base]
    b = pairs[(pairs["model_b"] == base) & (pairs["model_a"] != base)].copy()
    if len(b):
        ren = {"model_a": "model_b", "model_b": "model_a", "acc_a": "acc_b", "acc_b": "acc_a"}
        for s in ("_lo", "_hi"):
            ren.update({f"acc_a{s}": f"acc_b{s}", f"acc_b{s}": f"acc_a{s}"})
        b = b.rename(columns=ren)
    return pd.concat([a, b], ignore_index=True)


def category_summary(bp: pd.DataFrame) -> pd.DataFrame:
    cats = style.category_order(bp["category"])
    rows = []
    for c in cats:
        s = bp[bp["category"] == c]
        rows.append(dict(category=c, n_pairs=len(s),
                         error_inconsistency=s["error_inconsistency"].mean(),
                         both_correct=s["both_correct"].mean(), both_wrong=s["both_wrong"].mean(),
                         ensemble_acc=s["ensemble_acc"].mean(), gain_vs_best=s["gain_vs_best"].mean(),
                         conversion_rate=s["conversion_rate"].mean()))
    return pd.DataFrame(rows)


def table1(models: pd.DataFrame, bp: pd.DataFrame, base: str, band=None) -> pd.DataFrame:
    """Appendix Table 1 (written as tables/table1): the models table's method, head, temperature,
    accuracy and category, with error inconsistency and ensemble accuracy with the base."""
    t = models.copy()
    j = bp.set_index("model_b")[["error_inconsistency", "ensemble_acc"]]
    t["error_inconsistency"] = t["model"].map(j["error_inconsistency"])
    t["ensemble_acc"] = t["model"].map(j["ensemble_acc"])
    if band is not None:
        t["in_band"] = t["accuracy"].between(band[0], band[1])
    order = {c: i for i, c in enumerate(["base", *style.category_order(t.loc[t["category"] != "base", "category"])])}
    t = t.sort_values(["category", "accuracy"], key=lambda s: s.map(order) if s.name == "category" else -s)
    cols = ["model", "method", "head", "temperature", "accuracy", "error_inconsistency", "ensemble_acc", "category"]
    cols += [c for c in ("in_band",) if c in t]
    return t[cols].reset_index(drop=True)


def angle_summary(angles: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (mb, cat), s in angles.groupby(["model_b", "category"], sort=False):
        a = s.loc[s["outcome"] == "only_a", "phi"]
        b = s.loc[s["outcome"] == "only_b", "phi"]
        rows.append(dict(model_b=mb, category=cat, n=len(s), n_only_a=len(a), n_only_b=len(b),
                         mean_phi_only_a=a.mean(), mean_phi_only_b=b.mean(),
                         separation=a.mean() - b.mean()))
    return pd.DataFrame(rows)


def default_target(dims: pd.DataFrame) -> float:
    """The highest accuracy every diversity-ranked curve reaches (so dims-to-target is defined for all)."""
    return float(dims.groupby("model_b")["accuracy"].max().min())


def dims_to_target(dims: pd.DataFrame, target: float) -> pd.DataFrame:
    rows = []
    for (mb, cat), s in dims.groupby(["model_b", "category"], sort=False):
        s = s.sort_values("n_dims")
        hit = s[s["accuracy"] >= target - 1e-12]
        rows.append(dict(model_b=mb, category=cat, target=target,
                         dims_to_target=int(hit["n_dims"].iloc[0]) if len(hit) else np.nan,
                         reached=bool(len(hit)), max_accuracy=s["accuracy"].max(), max_dims=int(s["n_dims"].max())))
    return pd.DataFrame(rows)


# ---------- sections

def _pct_cols(*cols):
    return {c: H.fmt_pct for c in cols}


def _fig2_caption(fit: dict, band) -> str:
    """Fig. 2's caption, with the numbers of its line (from the pairs table, F.band_fit)."""
    who = "pairs whose members both lie in the accuracy band" if band else "pairs"
    line = (f"dashed: OLS fit over the {fit['n']} {who} (slope {H.fmt_num(fit['slope'], 3)} in the left panel)"
            if math.isfinite(fit["slope"]) else f"no line: too few {who} ({fit['n']})")
    return ("Ensemble gain over the members' mean (claim 2's statistic), gain over the better member and conversion "
            "rate against error inconsistency, one point per pair with the base, coloured by category; hollow: a "
            f"member outside the accuracy band; {line}.")


def _sec_errors(t: ReportTables, d: dict, figs: dict) -> str:
    cs = d["category_summary"]
    parts = [f"{style.label(r.category)}: {H.fmt_pct(r.error_inconsistency)} (n={r.n_pairs})" for r in cs.itertuples()]
    text = (f"<p>Error inconsistency is the share of test examples where exactly one of the base "
            f"(<b>{H.esc(t.base)}</b>) and the other model is right. Mean by category, in the paper's order: "
            f"{H.esc('; '.join(parts))}.</p>")
    return text + figs["fig1_errors"] + H.table_html(
        cs, formats={**_pct_cols("error_inconsistency", "both_correct", "both_wrong", "ensemble_acc",
                                 "conversion_rate"), "gain_vs_best": H.fmt_pp}, left=("category",)
    ) + H.files_html(["category_summary", "pairs"])


def _sec_ensembles(t: ReportTables, d: dict, figs: dict) -> str:
    bp = d["base_pairs"]
    best = bp.sort_values("gain_vs_best", ascending=False).iloc[0]
    fit = d["fig2_fit"]
    who = "pairs whose members both lie in the accuracy band" if t.meta.get("acc_band") else "pairs"
    line = (f" Dashed line in the left panel: OLS of the gain over the members' mean on error inconsistency over "
            f"the {fit['n']} {who}, slope {H.fmt_num(fit['slope'], 3)}."
            if math.isfinite(fit["slope"]) else
            f" Too few {who} ({fit['n']}) for a line.")
    verdicts = [f"{H.SCOPE_TEXT.get(r['scope'], r['scope'])}: {r['verdict']}, slope {H.fmt_num(r['estimate'], 3)} "
                f"(95% CI {H.fmt_num(r['lo'], 3)} to {H.fmt_num(r['hi'], 3)})"
                if math.isfinite(r["estimate"]) else f"{H.SCOPE_TEXT.get(r['scope'], r['scope'])}: {r['verdict']}"
                for r in d.get("claim2", [])]
    slope = line + (f" Claim 2 in the findings (section 9): {'; '.join(verdicts)}." if verdicts else "")
    text = (f"<p>Each point is the base ensembled with one model (mean of calibrated probabilities); the left "
            f"panel plots claim 2's statistic, the ensemble's gain over its members' mean accuracy. "
            f"Largest gain over the better member: <b>{H.esc(best['model_b'])}</b> ({H.esc(style.label(best['category']))}), "
            f"ensemble accuracy {H.fmt_pct(best['ensemble_acc'])} vs {H.fmt_pct(best['acc_a'])} (base) and "
            f"{H.fmt_pct(best['acc_b'])}, a gain of {H.fmt_pp(best['gain_vs_best'])}; conversion rate "
            f"{H.fmt_pct(best['conversion_rate'])}.{slope}</p>")
    return text + figs["fig2_ensembles"] + H.files_html(["pairs"])


def _sec_angles(t: ReportTables, d: dict, figs: dict) -> str:
    s = d["angle_summary"]
    parts = [f"{style.label(r.category)} ({r.model_b}): separation {H.fmt_num(r.separation, 2)}° "
             f"(mean φ {H.fmt_num(r.mean_phi_only_a, 2)}° where only the base is right, "
             f"{H.fmt_num(r.mean_phi_only_b, 2)}° where only the other is right)" for r in s.itertuples()]
    text = ("<p>φ = atan2(confidence of the base, confidence of the other model), each model's calibrated "
            "probability of its own top-1 class; φ above 45° means the base is more confident. "
            f"{H.esc('; '.join(parts))}.</p>")
    return text + figs["fig3_angles"] + H.table_html(
        s, formats={c: (lambda v: H.fmt_num(v, 2)) for c in ("mean_phi_only_a", "mean_phi_only_b", "separation")},
        left=("model_b", "category")) + H.files_html(["angle_summary", "angle_histograms", "angles"])


def _sec_spec(t: ReportTables, d: dict, figs: dict) -> str:
    body = ("<p>Per class, the specialization separation is the mean φ where only the base is right minus the "
            "mean φ where only the other model is right (degrees; positive: each model is more confident where "
            "it alone is right).</p>") + figs["fig4_specialization"]
    if t.group_specialization is not None and len(t.group_specialization):
        g = t.group_specialization
        parts = [f"{r.model_b} on {r.group}: {H.fmt_num(r.specialization, 2)}° "
                 f"(95% CI {H.fmt_num(r.specialization_lo, 2)} to {H.fmt_num(r.specialization_hi, 2)})"
                 for r in g.itertuples()]
        body += f"<p>Class groups: {H.esc('; '.join(parts))}.</p>"
        body += H.table_html(g, formats={c: (lambda v: H.fmt_num(v, 2)) for c in g.columns
                                         if c.startswith("specialization")}, left=("model_b", "category", "group"))
    return body + H.files_html([n for n in ("class_specialization", "group_specialization")
                                if getattr(t, n) is not None])


def _sec_greedy(t: ReportTables, d: dict, figs: dict) -> str:
    g = t.greedy
    parts = []
    for base, s in g.groupby("base", sort=True):
        s = s.sort_values("size")
        first, best = s.iloc[0], s.loc[s["holdout_acc"].idxmax()]
        parts.append(f"{base}: {H.fmt_pct(first['test_acc'])} alone → {H.fmt_pct(best['test_acc'])} on test "
                     f"with {int(best['size'])} members (selected on holdout)")
    text = ("<p>Greedy forward selection from the base over a pool of strictly lower-accuracy models; members are "
            f"chosen on the holdout split, accuracy is reported on test. {H.esc('; '.join(parts))}.</p>")
    return text + figs["fig5_greedy"] + H.table_html(
        g, formats=_pct_cols("holdout_acc", "test_acc"), left=("base", "added", "category")) + H.files_html(["greedy"])


def _sec_features(t: ReportTables, d: dict, figs: dict) -> str:
    body = figs["fig6_features"]
    if "dims_to_target" in d:
        dt = d["dims_to_target"]
        parts = [f"{r.model_b} ({style.label(r.category)}): "
                 + (f"{int(r.dims_to_target)} dims" if r.reached else f"not reached within {r.max_dims} dims")
                 for r in dt.itertuples()]
        body = (f"<p>Dimensions of the base + other embedding needed for a linear probe to reach {H.fmt_pct(d['target'])} "
                f"test accuracy (by default the base model's own accuracy), most diverse dimensions first: "
                f"{H.esc('; '.join(parts))}.</p>") + body
        body += H.table_html(dt, formats=_pct_cols("target", "max_accuracy") | {"dims_to_target": lambda v: "not reached" if not np.isfinite(v) else str(int(v))},
                             left=("model_b", "category"))
    if t.feature_combination is not None and len(t.feature_combination):
        fc = t.feature_combination.groupby(["model_b", "category", "fraction_a"], as_index=False)["accuracy"].mean()
        bests = fc.loc[fc.groupby("model_b")["accuracy"].idxmax()]
        parts = [f"{r.model_b}: best {H.fmt_pct(r.accuracy)} at {H.fmt_pct(r.fraction_a, 0)} from the base"
                 for r in bests.itertuples()]
        body = f"<p>Random-subset combination at a fixed dimension budget: {H.esc('; '.join(parts))}.</p>" + body
    return body + H.files_html([n for n in ("feature_combination", "dims_curve", "dims_to_target")
                                if getattr(t, n, None) is not None or n in d])


def _sec_transfer(t: ReportTables, d: dict, figs: dict) -> str:
    tr = t.transfer
    parts = []
    for task, s in tr.groupby("task", sort=False):
        bs = s[s["kind"] == "single"].sort_values("score").iloc[-1] if (s["kind"] == "single").any() else None
        bk = s[s["kind"] == "stacked"].sort_values("score").iloc[-1] if (s["kind"] == "stacked").any() else None
        p = f"{task} ({style.metric_label(s['metric'].iloc[0])}):"
        if bs is not None:
            p += f" best single {bs['embedding']} {H.fmt_pct(bs['score'])}"
        if bk is not None:
            p += f", best stacked {bk['embedding']} {H.fmt_pct(bk['score'])}"
        parts.append(p)
    text = ("<p>Linear evaluation on a downstream dataset never seen upstream, of single embeddings and of "
            "pairwise concatenations (stacked generalisation); single-label tasks report top-1 accuracy, "
            "multi-label tasks (mosaics) the VOC 2007 11-point mean average precision. "
            f"{H.esc('; '.join(parts))}.</p>")
    fm = _pct_cols("score", "score_lo", "score_hi", "holdout_score", "upstream_acc")
    if "lam" in tr:
        fm["lam"] = lambda v: H.fmt_value(v, 2)
    edge = tr[tr["lam_edge"].fillna("").astype(str) != ""] if "lam_edge" in tr else tr.iloc[:0]
    if len(edge):
        ends = sorted(set(edge["lam_edge"]))
        text += (f'<p class="missing">The selected λ is the {" or ".join(map(H.esc, ends))} value of the grid for '
                 f"{len(edge)} of {len(tr)} probes (column lam_edge): the optimum may lie beyond the grid; "
                 f"widen it (analysis.probe_grid).</p>")
    return text + figs["fig7_transfer"] + H.table_html(tr, formats=fm, left=("embedding", "kind", "task", "metric")) \
        + H.files_html(["transfer"])


def _sec_models(t: ReportTables, d: dict, figs: dict) -> str:
    t1 = d["table1"]
    return ("<p>Every model of the zoo: training method, prediction head, calibration temperature (fitted on the "
            "holdout), test accuracy, error inconsistency and ensemble accuracy with the base, and category "
            "relative to the base.</p>"
            + H.table_html(t1, formats={"temperature": lambda v: H.fmt_num(v, 3), "accuracy": H.fmt_pct,
                                        "error_inconsistency": H.fmt_pct, "ensemble_acc": H.fmt_pct},
                           left=("model", "method", "head", "category")) + H.files_html(["table1", "models"]))


def _sec_findings(t: ReportTables, d: dict, figs: dict) -> str:
    f = t.findings
    band = t.meta.get("acc_band")
    band_txt = (f" The accuracy band is {H.fmt_pct(band[0])} to {H.fmt_pct(band[1])} test accuracy." if band else "")
    intro = ("<p>Each claim is a statistic fixed before the run, with a 95% bootstrap interval from one shared set "
             "of test-example resamples (column interval: BCa for the rank correlation of claim 1, a bounded, "
             "discrete statistic; percentile for the others). <b>holds</b>: the interval excludes zero in the "
             "paper's direction; <b>contradicted</b>: it excludes zero the other way; <b>inconclusive</b>: otherwise. "
             "A band statistic uses only the models in the band; with too few of them it says so."
             f"{band_txt}</p>")
    items = "".join(f'<li class="{H.esc(r.verdict)}"><b>Claim {r.claim}</b> ({H.esc(_claim_name(f, r.claim))}). '
                    f'{H.esc(r.text)}</li>' for r in f.itertuples())
    cols = [c for c in ("claim", "scope", "verdict", "estimate", "lo", "hi", "interval", "n", "statistic") if c in f]
    return intro + f"<ul>{items}</ul>" + H.table_html(
        f[cols], formats={c: (lambda v: H.fmt_num(v, 4)) for c in ("estimate", "lo", "hi")},
        row_class="verdict", left=("scope", "verdict", "statistic")) + H.files_html(["findings"])


BUILDERS = {
    "errors": (_sec_errors, None), "ensembles": (_sec_ensembles, None), "angles": (_sec_angles, "angles"),
    "specialization": (_sec_spec, "class_specialization"), "greedy": (_sec_greedy, "greedy"),
    "features": (_sec_features, None), "transfer": (_sec_transfer, "transfer"), "models": (_sec_models, None),
    "findings": (_sec_findings, "findings"),
    "gallery": (lambda t, d, figs: G.gallery_html(t.gallery, t.confusion_diff, d["out"], t.meta.get("gallery_note", "")),
                "gallery"),
}


def build_report(tables: ReportTables, out, *, title: str | None = None, target: float | None = None,
                 shift: dict | None = None) -> Path:
    """Write OUT/report.html with figures (SVG+PNG) and tables (CSV+Parquet); returns the report path.
    `shift`: the shift and similarity tables (divergent.report.shift); with None those two sections are left out."""
    out = Path(out)
    tables.validate()
    base = tables.base
    (out / "figures").mkdir(parents=True, exist_ok=True)
    d: dict = {"out": out}
    bp = base_pairs(tables.pairs, base)
    d["base_pairs"] = bp
    d["category_summary"] = category_summary(bp)
    d["table1"] = table1(tables.models, bp, base, tables.meta.get("acc_band"))
    if tables.angles is not None and len(tables.angles):
        d["angle_summary"] = angle_summary(tables.angles)
    if tables.dims_curve is not None and len(tables.dims_curve):
        if target is None:
            acc = tables.models.set_index("model")["accuracy"]
            target = float(acc[base]) if base in acc and np.isfinite(acc[base]) else default_target(tables.dims_curve)
        d["target"] = float(target)
        d["dims_to_target"] = dims_to_target(tables.dims_curve, d["target"])
    d["fig2_fit"] = F.band_fit(bp, tables.meta.get("acc_band"), "gain_vs_mean")
    if tables.findings is not None:
        c2 = tables.findings[tables.findings["claim"] == 2]
        d["claim2"] = [r for _, r in c2.iterrows()]
    if tables.angles is not None and len(tables.angles):
        d["angle_histograms"] = F.angle_histograms(tables.angles)

    figs: dict[str, str] = {}
    specs = {
        "fig1_errors": (lambda: F.fig_errors(bp), len(bp) > 0, "Error inconsistency, both correct and both wrong by category."),
        "fig2_ensembles": (lambda: F.fig_ensembles(bp, tables.meta.get("acc_band")), len(bp) > 0, _fig2_caption(d["fig2_fit"], tables.meta.get("acc_band"))),
        "fig3_angles": (lambda: F.fig_angles(tables.angles, base), tables.angles is not None and len(tables.angles) > 0, "For each representative pair, the distribution of φ within each outcome group (share of the group's examples per 3° bin; each group sums to 100%), so the groups compare whatever their sizes. Solid: only the base right (blue), only the other model right (vermillion); dashed: both right, both wrong. Specialization shows as the blue curve right of 45° and the vermillion curve left of it."),
        "fig4_specialization": (lambda: F.fig_specialization(tables.class_specialization, tables.group_specialization), tables.class_specialization is not None and len(tables.class_specialization) > 0, "Per-class specialization and class-group summary."),
        "fig5_greedy": (lambda: F.fig_greedy(tables.greedy), tables.greedy is not None and len(tables.greedy) > 0, "Greedy ensemble trajectory: test (solid) and holdout (dashed) accuracy; markers coloured by the added model's category."),
        "fig6_features": (lambda: F.fig_features(tables.feature_combination, tables.dims_curve, d.get("target")),
                          any(x is not None and len(x) for x in (tables.feature_combination, tables.dims_curve)),
                          "Feature combination at a fixed budget and diversity-ranked dimension curves."),
        "fig7_transfer": (lambda: F.fig_transfer(tables.transfer), tables.transfer is not None and len(tables.transfer) > 0, "Downstream scores of single and stacked embeddings."),
    }
    for stem, (make, ok, cap) in specs.items():
        if ok:
            res = F.save_figure(make(), out / "figures" / stem)
            figs[stem] = H.figure_html(res["png"], alt=f"{F.PAPER_FIG[stem]}: {cap}",
                                       caption=f"<b>{F.PAPER_FIG[stem]}.</b> {H.esc(cap)}", stem=stem)

    shift_bodies, shift_tables = SHIFT.render(shift, out, base)
    listed = SECTIONS + (SHIFT.SECTIONS if shift is not None else [])   # shift and similarity: with analysis.shifts
    sections = []
    for sid, title_ in listed:
        if sid in shift_bodies:
            sections.append(H.section(sid, title_, shift_bodies[sid]))
            continue
        fn, needs = BUILDERS[sid]
        if sid == "features" and "fig6_features" not in figs:
            needs = "feature_combination"
        if needs is not None and (getattr(tables, needs) is None or not len(getattr(tables, needs))):
            reason = tables.missing.get(sid, f"the {needs} table was not produced")
            sections.append(H.section(sid, title_, H.missing_html(reason)))
            continue
        sections.append(H.section(sid, title_, fn(tables, d, figs)))

    extra = {k: d[k] for k in ("category_summary", "table1", "angle_summary", "angle_histograms", "dims_to_target")
             if k in d}
    write_tables(tables, out, extra={**extra, **shift_tables})
    import json

    from .._files import atomic_write_text as _awt

    _awt(out / "tables" / "meta.json", json.dumps({**tables.meta, "base": base, "missing": tables.missing,
                                                   "dims_target": d.get("target")}, indent=1, default=list))
    meta = tables.meta
    meta_html = "<p class=\"meta\">" + H.esc(
        f"Base model: {base}. Dataset: {meta.get('dataset', 'n/a')}. Evaluated on split '{meta.get('split', 'test')}', "
        f"fitted/selected on '{meta.get('fit_on', 'holdout')}'. Models: {len(tables.models)}. "
        f"Generated by divergent {meta.get('version', '')} {meta.get('generated', '')}".strip()) + "</p>"
    if tables.findings is not None and len(tables.findings):
        f = tables.findings
        cells = []
        for c in sorted(f["claim"].unique()):
            sub = f[f["claim"] == c].set_index("scope")
            v = " / ".join(f'<span class="verdict {H.esc(sub.loc[sc, "verdict"])}">{H.esc(sub.loc[sc, "verdict"])}</span>'
                           f" ({H.esc(sc)})" for sc in sub.index)
            cells.append(f"<li>Claim {int(c)} ({H.esc(_claim_name(f, c))}): {v}</li>")
        meta_html += ('<div class="glance"><b>At a glance</b> (details in <a href="#findings">section 9</a>)'
                      f"<ul>{''.join(cells)}</ul></div>")
    doc = H.page(title or f"How differently-trained models differ: {meta.get('study', 'study')}", meta_html,
                 [(s, t) for s, t in listed], sections, footer=H.environment_footer(tables.environment))
    from .._files import atomic_write_text

    path = out / "report.html"
    atomic_write_text(path, doc)
    if tables.findings is not None:
        atomic_write_text(out / "findings.md", findings_markdown(tables.findings))
    return path


def _claim_name(f: pd.DataFrame, claim: int) -> str:
    """What a claim is, in a few words (the findings' claim_name; older tables: the paper's sentence)."""
    for col in ("claim_name", "paper"):
        if col in f:
            v = f.loc[f["claim"] == claim, col]
            if len(v) and isinstance(v.iloc[0], str) and v.iloc[0]:
                return v.iloc[0]
    return ""


def findings_markdown(f: pd.DataFrame) -> str:
    """The findings as a Markdown table (for a README), from the same rows as the HTML."""
    lines = ["| claim | scope | verdict | estimate | 95% CI |", "|---|---|---|---|---|"]
    for r in f.itertuples():
        ci = (f"{H.fmt_num(r.lo, 3)} to {H.fmt_num(r.hi, 3)}" if np.isfinite(r.lo) and np.isfinite(r.hi) else "n/a")
        lines.append(f"| {r.claim} | {r.scope} | **{r.verdict}** | {H.fmt_num(r.estimate, 3)} | {ci} |")
    return "\n".join(lines) + "\n"
