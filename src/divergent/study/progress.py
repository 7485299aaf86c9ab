"""One progress display for the whole study (stage, unit, ETA) and the log file OUT/study.log."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

LOG_NAME = "divergent.study"


def setup_logging(out: Path, verbose: bool = False) -> logging.Logger:
    log = logging.getLogger(LOG_NAME)
    log.setLevel(logging.DEBUG)
    for h in list(log.handlers):
        if getattr(h, "_divergent_study", False):
            log.removeHandler(h)
            h.close()
    fh = logging.FileHandler(Path(out) / "study.log", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    fh._divergent_study = True
    log.addHandler(fh)
    log.propagate = False
    return log


class Progress:
    """A single bar weighted by unit cost: 'stage | unit | done/total units | ETA'."""

    def __init__(self, total_cost: float, n_units: int, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.n_units, self.done_units = n_units, 0
        self.total, self.done = max(total_cost, 1e-9), 0.0
        self.t0 = time.monotonic()
        self.bar = None
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(self.total, 3), unit="work", bar_format=
                            "{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]", file=sys.stderr)

    def start(self, stage: str, unit: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{stage:>9} | {unit[:38]:<38} | {self.done_units}/{self.n_units}")

    def finish(self, cost: float, cached: bool = False) -> None:
        self.done_units += 1
        self.done += cost
        if self.bar is not None:
            self.bar.update(round(cost, 3))

    def eta_s(self) -> float | None:
        el = time.monotonic() - self.t0
        return None if self.done <= 0 else el * (self.total - self.done) / self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
