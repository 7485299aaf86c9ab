"""The report's gallery (thumbnails of real Fashion-MNIST images, confusion-difference heatmap) and
its footer (the machine the study ran on): every image decodes, thumbnails are the files' pixels."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest

from report_fixture import make_tables


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im)


@pytest.fixture(scope="module")
def gallery_report(tmp_path_factory, fmnist_dir):
    """A report whose gallery names six real Fashion-MNIST test images (written as the study's
    unit writes them) and one example whose file is absent."""
    from divergent.data import open_dataset
    from divergent.report import build_report
    from divergent.study.environment import table as environment_table
    from divergent.study.gallery_stages import thumbnail_png

    out = tmp_path_factory.mktemp("gallery-report")
    ds = open_dataset(f"fashion-mnist:{fmnist_dir}", "test")
    (out / "thumbs").mkdir()
    rows = []
    for k, (side, group) in enumerate([("only_a", "garments"), ("only_a", "garments"), ("only_a", "footwear"),
                                       ("only_b", "garments"), ("only_b", "bags"), ("only_b", "bags"),
                                       ("only_b", "bags")]):
        rel = f"thumbs/{k:07d}.png"
        if k < 6:
            (out / rel).write_bytes(thumbnail_png(ds.raw(k)))
        rows.append(dict(model_a="cnn-base", model_b="mlp", category="architecture", side=side, group=group, rank=k,
                         id=str(ds.ids[k]), class_name=ds.class_names[ds.labels[k]], pred_a_name="Shirt",
                         pred_b_name="Coat", confidence=0.5 + k / 20, thumbnail=rel))
    t = make_tables()
    t.gallery = pd.DataFrame(rows)
    names = ["T-shirt/top", "Trouser", "Pullover"]
    t.confusion_diff = pd.DataFrame([dict(model_a="cnn-base", model_b="mlp", category="architecture",
                                          true_class=names[i], pred_class=names[j], true_index=i, pred_index=j,
                                          count_a=10 * (i == j) + j, count_b=10 * (i == j) + i, diff=j - i, n_classes=10)
                                     for i in range(3) for j in range(3)])
    t.environment = environment_table()
    path = build_report(t, out)
    return out, path.read_text(), t, ds


def _section(html: str, sid: str) -> str:
    return html.split(f'id="{sid}"')[1].split("</section>")[0]


def test_gallery_shows_the_thumbnails_pixel_for_pixel(gallery_report):
    out, html, t, ds = gallery_report
    sec = _section(html, "gallery")
    assert "Not available" not in sec
    thumbs = re.findall(r'<figure class="thumb"><img src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"', sec)
    assert len(thumbs) == 6
    for k, (b64, w, h) in enumerate(thumbs):
        assert np.array_equal(_png_pixels(base64.b64decode(b64)), ds.raw(k))   # in table order
        assert (int(w), int(h)) == (84, 84)                                     # 28 px shown at 3x
    # the example whose file is absent shows its id, not a broken image
    assert f'<div class="noimg">{ds.ids[6]}</div>' in sec
    # sides in order, groups as the table orders them, the other model's answer and the confidence
    assert sec.index("Only the base (cnn-base) is right") < sec.index("Only mlp is right")
    assert "other said Coat · 50.0%" in sec and "other said Shirt · 65.0%" in sec
    assert sec.index("<b>garments</b>") < sec.index("<b>footwear</b>")


def test_confusion_heatmap_and_every_image_decodes(gallery_report):
    out, html, _, _ = gallery_report
    sec = _section(html, "gallery")
    assert "Confusion matrix of cnn-base minus that of mlp on the test split (counts; the 3 of 10 classes" in sec
    for ext in ("svg", "png"):
        assert (out / "figures" / f"gallery_confusion_0.{ext}").stat().st_size > 3000
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:   # no broken image anywhere in the report
        assert _png_pixels(base64.b64decode(s.split(",", 1)[1])).size > 0
    # the tables the section reads are written next to the report
    g = pd.read_parquet(out / "tables" / "gallery.parquet")
    assert len(g) == 7 and (out / "tables" / "confusion_diff.csv").exists()


def test_footer_states_cpu_instruction_set_and_versions(gallery_report):
    import platform

    _, html, t, _ = gallery_report
    foot = html.split('<footer class="env">')[1].split("</footer>")[0]
    env = dict(zip(t.environment["item"], t.environment["value"]))
    assert env["instruction set"] in ("AVX-512", "AVX2", "SSE4.2", "ASIMD (NEON)", "baseline")
    for item in ("cpu", "instruction set", "numpy", "torch", "python", "divergent"):
        assert f"{item}: {env[item]}" in foot
    assert env["python"] == platform.python_version() and env["numpy"] == np.__version__
    assert foot.rstrip().endswith("</p>") and html.index("<footer") > html.index('id="gallery"')


def test_instruction_set_follows_numpy_cpu_features(monkeypatch):
    from numpy._core import _multiarray_umath as mu

    from divergent.study import environment as E

    monkeypatch.setattr(mu, "__cpu_features__", {"AVX2": True, "AVX512F": True, "X86_V4": True})
    assert E.instruction_set()[0] == "AVX-512"
    monkeypatch.setattr(mu, "__cpu_features__", {"AVX2": True, "AVX512F": False, "X86_V4": False})
    assert E.instruction_set()[0] == "AVX2"


def test_footer_without_an_environment_says_so():
    from divergent.report.html import environment_footer

    assert "Environment: not recorded for this run." in environment_footer(None)


def test_the_study_records_its_environment_where_the_report_reads_it(tmp_path):
    import json

    from divergent.study import environment as E

    p = E.write(tmp_path)
    assert p == tmp_path / ".study" / "environment.json"
    saved = json.loads(p.read_text())
    saved["cpu"] = "recorded CPU"           # the report shows what the run recorded, not this process
    p.write_text(json.dumps(saved))
    t = E.table(tmp_path)
    assert dict(zip(t["item"], t["value"]))["cpu"] == "recorded CPU" and len(t) == len(saved)
