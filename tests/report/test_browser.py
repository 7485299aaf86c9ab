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
    check_in_browser(built_report[1], tmp_path, n_figures=7)


def check_in_browser(report: Path, tmp_path: Path, n_figures: int) -> None:
    """Open report in headless chromium: screenshot non-blank with figure colours, no console errors."""
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
    assert (np.abs(img - vermillion).sum(axis=2) < 30).sum() > 100
