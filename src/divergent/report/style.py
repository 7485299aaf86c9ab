"""Figure style for the report: Okabe-Ito colour-blind-safe palette, category colours, rc settings."""
from __future__ import annotations

from ..cards import CATEGORY_ORDER

#: Okabe & Ito (2008) colour-blind-safe palette
OKABE_ITO = {
    "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000",
    "grey": "#999999",
}
#: one fixed colour per category, in the paper's order (most similar -> most different)
CATEGORY_COLORS = {
    "identical": OKABE_ITO["grey"],
    "reinit": OKABE_ITO["sky"],
    "subset": OKABE_ITO["yellow"],
    "hyperparameters": OKABE_ITO["green"],
    "architecture": OKABE_ITO["orange"],
    "framework": OKABE_ITO["purple"],
    "dataset": OKABE_ITO["vermillion"],
}
CATEGORY_LABELS = {
    "identical": "Identical", "reinit": "Reinit", "subset": "Subset (control)",
    "hyperparameters": "Hyper-parameters", "architecture": "Architecture",
    "framework": "Framework", "dataset": "Dataset",
}
OUTCOME_COLORS = {
    "only_a": OKABE_ITO["blue"], "only_b": OKABE_ITO["vermillion"],
    "both": OKABE_ITO["green"], "neither": OKABE_ITO["grey"],
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.fonttype": "none",
    "svg.hashsalt": "divergent",
}


def category_order(categories) -> list[str]:
    """Categories present, in the paper's order (unknown ones last, alphabetically)."""
    present = list(dict.fromkeys(c for c in categories if isinstance(c, str)))
    known = [c for c in CATEGORY_ORDER if c in present]
    return known + sorted(c for c in present if c not in CATEGORY_ORDER)


def color(category: str) -> str:
    return CATEGORY_COLORS.get(category, OKABE_ITO["black"])


def label(category: str) -> str:
    return CATEGORY_LABELS.get(category, str(category))


#: downstream metrics as the report names them (the transfer table's metric column)
METRIC_LABELS = {"accuracy": "top-1 accuracy", "map11": "mAP (VOC 2007 11-point)", "map_all": "mAP (all-point)"}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(str(metric), str(metric))


def model_labels(models, width: int = 24) -> list[str]:
    """Tick labels of models: the last part of each name (the whole name where two share it),
    longer ones shortened in the middle with an ellipsis so that both ends stay readable
    ("mobilenet_v1…4_embedding"); never silently cut, and distinct for distinct models."""
    names = [str(m) for m in models]
    tails = [n.rsplit("/", 1)[-1] for n in names]
    out = []
    for n, t in zip(names, tails):
        lab = t if tails.count(t) == 1 else n
        if len(lab) > width:
            keep = width - 1
            lab = lab[: (keep + 1) // 2] + "…" + lab[len(lab) - keep // 2 :]
        out.append(lab)
    return [n if out.count(lab) > 1 else lab for n, lab in zip(names, out)]   # shortened alike: whole names
