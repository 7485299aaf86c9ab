"""The study's pairs stage in blocks of models (`run.pairs_block`): the merged pairs table and model
table equal the one-unit tables exactly, a changed model reruns only its block (and the merge),
and a block size below 1 is refused."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from divergent.cli import main
from divergent.errors import DivergentError
from divergent.store import Store, stage_entry
from divergent.study import Graph, InlineExecutor, Unit, run_graph
from divergent.study import config as C
from divergent.study.plan import _add_pairs, pairs_blocks
from divergent.study import units
from divergent.study.units import unit

N, K = 400, 6
MODELS = [f"m{i}" for i in range(8)]   # m0 is the base; 7 others: blocks of 2 -> 4 blocks
SPLITS = ("holdout", "test")


def _labels(split: str) -> np.ndarray:
    return np.random.default_rng(["holdout", "test"].index(split)).integers(0, K, N)


@unit(name="test-pairs-blocks.predict", version=1)
def _predict(ctx, *, seed: int, skill: float) -> dict:
    """Synthetic logits of one model: shared noise (correlated errors) plus the model's own."""
    staged = []
    for s in SPLITS:
        y = _labels(s)
        shared = np.random.default_rng([SPLITS.index(s), 99]).normal(size=(N, K))
        z = np.random.default_rng([seed, SPLITS.index(s)]).normal(size=(N, K)) + 0.7 * shared
        z[np.arange(N), y] += skill
        staged.append(str(stage_entry(ctx.store, f"m{seed}", s, arrays={"logits": (1.5 * z).astype(np.float32)},
                                      force=True)))
    return {"staged": staged}


def _graph(block: int | None, skills: dict[str, float]) -> Graph:
    g = Graph()
    for i, m in enumerate(MODELS):
        g.add(Unit(f"predict:{m}", "extract", _predict, {"seed": i, "skill": skills.get(m, 1.0 + 0.2 * i)}))
    g.add(Unit("calibrate", "calibrate", "calibrate", {"fit_on": "holdout", "models": MODELS},
               deps=tuple(f"predict:{m}" for m in MODELS), main=True))
    if block is None:   # the one-unit pairs stage
        g.add(Unit("pairs", "pairs", "pairs", {"base": "m0", "split": "test", "n_boot": 60, "seed": 3,
                                               "models": MODELS}, deps=("calibrate",)))
    else:
        _add_pairs(g, "m0", "test", 60, 3, MODELS, block)
    return g


def _run(out, block, skills=None):
    store = out / "store"
    if not store.exists():
        with Store.create(store).writer() as w:
            for s in SPLITS:
                w.add_split(s, labels=_labels(s), class_names=[f"c{k}" for k in range(K)],
                            ids=np.array([f"{s}/{i}" for i in range(N)]))
    s = run_graph(_graph(block, skills or {}), out, executor=InlineExecutor(), progress=False)
    assert s.ok, s.failed
    r = s.results["pairs"]
    return s, pd.read_parquet(r["pairs"]), pd.read_parquet(r["model_table"]), r


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """This module's unit in the registry's module list (restored after the tests)."""
    saved = units.MODULES
    units.add_modules(__name__)
    yield
    units.MODULES = saved


@pytest.fixture(scope="module")
def one_unit(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("one"), None)


@pytest.mark.parametrize("block", [2, 3, 64])
def test_blocks_give_the_one_unit_tables_exactly(tmp_path, one_unit, block):
    _, pt1, mt1, r1 = one_unit
    s, pt, mt, r = _run(tmp_path, block)
    n_blocks = len(pairs_blocks("m0", MODELS, block))
    assert n_blocks == {2: 4, 3: 3, 64: 1}[block]
    assert sorted(u for u in s.ran if u.startswith("pairs-block:")) == [f"pairs-block:{k}" for k in range(n_blocks)]
    assert len(pt1) == 7 and list(pt1["model_b"]) == MODELS[1:]
    pd.testing.assert_frame_equal(pt, pt1, check_exact=True)
    pd.testing.assert_frame_equal(mt, mt1, check_exact=True)
    assert pt.attrs["n_boot"] == pt1.attrs["n_boot"] == 60 and pt.attrs["base"] == "m0"
    assert r["accuracy"] == r1["accuracy"] and r["base"] == r1["base"] == "m0"
    assert np.isfinite(pt.filter(like="_lo").to_numpy()).any()   # intervals were drawn
    # the base is prepared once (pairs-base) and every block uses its summaries
    assert "pairs-base" in s.ran
    assert all(s.results[f"pairs-block:{k}"]["base_summary_reused"] for k in range(n_blocks))


def test_a_changed_model_reruns_its_block_and_the_merge_only(tmp_path, tmp_path_factory):
    out = tmp_path / "blocks"
    _run(out, 2)
    s, pt, mt, _ = _run(out, 2)
    assert s.ran == []   # a rerun computes nothing
    # m5 is the 5th model besides the base: block 2 of the blocks of 2 (m5, m6)
    assert pairs_blocks("m0", MODELS, 2)[2] == ["m5", "m6"]
    time.sleep(1.1)   # calibrate reruns: its records' times change, which must not rerun other blocks
    s, pt, mt, _ = _run(out, 2, {"m5": 2.5})
    assert "predict:m5" in s.ran and "calibrate" in s.ran
    assert sorted(u for u in s.ran if u.startswith("pairs-block:")) == ["pairs-block:2"]
    assert sorted(u for u in s.cached if u.startswith("pairs-block:")) == ["pairs-block:0", "pairs-block:1",
                                                                          "pairs-block:3"]
    assert "pairs" in s.ran
    assert "pairs-base" in s.cached   # the base did not change: its summaries are not computed again
    # what the cached blocks kept plus the recomputed block is the one-unit table of the changed zoo
    _, pt1, mt1, _ = _run(tmp_path_factory.mktemp("one-changed"), None, {"m5": 2.5})
    pd.testing.assert_frame_equal(pt, pt1, check_exact=True)
    pd.testing.assert_frame_equal(mt, mt1, check_exact=True)


def test_base_summaries_that_do_not_match_are_not_used(tmp_path, one_unit):
    """pair_counts uses given summaries only when they were computed from what it reads (score kind,
    content hash, temperature), and a block ignores a summary file whose sha256 differs from the
    one recorded: either way the base is prepared anew and the counts are those of a plain run."""
    from divergent.analyses.pairs import model_summary, pair_counts
    from divergent.study.stages import _base_summary

    _run(tmp_path, 3)
    store = tmp_path / "store"
    plain = pair_counts(store, split="test", base="m0", models=MODELS[:3], cache=False)
    key, summ = model_summary(store, split="test", model="m0")
    good = pair_counts(store, split="test", base="m0", models=MODELS[:3], cache=False, prepared={"m0": (key, summ)})
    assert good.attrs["summaries_reused"] == ["m0"]
    pd.testing.assert_frame_equal(good, plain, check_exact=True)
    stale = {**key, "temperature": repr(float(key["temperature"]) * 2)}
    wrong = {k: v.copy() for k, v in summ.items()}
    wrong["pred"][:] = 0   # summaries of another model: must not be used under a stale key
    got = pair_counts(store, split="test", base="m0", models=MODELS[:3], cache=False, prepared={"m0": (stale, wrong)})
    assert got.attrs["summaries_reused"] == []
    pd.testing.assert_frame_equal(got, plain, check_exact=True)

    f = tmp_path / "summary.npz"
    np.savez(f, **summ)
    from divergent._files import sha256_file

    class Ctx:
        deps = {"pairs-base": {"summary": str(f), "sha256": sha256_file(f), "key": key}}

    assert set(_base_summary(Ctx, "m0")) == {"m0"}
    f.write_bytes(f.read_bytes()[:-8] + b"\0" * 8)   # a damaged file: not used
    assert _base_summary(Ctx, "m0") == {}


def test_pairs_block_below_one_is_refused(tmp_path):
    with pytest.raises(DivergentError, match="run.pairs_block"):
        C.load("fashion-mnist-quick", {"run.pairs_block": 0})
    assert C.load("fashion-mnist-quick").run.pairs_block == 64
    out = tmp_path / "o"
    assert main(["study", "run", "fashion-mnist-quick", "--out", str(out), "--set", "run.pairs_block=0",
                 "--no-progress"]) == 2
    assert not (out / ".study").exists()


class _Pool:
    """Runs each call at once but, unlike the inline executor, through submit(): the runner treats
    its units as running on workers (it submits every ready unit before collecting any)."""

    name, workers = "pool", 4

    def __init__(self, out):
        self.out, self.inputs_done_at_block = out, []

    def submit(self, call):
        from concurrent.futures import Future

        from divergent.study.cache import UnitCache
        from divergent.study.executors import run_unit_call

        if call.ctx.unit.startswith("pairs-block:"):
            cache = UnitCache(self.out)
            self.inputs_done_at_block.append(sum(cache.record(f"pairs-inputs:{k}") is not None for k in range(4)))
        f = Future()
        f.set_result(run_unit_call(call))
        return f

    def shutdown(self, wait=True):
        pass


def test_the_blocks_are_ready_together(tmp_path):
    """Every block's inputs unit (in the runner's process) runs before the first block is handed to
    a worker, so the blocks can run side by side."""
    out = tmp_path / "o"
    with Store.create(out / "store").writer() as w:
        for s in SPLITS:
            w.add_split(s, labels=_labels(s), class_names=[f"c{k}" for k in range(K)],
                        ids=np.array([f"{s}/{i}" for i in range(N)]))
    pool = _Pool(out)
    s = run_graph(_graph(2, {}), out, executor=pool, progress=False)
    assert s.ok, s.failed
    assert pool.inputs_done_at_block == [4, 4, 4, 4]


@unit(name="test-pairs-blocks.blas", version=1)
def _blas_threads(ctx) -> dict:
    from threadpoolctl import threadpool_info

    return {"openblas": sorted({i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"})}


def test_local_workers_use_one_blas_thread_like_ray_tasks(tmp_path, monkeypatch):
    """numpy's OpenBLAS takes its thread count when it loads, and that count changes the last bits
    of results (a linear head's logits, then the temperatures and every table after them): a local
    worker starts with one BLAS thread, as a Ray task of one CPU does, whatever the machine's cores."""
    import os

    pytest.importorskip("threadpoolctl")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: one BLAS thread either way")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    from divergent.study.executors import LocalExecutor, UnitCall, UnitContext

    ex = LocalExecutor(workers=1)
    try:
        ctx = UnitContext(unit="blas", out=tmp_path, store=tmp_path / "store", work=tmp_path)
        got = ex.submit(UnitCall("test-pairs-blocks.blas", units.modules(), ctx, {})).result(timeout=120)
    finally:
        ex.shutdown()
    assert got["openblas"] == [1]


def test_units_run_with_one_blas_thread_in_the_runners_process_too(tmp_path):
    """The inline executor (and main-process units such as calibrate) run units in a process whose
    OpenBLAS may use every core: the unit still computes with its one thread, and the process gets
    its own count back afterwards."""
    from threadpoolctl import threadpool_info

    from divergent.study.executors import InlineExecutor, UnitCall, UnitContext

    def blas():
        return sorted({i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"})

    before = blas()
    if not before or max(before) < 2:
        pytest.skip("this process's OpenBLAS has one thread already")
    ctx = UnitContext(unit="blas", out=tmp_path, store=tmp_path / "store", work=tmp_path)
    got = InlineExecutor().submit(UnitCall("test-pairs-blocks.blas", units.modules(), ctx, {})).result()
    assert got["openblas"] == [1]
    assert blas() == before
