"""The report's figures (the paper's Figs. 1-8), each drawn from one table and saved as SVG and PNG."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from . import style

PAPER_FIG = {
    "fig1_errors": "Figs. 1 and 8", "fig2_ensembles": "Fig. 2", "fig3_angles": "Fig. 3",
    "fig4_specialization": "Fig. 4", "fig5_greedy": "Fig. 5", "fig6_features": "Fig. 6",
    "fig7_transfer": "Fig. 7",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _ctx():
    import matplotlib as mpl

    return mpl.rc_context(style.RC)


def save_figure(fig, stem: Path) -> dict[str, object]:
    """Write stem.svg and stem.png (deterministic metadata); return paths and the PNG bytes."""
    from .._files import atomic_write_bytes

    stem = Path(stem)
    out = {}
    for ext, meta in (("svg", {"Date": None, "Creator": "divergent"}), ("png", {"Software": "divergent"})):
        buf = io.BytesIO()
        with _ctx():  # the style's svg.fonttype: text stays text (selectable, measurable)
            fig.savefig(buf, format=ext, bbox_inches="tight", metadata=meta)
        atomic_write_bytes(stem.with_suffix(f".{ext}"), buf.getvalue())
        out[ext] = buf.getvalue()
    _plt().close(fig)
    return out


def _cats(df: pd.DataFrame) -> list[str]:
    return style.category_order(df["category"])


def _legend_for(ax, cats, **kw):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=style.color(c), label=style.label(c)) for c in cats]
    ax.legend(handles=handles, **kw)


def fig_errors(pairs: pd.DataFrame):
    """Figs. 1 and 8: error inconsistency, both correct, both wrong by category (pairs with the base)."""
    plt = _plt()
    cats = _cats(pairs)
    panels = [("error_inconsistency", "Error inconsistency\n(% of test examples, exactly one right)"),
              ("both_correct", "Both correct (% of test examples)"),
              ("both_wrong", "Both wrong (% of test examples)")]
    with _ctx():
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
        rng = np.random.default_rng(0)
        for ax, (col, ylab) in zip(axes, panels):
            for i, c in enumerate(cats):
                sub = pairs[pairs["category"] == c]
                y = 100 * sub[col].to_numpy(float)
                x = i + rng.uniform(-0.12, 0.12, size=len(y))
                if f"{col}_lo" in sub and f"{col}_hi" in sub:
                    lo = 100 * sub[f"{col}_lo"].to_numpy(float)
                    hi = 100 * sub[f"{col}_hi"].to_numpy(float)
                    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor=style.color(c), alpha=0.6, lw=0.8)
                ax.scatter(x, y, color=style.color(c), s=22, zorder=3, edgecolor="white", linewidth=0.4)
                if len(y):
                    ax.hlines(np.mean(y), i - 0.3, i + 0.3, color="black", lw=1.2, zorder=4)
            ax.set_xticks(range(len(cats)), [style.label(c) for c in cats], rotation=30, ha="right")
            ax.set_ylabel(ylab)
            ax.set_xlabel("Category of the pair (vs the base)")
        axes[0].set_title("Fig. 1: errors become uncorrelated")
        axes[1].set_title("Fig. 8: both correct")
        axes[2].set_title("Fig. 8: both wrong")
        fig.tight_layout()
    return fig


#: fewer in-band pairs than this: Fig. 2 says so instead of drawing a line (claim 2 needs as many)
MIN_LINE_PAIRS = 3


def in_band_pairs(pairs: pd.DataFrame, band: tuple[float, float] | None) -> np.ndarray:
    """Pairs whose members both lie in the accuracy band (all pairs without a band): the pairs
    Fig. 2's lines are fitted to, as the paper controls accuracy."""
    if band is None:
        return np.ones(len(pairs), bool)
    ok = pairs["acc_b"].astype(float).between(band[0], band[1])
    if "acc_a" in pairs:
        ok &= pairs["acc_a"].astype(float).between(band[0], band[1])
    return ok.to_numpy()


def band_fit(pairs: pd.DataFrame, band: tuple[float, float] | None, col: str = "gain_vs_mean") -> dict:
    """The OLS line of `col` on error inconsistency over the in-band pairs with a finite `col`:
    {'n', 'slope', 'intercept'} (slope and intercept NaN below MIN_LINE_PAIRS pairs or without spread).
    For col='gain_vs_mean' the slope is claim 2's statistic over the same pairs."""
    m = in_band_pairs(pairs, band)
    x = pairs["error_inconsistency"].to_numpy(float)[m]
    y = pairs[col].to_numpy(float)[m]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < MIN_LINE_PAIRS or np.ptp(x) == 0:
        return dict(n=int(len(x)), slope=float("nan"), intercept=float("nan"))
    b, a = np.polyfit(x, y, 1)
    return dict(n=int(len(x)), slope=float(b), intercept=float(a), x0=float(x.min()), x1=float(x.max()))


def fig_ensembles(pairs: pd.DataFrame, band: tuple[float, float] | None = None):
    """Fig. 2: ensemble gain over the members' mean (claim 2's statistic), gain over the better
    member and conversion rate against error inconsistency, one point per pair with the base.

    Accuracy is controlled as in the paper: pairs with a member outside the band are drawn hollow,
    and each panel's OLS line is fitted to the pairs whose members both lie in the band (with fewer
    than MIN_LINE_PAIRS of them the panel says so instead of drawing a line)."""
    plt = _plt()
    cats = _cats(pairs)
    inb = in_band_pairs(pairs, band)
    panels = [("gain_vs_mean", "Gain over the members' mean (pp)", "Gain over the members' mean"),
              ("gain_vs_best", "Gain over the better member (pp)", "Gain over the better member"),
              ("conversion_rate", "Conversion rate (% of inconsistent\nexamples the ensemble gets right)",
               "Conversion rate")]
    who = "in-band pairs" if band is not None else "all pairs"
    with _ctx():
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
        for ax, (col, ylab, title) in zip(axes, panels):
            for i, c in enumerate(cats):
                m = (pairs["category"] == c).to_numpy()
                x = 100 * pairs.loc[m, "error_inconsistency"].to_numpy(float)
                y = 100 * pairs.loc[m, col].to_numpy(float)
                ok = np.isfinite(y)
                ib = inb[m]
                mk = style.MARKERS[i % len(style.MARKERS)]
                ax.scatter(x[ok & ib], y[ok & ib], color=style.color(c), marker=mk, s=28, edgecolor="white",
                           linewidth=0.4, label=style.label(c), zorder=3)
                ax.scatter(x[ok & ~ib], y[ok & ~ib], facecolor="none", edgecolor=style.color(c), marker=mk, s=28,
                           linewidth=1.0, zorder=3)
            fit = band_fit(pairs, band, col)
            if np.isfinite(fit["slope"]):
                xs = np.linspace(fit["x0"], fit["x1"], 50)
                ax.plot(100 * xs, 100 * (fit["intercept"] + fit["slope"] * xs), color="black", lw=0.9, ls="--")
                note = f"OLS over {fit['n']} {who}: slope {fit['slope']:.3f}"
            else:
                note = f"too few {who} for a line ({fit['n']})"
            if col.startswith("gain"):
                ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("Error inconsistency with the base (%)")
            ax.set_ylabel(ylab)
            ax.set_title(f"{title}\n{note}", fontsize=9)
        handles = [h for h in axes[0].get_legend_handles_labels()[0]]
        if band is not None and (~inb).any():
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="black",
                                  label=f"a member outside the band ({100 * band[0]:.1f}-{100 * band[1]:.1f}%)"))
        fig.suptitle("Fig. 2: ensembles of the base with each model against error inconsistency", fontsize=10)
        fig.tight_layout()
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(handles)))
    return fig


OUTCOME_LABELS = {"only_a": "only the base right", "only_b": "only the other model right",
                  "both": "both right", "neither": "both wrong"}


#: Fig. 3's grid: panels per row (readable at the report's page width)
ANGLE_COLUMNS = 3


def angle_histograms(angles: pd.DataFrame, bins: np.ndarray | None = None) -> pd.DataFrame:
    """Fig. 3's numbers: for each representative pair and outcome group, the share of the group's
    examples (%) in each φ bin (each group sums to 100 %): model_b, category, outcome, n, lo, hi, share."""
    bins = np.linspace(0, 90, 31) if bins is None else bins
    rows = []
    for (mb, cat), sub in angles.groupby(["model_b", "category"], sort=False):
        for oc in OUTCOME_LABELS:
            v = sub.loc[sub["outcome"] == oc, "phi"].to_numpy(float)
            h = np.histogram(v, bins=bins)[0]
            share = 100.0 * h / v.size if v.size else np.full(len(h), np.nan)
            rows += [dict(model_b=mb, category=cat, outcome=oc, n=int(v.size), lo=float(a), hi=float(b),
                          share=float(x)) for a, b, x in zip(bins[:-1], bins[1:], share)]
    return pd.DataFrame(rows)


def fig_angles(angles: pd.DataFrame, base: str):
    """Fig. 3: for each representative pair, the distribution of φ = atan2(conf_base, conf_other)
    within each outcome group (share of the group's examples per bin, so every group sums to 100 %),
    as in the paper's Fig. 3; a grid of ANGLE_COLUMNS panels per row."""
    plt = _plt()
    pairs = angles.drop_duplicates("model_b")[["model_b", "category"]]
    order = {c: i for i, c in enumerate(style.category_order(pairs["category"]))}
    pairs = pairs.sort_values("category", key=lambda s: s.map(order))
    n = len(pairs)
    ncol = min(ANGLE_COLUMNS, n)
    nrow = -(-n // ncol)
    hist = angle_histograms(angles)
    with _ctx():
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.5 * ncol, 2.9 * nrow + 0.4), squeeze=False,
                                 sharex=True, sharey=True)
        for ax, (_, row) in zip(axes.ravel(), pairs.iterrows()):
            sub = hist[hist["model_b"] == row["model_b"]]
            for oc in OUTCOME_LABELS:
                g = sub[sub["outcome"] == oc]
                if not len(g) or g["n"].iloc[0] == 0:
                    continue
                edges = np.r_[g["lo"].to_numpy(), g["hi"].iloc[-1]]
                kw = (dict(lw=1.8) if oc in ("only_a", "only_b") else dict(lw=1.0, ls="--"))
                ax.stairs(g["share"].to_numpy(), edges, color=style.OUTCOME_COLORS[oc],
                          label=f"{OUTCOME_LABELS[oc]}", **kw)
            ax.axvline(45, color="black", lw=0.6, ls=":")
            ax.set_title(f"{style.label(row['category'])}: {str(row['model_b']).split('/')[-1]}", fontsize=9)
            ax.set_xlim(0, 90)
            ax.set_xticks([0, 15, 30, 45, 60, 75, 90])
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("φ (degrees; > 45°: base more confident)")
            ax.xaxis.set_tick_params(labelbottom=True)
        for ax in axes[:, 0]:
            ax.set_ylabel("Share of the group (%)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.suptitle(f"Fig. 3: distribution of φ within each outcome group (base: {base})", fontsize=10)
        fig.tight_layout()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    return fig


def fig_specialization(class_spec: pd.DataFrame, group_spec: pd.DataFrame | None):
    """Fig. 4: per-class specialization (degrees) for each representative pair, and class-group summary."""
    plt = _plt()
    cats = style.category_order(class_spec["category"])
    pairs = (class_spec.drop_duplicates("model_b")
             .assign(_o=lambda d: d["category"].map({c: i for i, c in enumerate(cats)}))
             .sort_values("_o"))
    classes = list(dict.fromkeys(class_spec.sort_values(["group", "class_name"])["class_name"]))
    ng = 2 if group_spec is not None and len(group_spec) else 1
    with _ctx():
        fig, axes = plt.subplots(1, ng, figsize=(11 if ng == 2 else 7.5, 4.6), squeeze=False,
                                 gridspec_kw={"width_ratios": [2.2, 1][:ng]})
        ax = axes[0][0]
        k = len(pairs)
        width = 0.8 / max(k, 1)
        for j, (_, pr) in enumerate(pairs.iterrows()):
            sub = class_spec[class_spec["model_b"] == pr["model_b"]].set_index("class_name").reindex(classes)
            x = np.arange(len(classes)) + (j - (k - 1) / 2) * width
            ax.bar(x, sub["specialization"].to_numpy(float), width=width, color=style.color(pr["category"]),
                   label=f"{style.label(pr['category'])}: {pr['model_b']}")
        groups = class_spec.drop_duplicates("class_name").set_index("class_name").reindex(classes)["group"]
        ax.set_xticks(range(len(classes)), [f"{c}\n[{g}]" for c, g in zip(classes, groups)], rotation=45,
                      ha="right", fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel("Specialization separation (degrees)\nφ only-base-right minus φ only-other-right")
        ax.set_title("Fig. 4: per-class specialization")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, fontsize=7)
        if ng == 2:
            ax2 = axes[0][1]
            gcats = group_spec.drop_duplicates("model_b")
            glist = sorted(group_spec["group"].unique())
            k2 = len(gcats)
            w2 = 0.8 / max(k2, 1)
            for j, (_, pr) in enumerate(gcats.iterrows()):
                sub = group_spec[group_spec["model_b"] == pr["model_b"]].set_index("group").reindex(glist)
                x = np.arange(len(glist)) + (j - (k2 - 1) / 2) * w2
                y = sub["specialization"].to_numpy(float)
                lo = sub["specialization_lo"].to_numpy(float)
                hi = sub["specialization_hi"].to_numpy(float)
                ax2.bar(x, y, width=w2, color=style.color(pr["category"]))
                ax2.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor="black", lw=0.8, capsize=2)
            ax2.set_xticks(range(len(glist)), glist, rotation=20)
            ax2.axhline(0, color="grey", lw=0.8)
            ax2.set_ylabel("Specialization separation (degrees, 95% CI)")
            ax2.set_xlabel("Class group")
            ax2.set_title("Class-group summary")
        fig.tight_layout()
    return fig


def fig_greedy(greedy: pd.DataFrame):
    """Fig. 5: greedy ensembles of a high-accuracy base with lower-accuracy models (test accuracy by size)."""
    plt = _plt()
    with _ctx():
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
        for i, (base, sub) in enumerate(greedy.groupby("base", sort=True)):
            sub = sub.sort_values("size")
            x = sub["size"].to_numpy(int)
            ax.plot(x, 100 * sub["test_acc"].to_numpy(float), color="black", lw=1.2,
                    marker=style.MARKERS[i % len(style.MARKERS)], ms=0, label=f"{base}: test")
            ax.plot(x, 100 * sub["holdout_acc"].to_numpy(float), color="grey", lw=1, ls="--",
                    label=f"{base}: holdout (selection)")
            for _, r in sub.iterrows():
                ax.scatter(r["size"], 100 * r["test_acc"], color=style.color(r["category"]), s=40, zorder=3,
                           edgecolor="black", linewidth=0.4)
        if greedy["base"].nunique() == 1:  # name each added member under its size (no overlapping labels)
            sub = greedy.sort_values("size")
            ax.set_xticks(sub["size"].to_numpy(int),
                          [f"{int(n)}: {'' if i == 0 else '+ '}{str(a).split('/')[-1]}"
                           for i, (n, a) in enumerate(zip(sub["size"], sub["added"]))],
                          rotation=30, ha="right", fontsize=7)
        ax.set_xlabel("Ensemble size (members): the member added at each step")
        ax.set_ylabel("Accuracy (%)")
        ax.set_title("Fig. 5: a high-accuracy base plus only lower-accuracy models")
        if greedy["base"].nunique() != 1:
            ax.xaxis.get_major_locator().set_params(integer=True)
        h, l = ax.get_legend_handles_labels()
        cats = style.category_order(greedy["category"])
        from matplotlib.lines import Line2D

        h += [Line2D([], [], marker="o", ls="", color=style.color(c), markeredgecolor="black",
                     markeredgewidth=0.4, label=f"added: {style.label(c)}") for c in cats]
        ax.legend(handles=h, loc="lower right")
        fig.tight_layout()
    return fig


def fig_features(fc: pd.DataFrame | None, dims: pd.DataFrame | None, target: float | None):
    """Fig. 6: random-subset combination curves (centre) and diversity-ranked dims curves (right)."""
    plt = _plt()
    panels = [p for p in (fc, dims) if p is not None and len(p)]
    with _ctx():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.5), squeeze=False)
        k = 0
        if fc is not None and len(fc):
            ax = axes[0][k]; k += 1
            agg = fc.groupby(["model_b", "category", "fraction_a"], as_index=False)["accuracy"].mean()
            for (mb, cat), sub in agg.groupby(["model_b", "category"], sort=False):
                sub = sub.sort_values("fraction_a")
                ax.plot(100 * sub["fraction_a"], 100 * sub["accuracy"], marker="o", ms=3,
                        color=style.color(cat), label=f"{style.label(cat)}: {mb}")
            ax.set_xlabel("Share of the dimension budget from the base (%)")
            ax.set_ylabel("Linear-probe test accuracy (%)")
            ax.set_title("Fig. 6: combining features")
            ax.legend(loc="best")
        if dims is not None and len(dims):
            ax = axes[0][k]
            for (mb, cat), sub in dims.groupby(["model_b", "category"], sort=False):
                sub = sub.sort_values("n_dims")
                ax.plot(sub["n_dims"], 100 * sub["accuracy"], marker="o", ms=3, color=style.color(cat),
                        label=f"{style.label(cat)}: {mb}")
            if target is not None and np.isfinite(target):
                ax.axhline(100 * target, color="black", ls=":", lw=0.9, label=f"target {100 * target:.1f}%")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("Dimensions kept, most diverse first (log scale)")
            ax.set_ylabel("Linear-probe test accuracy (%)")
            ax.set_title("Fig. 6: dimensions to reach the target")
            ax.legend(loc="lower right")
        fig.tight_layout()
    return fig


def fig_transfer(transfer: pd.DataFrame):
    """Fig. 7: downstream score of single and stacked (concatenated) embeddings, one panel per task."""
    plt = _plt()
    tasks = list(dict.fromkeys(transfer["task"]))
    with _ctx():
        n_max = max(int((transfer["task"] == t).sum()) for t in tasks)
        ncol = min(2, len(tasks))
        nrow = -(-len(tasks) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, nrow * (1.4 + 0.25 * n_max)), squeeze=False)
        for ax in axes.ravel()[len(tasks):]:
            ax.set_visible(False)
        for ax, task in zip(axes.ravel(), tasks):
            sub = transfer[transfer["task"] == task].sort_values("score")
            colors = [style.OKABE_ITO["blue"] if k == "single" else style.OKABE_ITO["orange"] for k in sub["kind"]]
            y = np.arange(len(sub))
            ax.barh(y, 100 * sub["score"].to_numpy(float), color=colors)
            if {"score_lo", "score_hi"} <= set(sub.columns):
                s = 100 * sub["score"].to_numpy(float)
                ax.errorbar(s, y, xerr=[s - 100 * sub["score_lo"].to_numpy(float),
                                        100 * sub["score_hi"].to_numpy(float) - s],
                            fmt="none", ecolor="black", lw=0.7)
            ax.set_yticks(y, sub["embedding"], fontsize=8)
            metric = sub["metric"].iloc[0] if len(sub) else ""
            ax.set_xlabel(f"{style.metric_label(metric)} on {task} (%)")
            lo = 100 * sub["score"].min()
            ax.set_xlim(max(0, lo - 5), min(100, 100 * sub["score"].max() + 2))
            ax.set_title(f"Fig. 7: transfer to {task}", pad=22)
            from matplotlib.patches import Patch

            ax.legend(handles=[Patch(color=style.OKABE_ITO["blue"], label="single embedding"),
                               Patch(color=style.OKABE_ITO["orange"], label="stacked (concatenated)")],
                      loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2)
        fig.tight_layout()
    return fig
