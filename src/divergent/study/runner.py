"""The runner: walks the unit graph, skips units whose cached key matches, runs the rest through an
executor, and is the store's one writer (it commits what units staged)."""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DivergentError
from . import units as registry
from .cache import UnitCache
from .executors import InlineExecutor, UnitCall, UnitContext, run_unit_call
from .graph import Graph, Unit
from .progress import Progress, setup_logging

if TYPE_CHECKING:
    from .config import StudyConfig


@dataclass
class RunSummary:
    out: Path
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def commit(store_path: Path, result: dict, log) -> None:
    """Apply what a unit staged: new splits, staged store entries, temperatures (the one writer)."""
    splits, staged, temps = result.get("splits", []), result.get("staged", []), result.get("temperatures", {})
    if not (splits or staged or temps):
        return
    from ..store import Store

    st = Store.open(store_path, create=True)
    with st.writer(command="divergent study run") as w:
        for s in splits:
            z = np.load(s["npz"], allow_pickle=False)
            if s["name"] in w.store.splits:
                have = w.store.split(s["name"])
                if not np.array_equal(np.asarray(have.ids, dtype=str), z["ids"].astype(str)):
                    raise DivergentError(f"split {s['name']!r} of the study store holds other examples",
                                         "use a fresh --out directory for a different dataset or split rule")
                continue
            w.add_split(s["name"], labels=z["labels"], class_names=[str(c) for c in z["class_names"]],
                        ids=z["ids"].astype(str), dataset=s.get("dataset", ""), meta=s.get("meta"))
        for p in staged:
            if Path(p).exists():
                w.commit_staged(p)
        for model, t in temps.items():
            w.set_temperature(model, float(t["temperature"]), fit_on=t.get("fit_on", "holdout"),
                              **{k: v for k, v in t.items() if k not in ("temperature", "fit_on")})
    log.info("committed %d split(s), %d staged entr(ies), %d temperature(s)", len(splits), len(staged), len(temps))


def run_graph(graph: Graph, out, *, store: Path | None = None, config: StudyConfig | None = None, executor=None,
              workers: int = 1, progress: bool | None = None, torch_threads: int = 1, device: str = "cpu",
              force: tuple[str, ...] = (), log=None) -> RunSummary:
    """Run every unit whose inputs changed (or that never finished); return what ran and what was cached."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Path(store) if store is not None else out / "store"
    log = log or setup_logging(out)
    cache = UnitCache(out)
    executor = executor or InlineExecutor()
    summary = RunSummary(out=out)
    t_start = time.monotonic()
    _clean_orphans(store)
    outputs: dict[str, str] = {}
    pending = list(graph)
    prog = Progress(sum(u.cost for u in graph), len(graph), enabled=progress, log_path=out / "study.log")
    running: dict[Future, tuple[Unit, str, float]] = {}
    cap = max(1, getattr(executor, "workers", workers))
    log.info("study run: %d units, executor %s", len(graph), type(executor).__name__)

    def finish(u: Unit, key: str, result: dict, t0: float) -> None:
        commit(store, result, log)
        rec = cache.save(u.id, key, result, time.monotonic() - t0)
        outputs[u.id] = rec["output_hash"]
        summary.results[u.id] = result
        summary.ran.append(u.id)
        prog.finish(u.cost, stage=u.stage, unit=u.id, seconds=time.monotonic() - t0)
        log.info("done %s (%.1fs)", u.id, time.monotonic() - t0)

    def fail(u: Unit, exc: BaseException) -> None:
        summary.failed[u.id] = f"{type(exc).__name__}: {exc}"
        log.error("unit %s failed: %s", u.id, summary.failed[u.id], exc_info=exc)
        prog.finish(u.cost, stage=u.stage, unit=u.id, state="FAILED")

    interrupted = True
    try:
        while pending or running:
            launched = False
            for u in list(pending):
                bad = {d for d in u.deps if d in summary.failed or d in summary.skipped}
                if (bad - set(u.optional)) or u.id in summary.skipped:
                    pending.remove(u)
                    if u.id not in summary.skipped:
                        summary.skipped.append(u.id)
                    prog.finish(u.cost, stage=u.stage, unit=u.id, state="skipped")
                    continue
                if not all(d in outputs or d in bad for d in u.deps):
                    continue
                if bad:
                    log.warning("%s runs without failed input(s) %s", u.id, sorted(bad))
                key = u.key(outputs)
                rec = None if u.id in force or u.stage in force else cache.lookup(u.id, key)
                if rec is not None:
                    pending.remove(u)
                    outputs[u.id] = rec["output_hash"]
                    summary.results[u.id] = rec["result"]
                    summary.cached.append(u.id)
                    prog.finish(u.cost, cached=True, stage=u.stage, unit=u.id)
                    log.info("cached %s", u.id)
                    continue
                ctx = UnitContext(unit=u.id, out=out, store=store, work=cache.work_dir(u.id, fresh=True),
                                  deps={d: summary.results[d] for d in u.deps if d in outputs}, config=config,
                                  torch_threads=torch_threads, device=device)
                call = UnitCall(u.fn, registry.modules(), ctx, u.params)
                if u.main or isinstance(executor, InlineExecutor):
                    if running and u.main:
                        continue  # main-process units (which touch the store in place) wait for workers
                    pending.remove(u)
                    prog.start(u.stage, u.id)
                    log.info("run %s (in process)", u.id)
                    t0 = time.monotonic()
                    try:
                        finish(u, key, run_unit_call(call), t0)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:
                        fail(u, exc)
                    launched = True
                    break  # re-scan: new outputs may unlock units
                if len(running) >= cap:
                    break
                pending.remove(u)
                prog.start(u.stage, u.id)
                log.info("submit %s", u.id)
                running[executor.submit(call)] = (u, key, time.monotonic())
                launched = True
            if launched:
                continue
            if not running:
                if pending:
                    stuck = [u.id for u in pending]
                    raise DivergentError(f"study graph is stuck; waiting units: {stuck[:5]}")
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in done:
                u, key, t0 = running.pop(f)
                try:
                    finish(u, key, f.result(), t0)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    fail(u, exc)
        interrupted = False
    finally:
        prog.close()
        executor.shutdown(wait=not interrupted)
        if interrupted:
            log.warning("study run interrupted; finished units are kept, rerun the same command to resume")
    summary.seconds = time.monotonic() - t_start
    log.info("study run finished in %.1fs: %d ran, %d cached, %d failed, %d skipped", summary.seconds,
             len(summary.ran), len(summary.cached), len(summary.failed), len(summary.skipped))
    return summary


def _clean_orphans(store: Path) -> None:
    """Entries staged by an interrupted run are never committed (their units rerun and stage
    again); the chunks of a resumable extraction are kept, so its unit resumes where it stopped."""
    from ..store import discard_staged

    discard_staged(store)
