"""The report's galleries: for each representative pair, thumbnails of the test images only one model
gets right (from the gallery table and the PNG files it names) and a heatmap of the difference of
the two confusion matrices (from the confusion_diff table). Renders only: the rows come ordered
and counted by the study's gallery unit (divergent.analyses.gallery)."""
from __future__ import annotations

import base64
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from . import html as H
from . import style

#: thumbnails are shown at this many screen pixels per image pixel, up to THUMB_PX per side
SCALE, THUMB_PX = 3, 96
SIDE_TITLES = {"only_a": "Only the base ({a}) is right", "only_b": "Only {b} is right"}


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG header, None when the bytes are not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def thumb_html(row, out: Path) -> str:
    """One thumbnail (inlined PNG) with its true class, the wrong model's answer and the right
    model's confidence; the example id when its file is absent (never a broken image)."""
    wrong = row["pred_b_name"] if row["side"] == "only_a" else row["pred_a_name"]
    cap = f"{row['class_name']} · other said {wrong} · {H.fmt_pct(row['confidence'], 1)}"
    path = Path(out) / str(row["thumbnail"]) if row.get("thumbnail") else None
    data = path.read_bytes() if path is not None and path.is_file() else b""
    size = _png_size(data)
    if size is None:
        return f'<figure class="thumb"><div class="noimg">{H.esc(row["id"])}</div><figcaption>{H.esc(cap)}</figcaption></figure>'
    w, h = size
    f = max(1, min(SCALE, THUMB_PX // max(w, h))) if max(w, h) < THUMB_PX else 1
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure class="thumb"><img src="{src}" width="{w * f}" height="{h * f}" '
            f'alt="{H.esc(row["id"])}: {H.esc(cap)}" title="{H.esc(row["id"])}"><figcaption>{H.esc(cap)}</figcaption></figure>')


def fig_confusion_diff(conf: pd.DataFrame, model_a: str, model_b: str):
    """Heatmap of count_a - count_b over (true class, predicted class), diverging around 0."""
    from .figures import _ctx, _plt

    plt = _plt()
    rows = list(dict.fromkeys(conf.sort_values("true_index")["true_class"]))
    cols = list(dict.fromkeys(conf.sort_values("pred_index")["pred_class"]))
    m = conf.pivot(index="true_class", columns="pred_class", values="diff").reindex(index=rows, columns=cols)
    v = m.to_numpy(dtype=float)
    lim = max(1.0, float(np.nanmax(np.abs(v))) if v.size else 1.0)
    k = len(rows)
    with _ctx():
        side = 1.8 + 0.27 * k
        fig, ax = plt.subplots(figsize=(side + 1.2, side))
        im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim)
        ax.grid(False)
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(k), rows)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{model_a} − {model_b}", fontsize=9)
        if k <= 12:
            for i in range(k):
                for j in range(len(cols)):
                    if np.isfinite(v[i, j]) and v[i, j] != 0:
                        ax.text(j, i, f"{int(v[i, j]):+d}", ha="center", va="center", fontsize=7.5,
                                color="white" if abs(v[i, j]) > 0.6 * lim else "black")
        cb = fig.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label("count (base) − count (other)")
        fig.tight_layout()
    return fig


def gallery_html(gallery: pd.DataFrame, conf: pd.DataFrame | None, out, note: str = "") -> str:
    """The gallery section's body: per pair (categories in the paper's order) the two sides'
    thumbnails by class group, then the confusion-difference heatmap (written to
    OUT/figures/gallery_confusion_<n>.{svg,png})."""
    from .figures import save_figure

    out = Path(out)
    body = ("<p>For each representative pair, the test images where only one of the two models is right, "
            "most confident first (the confidence shown is the right model's calibrated probability), by class "
            "group; then the confusion matrix of the base minus that of the other model (counts; blue: the base "
            "predicts that cell more often, red: the other model does).</p>")
    if note:
        body += H.missing_html(note)
    pairs = gallery[["model_a", "model_b", "category"]].drop_duplicates()
    order = {c: i for i, c in enumerate(style.category_order(pairs["category"]))}
    pairs = pairs.sort_values("category", key=lambda s: s.map(order), kind="stable")
    for n, (a, b, cat) in enumerate(pairs.itertuples(index=False)):
        g = gallery[(gallery["model_a"] == a) & (gallery["model_b"] == b)]
        body += f"<h3>{H.esc(style.label(cat))}: {H.esc(a)} vs {H.esc(b)}</h3><div class=\"gallery\">"
        for side, title in SIDE_TITLES.items():
            s = g[g["side"] == side]
            body += f'<div class="side"><h4>{H.esc(title.format(a=a, b=b))} ({len(s)} shown)</h4>'
            if not len(s):
                body += "<p>None in the test split.</p>"
            for grp, gs in s.groupby("group", sort=False):
                thumbs = "".join(thumb_html(r, out) for _, r in gs.iterrows())
                body += f'<div class="group"><b>{H.esc(grp)}</b><div class="thumbs">{thumbs}</div></div>'
            body += "</div>"
        body += "</div>"
        c = None if conf is None else conf[(conf["model_a"] == a) & (conf["model_b"] == b)]
        if c is not None and len(c):
            stem = f"gallery_confusion_{n}"
            res = save_figure(fig_confusion_diff(c, a, b), out / "figures" / stem)
            k, total = c["true_class"].nunique(), int(c["n_classes"].iloc[0]) if "n_classes" in c else 0
            cap = (f"Confusion matrix of {a} minus that of {b} on the test split (counts"
                   + (f"; the {k} of {total} classes whose rows and columns differ most)." if k < total else ")."))
            body += H.figure_html(res["png"], alt=cap, caption=H.esc(cap), stem=stem)
    return body + H.files_html([n for n in ("gallery", "confusion_diff") if n == "gallery" or conf is not None])
