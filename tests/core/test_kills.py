"""Kills (os._exit at a named point, like kill -9; DIVERGENT_CRASH_AT) of import, calibrate,
extraction and a tiny study: the store stays consistent, `verify` lists what the killed process
left behind as leftovers (never as problems), and the rerun ends bit-identical to an uninterrupted
run with no leftovers."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from divergent.cli import main
from divergent._files import CRASH_EXIT
from divergent.store import Store, verify_store

ROOT = Path(__file__).resolve().parents[2]


def run_killed(code: str, point: str, *args, timeout: float = 120) -> None:
    """Run `code` in a child that dies at `point`; it must die there (not finish, not fail)."""
    env = dict(os.environ, DIVERGENT_CRASH_AT=point, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == CRASH_EXIT, f"exit {r.returncode}, not killed at {point}:\n{r.stderr[-2000:]}"


CLI = "import sys; from divergent.cli import main; sys.exit(main(sys.argv[1:]))"


def state(root: Path) -> dict:
    """What a store holds: per model and split the sha256 of each array, and the temperatures."""
    m = json.loads((root / "manifest.json").read_text())
    return {name: ({s: {k: a["sha256"] for k, a in se["arrays"].items()} for s, se in e["splits"].items()},
                   (e.get("calibration") or {}).get("temperature"))
            for name, e in m["models"].items()}


def consistent_with_leftovers(root: Path) -> list:
    rep = verify_store(root)
    assert rep.problems == []
    return rep.leftovers


@pytest.fixture
def two_stores(toy_store, tmp_path):
    """The toy store and an identical copy: one gets killed and resumed, the other runs clean."""
    import shutil

    clean = tmp_path / "clean"
    shutil.copytree(toy_store.root, clean)
    return toy_store.root, clean


@pytest.mark.parametrize("point", ["tmp-written:logits.npy", "tmp-written:manifest.json", "manifest-published"])
def test_import_killed_then_rerun(two_stores, tmp_path, point):
    killed, clean = two_stores
    rng = np.random.default_rng(4)
    f = tmp_path / "new.npz"
    np.savez(f, logits=rng.normal(size=(600, 5)).astype(np.float32), ids=[f"test/{i:04d}" for i in range(600)][::-1])
    args = ["import", "--split", "test", "--model", "new", "--force"]
    run_killed(CLI, point, *args[:1], killed, f, *args[1:])
    left = consistent_with_leftovers(killed)
    if point.startswith("tmp-written"):
        assert left and "new" not in Store.open(killed).models
    assert main([args[0], str(killed), str(f), *args[1:]]) == 0
    assert main([args[0], str(clean), str(f), *args[1:]]) == 0
    assert state(killed) == state(clean)
    assert verify_store(killed).leftovers == []


@pytest.mark.parametrize("point", ["calibrate-fitted", "tmp-written:manifest.json"])
def test_calibrate_killed_then_rerun(two_stores, point):
    killed, clean = two_stores
    run_killed(CLI, point, "calibrate", killed, "--fit-on", "holdout")
    left = consistent_with_leftovers(killed)
    assert bool(left) == (point != "calibrate-fitted")
    assert Store.open(killed).temperature("m0") is None
    assert main(["calibrate", str(killed), "--fit-on", "holdout"]) == 0
    assert main(["calibrate", str(clean), "--fit-on", "holdout"]) == 0
    assert state(killed) == state(clean) and state(clean)["m0"][1] is not None
    assert verify_store(killed).leftovers == []


# ---------------------------------------------------------------- extraction (real JPEGs, a real model)
EXTRACT = """
import sys, torch
torch.set_num_threads(1)
from divergent.extract import extract
extract(sys.argv[1], "cifar10/resnet20", sys.argv[2], "test", batch_size=8, device="cpu", workers=0,
        progress=False, chunk_images=8, runtime="torch")
"""


@pytest.fixture(scope="module")
def jpegs(shared_dir, tmp_path_factory):
    spec = importlib.util.spec_from_file_location("extract_conftest", ROOT / "tests" / "extract" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.cifar_folder(shared_dir, tmp_path_factory.mktemp("jpegs"), 10)  # 100 images, a third in 'test'


@pytest.fixture(scope="module")
def clean_extraction(jpegs, tmp_path_factory):
    from divergent.extract import extract

    root = tmp_path_factory.mktemp("clean") / "S"
    extract(root, "cifar10/resnet20", str(jpegs), "test", batch_size=8, device="cpu", workers=0, progress=False,
            chunk_images=8, runtime="torch")
    st = Store.open(root)
    return {k: np.asarray(st.array("cifar10/resnet20", "test", k)) for k in ("logits", "features")}


@pytest.mark.parametrize("point", ["chunk-written@2", "staged"])
def test_extraction_killed_then_resumed_bit_identical(jpegs, clean_extraction, tmp_path, point, one_torch_thread):
    from divergent.extract import extract

    root = tmp_path / "S"
    run_killed(EXTRACT, point, root, jpegs)
    left = consistent_with_leftovers(root)
    assert len(left) == 1 and left[0][0].name.endswith(".tmp")
    n = len(clean_extraction["logits"])
    chunks = sorted((root / ".staging" / "extract").glob("*/chunk-*.npz"))
    assert len(chunks) == (1 if point.startswith("chunk") else -(-n // 8))  # kept: the resume starts from them
    r = extract(root, "cifar10/resnet20", str(jpegs), "test", batch_size=8, device="cpu", workers=0, progress=False,
                chunk_images=8, runtime="torch")
    assert r["resumed_from"] == (8 if point.startswith("chunk") else n)
    st = Store.open(root)
    for k, want in clean_extraction.items():
        assert np.array_equal(np.asarray(st.array("cifar10/resnet20", "test", k)), want)
    rep = verify_store(root)
    assert rep.problems == [] and rep.leftovers == [] and rep.pending == []
    assert not list((root / ".staging").rglob("*.npz"))


# ---------------------------------------------------------------- a tiny study
UNITS = '''
import numpy as np
from pathlib import Path
from divergent.store import stage_entry
from divergent.study.units import unit

N, C = 400, 4


@unit(name="tiny.data", version=1)
def data(ctx):
    rng = np.random.default_rng(0)
    out = []
    for s in ("holdout", "test"):
        p = Path(ctx.work) / f"{s}.npz"
        np.savez(p, labels=rng.integers(0, C, N), ids=np.array([f"{s}/{i:04d}" for i in range(N)]),
                 class_names=np.array([f"c{i}" for i in range(C)]))
        out.append({"npz": str(p), "name": s, "dataset": "toy"})
    return {"splits": out}


@unit(name="tiny.predict", version=1)
def predict(ctx, *, seed, skill):
    staged = []
    shared = np.random.default_rng(99)
    for i, s in enumerate(("holdout", "test")):
        y = np.load(ctx.dep("data")["splits"][i]["npz"])["labels"]
        z = np.random.default_rng([seed, i]).normal(size=(N, C)) + 0.8 * shared.normal(size=(N, C))
        z[np.arange(N), y] += skill
        staged.append(str(stage_entry(ctx.store, f"m{seed}", s, arrays={"logits": (1.7 * z).astype(np.float32)},
                                      force=True)))
    return {"staged": staged}
'''

STUDY = """
import sys
sys.path.insert(0, sys.argv[2])
from divergent.study import Graph, InlineExecutor, Unit, run_graph, units
saved = units.MODULES
units.add_modules("tiny_units")
try:
    g = Graph()
    g.add(Unit("data", "data", "tiny.data"))
    for i, skill in enumerate((1.0, 1.5, 2.0)):
        g.add(Unit(f"predict:m{i}", "predict", "tiny.predict", {"seed": i, "skill": skill}, deps=("data",)))
    g.add(Unit("calibrate", "calibrate", "calibrate", {"fit_on": "holdout"},
               deps=("predict:m0", "predict:m1", "predict:m2"), main=True))
    g.add(Unit("pairs", "pairs", "pairs", {"base": "m0", "split": "test", "n_boot": 20, "seed": 0},
               deps=("calibrate",), main=True))
    s = run_graph(g, sys.argv[1], executor=InlineExecutor(), progress=False)
finally:
    units.MODULES = saved
assert s.ok, s.failed
"""


def run_study(out: Path, units: Path) -> None:
    saved = sys.argv
    sys.argv = ["study", str(out), str(units)]
    try:
        exec(compile(STUDY, "tiny_study", "exec"), {"__name__": "tiny_study"})
    finally:
        sys.argv = saved
        sys.path[:] = [p for p in sys.path if p != str(units)]
        sys.modules.pop("tiny_units", None)


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("units")
    (d / "tiny_units.py").write_text(textwrap.dedent(UNITS))
    return d


@pytest.fixture(scope="module")
def clean_study(units, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean_study")
    run_study(out, units)
    return out


def pairs_table(out: Path) -> pd.DataFrame:
    (p,) = (out / ".study").rglob("pairs.parquet")
    return pd.read_parquet(p)


@pytest.mark.parametrize("point", ["staged@3", "manifest-published@3", "calibrate-fitted"])
def test_tiny_study_killed_then_resumed_bit_identical(units, clean_study, tmp_path, point):
    out = tmp_path / "study"
    run_killed(STUDY, point, out, units)
    consistent_with_leftovers(out / "store")
    run_study(out, units)
    assert state(out / "store") == state(clean_study / "store")
    pd.testing.assert_frame_equal(pairs_table(out), pairs_table(clean_study), check_exact=True)
    rep = verify_store(out / "store")
    assert rep.problems == [] and rep.leftovers == [] and rep.pending == []
