"""One progress display for the whole study (stage, unit, ETA) and the log file OUT/study.log.

On a terminal a single bar weighted by unit cost; when stderr is not a terminal (a file, CI,
nohup) one plain line per finished unit instead, so progress can be followed with `tail -f`.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TextIO

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


def format_duration(seconds: float | None) -> str:
    """'42s', '3m07s', '1h02m' ('?' when unknown)."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Progress over the study's units, weighted by their cost.

    mode: "bar" (a tqdm bar: 'stage | unit | done/total'), "lines" (one line per finished unit:
    done/total, stage, unit, seconds, state, ETA) or "off". `enabled=None` picks the bar on a
    terminal and lines otherwise; `enabled=False` is off, `enabled=True` the bar.
    """

    def __init__(self, total_cost: float, n_units: int, enabled: bool | None = None, *,
                 log_path: Path | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        if enabled is None:
            self.mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        else:
            self.mode = "bar" if enabled else "off"
        self.enabled = self.mode != "off"
        self.n_units, self.done_units = n_units, 0
        self.total, self.done = max(total_cost, 1e-9), 0.0
        self.t0 = time.monotonic()
        self.bar = None
        self._stage, self._unit = "", ""
        if self.mode == "lines":
            where = f"; log: {Path(log_path).resolve()}" if log_path is not None else ""
            self._print(f"study: {n_units} units{where}")
        if self.mode == "bar":
            from tqdm.auto import tqdm

            if log_path is not None:
                self._print(f"study log: {Path(log_path).resolve()}")
            self.bar = tqdm(total=round(self.total, 3), unit="work", bar_format=
                            "{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]", file=self.stream)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _describe(self) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{self._stage:>9} | {self._unit[:38]:<38} | {self.done_units}/{self.n_units}")

    def start(self, stage: str, unit: str) -> None:
        self._stage, self._unit = stage, unit
        self._describe()

    def finish(self, cost: float, cached: bool = False, *, stage: str = "", unit: str = "",
               seconds: float | None = None, state: str | None = None) -> None:
        """Count a unit as done (ran, cached, failed or skipped) and show it."""
        self.done_units += 1
        self.done += cost
        if self.bar is not None:
            self._describe()          # the counter includes the unit just finished
            self.bar.update(round(cost, 3))
        elif self.mode == "lines":
            state = state or ("cached" if cached else "done")
            took = "" if seconds is None else f" {seconds:7.1f}s"
            width = len(str(self.n_units))
            self._print(f"[{self.done_units:>{width}}/{self.n_units}] {stage:<9} {unit} {state}{took}"
                        f"  ETA {format_duration(self.eta_s())}")

    def eta_s(self) -> float | None:
        el = time.monotonic() - self.t0
        if self.done_units >= self.n_units:
            return 0.0
        return None if self.done <= 0 else el * (self.total - self.done) / self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
