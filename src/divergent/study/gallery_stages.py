"""The gallery unit: for each representative pair, the test images only one model gets right (as
small PNG thumbnails read from the dataset by example id) and the difference of the two confusion
matrices. Registered with :func:`divergent.study.units.unit`: bump its version when its code or a
module it declares in ``depends`` changes what it writes."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .units import unit

#: thumbnails are the native pixels; images larger than this (pixels per side) are shrunk to it
THUMB_MAX = 96


def thumbnail_png(pixels: np.ndarray) -> bytes:
    """A PNG of an image's native pixels (uint8 HxW or HxWx3), shrunk to at most THUMB_MAX pixels
    per side (aspect kept) when larger; lossless, so a small image reads back pixel for pixel."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(pixels))
    if max(im.size) > THUMB_MAX:
        im.thumbnail((THUMB_MAX, THUMB_MAX), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@unit(name="gallery", version=1, depends=("divergent.analyses.gallery", "divergent.analyses.ensembles",
                                         "divergent.analyses.specialization", "divergent.analyses.class_groups",
                                         "divergent.analyses._select", "divergent.metrics", "divergent.data"))
def gallery_unit(ctx, *, dataset: str, options: dict, split: str, groups, per_group: int, max_classes: int) -> dict:
    """Tables ``gallery`` (one row per shown example, with its thumbnail's path relative to OUT, ''
    when the images could not be read) and ``confusion_diff``; thumbnails under thumbs/. When the
    dataset cannot be opened (e.g. a split imported without its images) the tables are written
    without thumbnails and ``note`` says why."""
    from .._files import atomic_write_bytes
    from ..analyses.gallery import representative_galleries
    from ..data import images_by_id
    from ..errors import DivergentError
    from ..store import Store
    from ..analyses.ensembles import representatives

    d = ctx.dep("pairs")
    base = d["base"]
    reps = representatives(pd.read_parquet(d["pairs"]), base, d["accuracy"])
    gal, conf = representative_galleries(Store.open(ctx.store), base, reps, split,
                                         groups=None if groups == "none" else groups,
                                         per_group=per_group, max_classes=max_classes)
    note = ""
    gal["thumbnail"] = ""
    if len(gal):
        first = gal.drop_duplicates("position")
        try:
            pixels = images_by_id(dataset, first["id"].tolist(), split, **(options or {}))
        except DivergentError as exc:
            note = f"the images of {dataset!r} could not be read ({exc.problem}); the gallery lists example ids only"
        else:
            thumbs = Path(ctx.work) / "thumbs"
            thumbs.mkdir(exist_ok=True)
            rel = {}
            for pos, px in zip(first["position"], pixels):
                p = thumbs / f"{int(pos):07d}.png"
                atomic_write_bytes(p, thumbnail_png(px), durable=False)
                rel[int(pos)] = Path(os.path.relpath(p, ctx.out)).as_posix()
            gal["thumbnail"] = gal["position"].map(rel)
    out = {"note": note, "representatives": reps}
    for name, df in (("gallery", gal), ("confusion_diff", conf)):
        out[name] = str(Path(ctx.work) / f"{name}.parquet")
        df.to_parquet(out[name], index=False)
    return out
