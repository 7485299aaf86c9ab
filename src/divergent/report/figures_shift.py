"""The report's figures for distribution shift and representation similarity, each drawn from
one table (divergent.report.shift) and saved as SVG and PNG by figures.save_figure."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import style
from .figures import _ctx, _legend_for, _plt

#: metrics of the category table drawn in the shift figure, with their axis labels
SHIFT_METRICS = (("error_inconsistency", "error inconsistency"), ("gain_vs_best", "ensemble gain vs best member"),
                 ("conversion_rate", "conversion rate"))


def split_order(splits) -> list[str]:
    """The in-distribution split first, then the shifted splits in name order."""
    s = list(dict.fromkeys(splits))
    return sorted(s, key=lambda x: ("~" in x, x))


def _short(split: str) -> str:
    return split.split("~", 1)[1] if "~" in split else f"{split} (ID)"


def fig_shift_categories(categories: pd.DataFrame):
    """Category means (with their intervals) of the base's pairs on each split: one line per
    category across the splits, one panel per metric; the paper's ordering persists under a
    shift where the lines stay stacked in the category order."""
    plt = _plt()
    splits = split_order(categories["split"])
    x = np.arange(len(splits))
    cats = style.category_order(categories["category"])
    with _ctx():
        fig, axes = plt.subplots(1, len(SHIFT_METRICS), figsize=(4.2 * len(SHIFT_METRICS), 3.6))
        for ax, (metric, lab) in zip(np.atleast_1d(axes), SHIFT_METRICS):
            m = categories[categories["metric"] == metric]
            for k, c in enumerate(cats):
                s = m[m["category"] == c].set_index("split").reindex(splits)
                y = s["mean"].to_numpy(float)
                lo, hi = s["lo"].to_numpy(float), s["hi"].to_numpy(float)
                dx = (k - (len(cats) - 1) / 2) * 0.06
                ok = np.isfinite(y)
                err = np.vstack([np.where(np.isfinite(lo), y - lo, 0), np.where(np.isfinite(hi), hi - y, 0)])[:, ok]
                ax.errorbar(x[ok] + dx, y[ok], yerr=err, marker=style.MARKERS[k % len(style.MARKERS)], ms=4,
                            lw=1.2, capsize=2, color=style.color(c), label=style.label(c))
            ax.set_xticks(x)
            ax.set_xticklabels([_short(s) for s in splits], rotation=35, ha="right")
            ax.set_ylabel(lab)
        _legend_for(np.atleast_1d(axes)[0], cats, loc="best")
        fig.tight_layout()
    return fig


def fig_cka(cka: pd.DataFrame, base: str | None = None):
    """Left: linear CKA of every pair, models ordered by their category relative to the base
    (then name); right: CKA against error inconsistency, one point per pair, coloured by the
    pair's category."""
    plt = _plt()
    models = list(dict.fromkeys(list(cka["model_a"]) + list(cka["model_b"])))
    cat_of = {}
    if base is not None and "category_to_base" in cka:
        for a, b, c in zip(cka["model_a"], cka["model_b"], cka["category_to_base"]):
            if a == base:
                cat_of[b] = c
            elif b == base:
                cat_of[a] = c
    rank = {c: i for i, c in enumerate(style.category_order(cat_of.values()))}
    models.sort(key=lambda m: (m != base, rank.get(cat_of.get(m), len(rank)), m))
    idx = {m: i for i, m in enumerate(models)}
    M = np.eye(len(models))
    for a, b, v in zip(cka["model_a"], cka["model_b"], cka["cka"].astype(float)):
        M[idx[a], idx[b]] = M[idx[b], idx[a]] = v
    with _ctx():
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(models)))
        ax.set_yticks(range(len(models)))
        short = style.model_labels(models)
        ax.set_xticklabels(short, rotation=90, fontsize=6)
        ax.set_yticklabels(short, fontsize=6)
        for lab, m in zip(ax.get_yticklabels(), models):
            lab.set_color(style.color(cat_of.get(m, "")) if m != base else "black")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
        cats = style.category_order(cka["category"])
        if "error_inconsistency" in cka:
            for c in cats:
                s = cka[cka["category"] == c]
                ax2.scatter(s["error_inconsistency"].astype(float), s["cka"].astype(float), s=16,
                            color=style.color(c), label=style.label(c))
            ax2.set_xlabel("error inconsistency")
            ax2.set_ylabel("linear CKA")
            _legend_for(ax2, cats, loc="best")
        fig.tight_layout()
    return fig


def fig_lines(estimates: pd.DataFrame):
    """Shifted against in-distribution accuracy of every model, one panel per shifted split, on
    probit-scaled axes (accuracy on the line): an axis scale, like a log axis, computed with the
    standard library's normal quantile so that the report stays free of statistics code."""
    from statistics import NormalDist

    ppf = np.vectorize(NormalDist().inv_cdf, otypes=[float])

    plt = _plt()
    shifted = split_order(estimates["shifted_split"])
    n = len(shifted)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    with _ctx():
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
        for ax, sh in zip(axes.ravel(), shifted):
            s = estimates[estimates["shifted_split"] == sh]
            z = lambda p: ppf(np.clip(np.asarray(p, float), 1e-4, 1 - 1e-4))  # noqa: E731
            ax.scatter(z(s["acc_id"]), z(s["acc_true"]), s=14, color=style.OKABE_ITO["blue"], label="true")
            ax.scatter(z(s["acc_id"]), z(s["aline_d"]), s=14, marker="x", color=style.OKABE_ITO["vermillion"],
                       label="ALine-D")
            ticks = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.97])
            ax.set_xticks(z(ticks))
            ax.set_xticklabels([f"{t:.0%}" for t in ticks], fontsize=7)
            ax.set_yticks(z(ticks))
            ax.set_yticklabels([f"{t:.0%}" for t in ticks], fontsize=7)
            ax.set_title(_short(sh), fontsize=9)
            ax.set_xlabel("ID accuracy")
            ax.set_ylabel("shifted accuracy")
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        axes[0, 0].legend(loc="best")
        fig.tight_layout()
    return fig
