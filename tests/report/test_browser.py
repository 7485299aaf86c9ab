"""The report opens in a real headless browser (Debian chromium) with no console errors, and shows figures."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None) \
    or shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def _run(args, tmp_path, timeout=90):
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(tmp_path, built_report):
    seen = check_in_browser(built_report[1], tmp_path, n_figures=7)
    assert seen["figures"] == 7 and seen["console"] == []
    assert seen["colours"] > 200 and seen["vermillion_px"] > 100


def check_in_browser(report: Path, tmp_path: Path, n_figures: int) -> dict:
    """Open report in headless chromium: screenshot non-blank with figure colours, no console errors.
    Returns what the browser showed: decoded figures, console lines, distinct colours, vermillion pixels."""
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    log = tmp_path / "chrome_debug.log"
    r = _run(["--enable-logging=stderr", "--v=0", "--window-size=1280,4000",
              f"--screenshot={shot}", report.as_uri()], tmp_path)
    assert shot.exists(), f"no screenshot; chromium said:\n{r.stderr[-3000:]}"
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, "console messages:\n" + "\n".join(console)
    # the DOM as rendered: every figure image decoded (an <img> is in the DOM with its data URI)
    dom = _run(["--dump-dom", report.as_uri()], tmp_path).stdout
    assert dom.count("data:image/png;base64,") == n_figures and 'id="findings"' in dom
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # non-blank: many distinct colours, and the Okabe-Ito category colours of the figures appear
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 200
    vermillion = np.array([0xD5, 0x5E, 0x00])
    n_vermillion = int((np.abs(img - vermillion).sum(axis=2) < 30).sum())
    assert n_vermillion > 100
    return {"figures": dom.count("data:image/png;base64,"), "console": console, "colours": len(colours),
            "vermillion_px": n_vermillion}


#: the page width the figures must be readable at, and the smallest figure text on screen (px)
PAGE_WIDTH, MIN_TEXT_PX = 1400, 9.0
MEASURE = """<script>
function measure() {
  for (const img of document.querySelectorAll('figure img')) {
    img.setAttribute('data-shown', img.getBoundingClientRect().width);
    img.setAttribute('data-natural', img.naturalWidth);
  }
  document.body.setAttribute('data-measured', '1');
}
window.addEventListener('load', measure);
</script>"""


def figure_text_px(report: Path, tmp_path: Path, width: int = PAGE_WIDTH) -> dict[str, float]:
    """Smallest figure text as displayed at `width`: each figure's smallest font size (points, read
    from its SVG, whose text stays text) x dpi / 72 x the PNG's displayed / natural width, both
    widths measured by the browser (a copy of the page with a measuring script)."""
    import re

    from divergent.report.style import RC

    dpi = RC["savefig.dpi"]

    page = tmp_path / "measure.html"
    page.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    dom = _run([f"--window-size={width},3000", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
               tmp_path).stdout
    assert 'data-measured="1"' in dom, "the measuring script did not run"
    out = {}
    for block in re.findall(r"<figure>.*?</figure>", dom, flags=re.S):
        tag, link = re.search(r"<img [^>]*>", block), re.search(r'href="figures/([^"]+)\.svg"', block)
        if tag is None or link is None:  # not a figure with an SVG (e.g. a gallery of thumbnails)
            continue
        tag, stem = tag.group(0), link.group(1)
        shown = float(re.search(r'data-shown="([\d.]+)"', tag).group(1))
        natural = float(re.search(r'data-natural="([\d.]+)"', tag).group(1))
        svg = (report.parent / "figures" / f"{stem}.svg").read_text()
        svg_width = float(re.search(r'<svg[^>]*width="([\d.]+)pt"', svg).group(1))
        sizes = [float(v) for v in re.findall(r"font-size: ([\d.]+)px", svg)]  # SVG user units: points
        assert sizes, f"{stem}: no text in the SVG (text drawn as paths cannot be measured)"
        assert abs(natural / (svg_width * dpi / 72) - 1) < 0.05, (stem, natural, svg_width)  # the same figure
        out[stem] = min(sizes) * dpi / 72 * shown / natural
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)")
def test_figure_text_readable_at_page_width(tmp_path, built_report):
    px = figure_text_px(built_report[1], tmp_path)
    assert len(px) == 7 and "fig3_angles" in px
    small = {k: round(v, 1) for k, v in px.items() if v < MIN_TEXT_PX}
    assert not small, f"figure text below {MIN_TEXT_PX} px on screen at {PAGE_WIDTH} px: {small}"


def check_report_tables(out: Path) -> dict:
    """A report checked against its own tables: every model a band finding names lies in the
    band (table1.in_band; the base included), and Fig. 2's caption gives the slope of the OLS fit
    over the pairs whose members both lie in the band (recomputed from the pairs table).
    Returns the models the band findings name, the in-band models and the expected caption."""
    import json
    import re

    import numpy as np
    import pandas as pd

    from divergent.report.html import fmt_num

    html = (out / "report.html").read_text()
    t1 = pd.read_parquet(out / "tables" / "table1.parquet")
    f = pd.read_parquet(out / "tables" / "findings.parquet")
    inb = set(t1.loc[t1["in_band"] | (t1["category"] == "base"), "model"])
    named_all = set()
    for r in f[f["scope"] == "band"].itertuples():
        named = {m for m in t1["model"] if re.search(rf"(?<![\w/@.-]){re.escape(m)}(?![\w@.-])", r.text)}
        assert named <= inb, f"band finding {r.claim} names models outside the band: {sorted(named - inb)}"
        named_all |= named
    lo, hi = json.loads((out / "tables" / "meta.json").read_text())["acc_band"]
    pairs = pd.read_parquet(out / "tables" / "pairs.parquet")
    p = pairs[pairs["acc_a"].between(lo, hi) & pairs["acc_b"].between(lo, hi)]
    p = p[np.isfinite(p["gain_vs_mean"].astype(float))]
    sec = html.split('id="ensembles"')[1].split("</section>")[0]
    if len(p) >= 3:
        slope = np.polyfit(p["error_inconsistency"], p["gain_vs_mean"], 1)[0]
        caption = f"over the {len(p)} pairs whose members both lie in the accuracy band (slope {fmt_num(slope, 3)}"
    else:
        caption = f"too few pairs whose members both lie in the accuracy band ({len(p)})"
    assert caption in sec
    return {"named": named_all, "in_band": inb, "caption": caption, "section": sec}


def test_report_checked_against_its_tables(built_report):
    seen = check_report_tables(built_report[0])
    assert seen["named"] <= seen["in_band"]   # band findings name in-band models only
    assert seen["caption"] in seen["section"]                  # Fig. 2's caption equals the pairs table
