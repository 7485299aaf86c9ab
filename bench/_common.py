"""Shared helpers of the engine benchmarks: peak anonymous-memory tracking, timing, printing."""
from __future__ import annotations

import threading
import time


def rss_anon_kb() -> int:
    """Current anonymous resident memory (RssAnon in /proc/self/status), in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakAnon:
    """Sample RssAnon every `interval` s in a thread and keep the maximum.

    VmHWM (the kernel's own peak) counts file-backed pages too, i.e. every page of the memory-mapped
    score files that was touched, which is page cache rather than memory the process owns; RssAnon
    counts only the process's own heap/numpy buffers. Sampling can miss a peak shorter than
    `interval`, so the engines keep their temporaries per block (milliseconds long at most).
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_kb = 0
        self.start_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_anon_kb())
            time.sleep(self.interval)

    def __enter__(self):
        self.start_kb = rss_anon_kb()
        self.peak_kb = self.start_kb
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, rss_anon_kb())

    @property
    def peak_gb(self) -> float:
        return self.peak_kb / 2**20


def vm_hwm_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")
