"""A unit that reads some models of the store (``Resources(reads=("store-models",))``) gets only
their part of it on a node without the driver's disk: the store's metadata and those models'
arrays on its split. The part opens as a store and reads those models as the whole store does; a
model outside it is an error naming the model. On a multi-node Ray cluster (conftest's `cluster`)
the pairs stage in blocks ships each block its models only and gives the one-unit tables."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from divergent.errors import CorruptStoreError, DivergentError
from divergent.store import Store
from divergent.study import Graph, Unit, run_graph, units
from divergent.study.plan import pairs_blocks
from divergent.study.ray_cluster import store_files, store_key, store_paths, write_files
from divergent.study.units import Resources, store_reads, unit

from test_pairs_blocks import MODELS, _graph, _run   # the pairs-blocks tests' synthetic zoo: 8 models

BLOCKS = [["m1", "m2"], ["m3", "m4"], ["m5", "m6"], ["m7"]]   # the blocks of 2 of its models but the base m0


@unit(name="test-ray-store-subset.peek", version=1, resources=Resources(reads=("store-models",)))
def _peek(ctx, *, models: list, read: str, split: str) -> dict:
    """Reads the logits of `read` (declaring `models` only) and what is in its copy of the store."""
    st = Store.open(ctx.store)
    root = Path(ctx.store)
    held = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return {"sum": float(np.asarray(st.array(read, split, "logits"), dtype=np.float64).sum()), "held": held}


@pytest.fixture(scope="module", autouse=True)
def _registered():
    """This module's unit and the pairs-blocks tests' in the registry's module list (restored after)."""
    saved = units.MODULES
    units.add_modules("test_pairs_blocks", __name__)
    yield
    units.MODULES = saved


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    """The synthetic zoo's study in blocks of 2, inline: its store, pairs table and model table."""
    out = tmp_path_factory.mktemp("inline")
    _, pt, mt, _ = _run(out, 2)
    return out / "store", pt, mt


def expected(store: Path, models: list[str], split: str | None) -> set[str]:
    """What the part of `store` for `models` (on `split`) holds, read from its manifest."""
    st = Store.open(store)
    want = {"manifest.json"}
    for s in st.splits:
        want |= {st.split_info(s, "labels")["path"], st.split_info(s, "ids")["path"]}
    for m in models:
        for s in st.model_splits(m):
            if split in (None, s):
                want |= {st.info(m, s, k)["path"] for k in st.kinds(m, s)}
    return want


# ---------------------------------------------------------------- no cluster needed

def test_the_rule_reads_model_base_and_models_and_the_split():
    units.load()
    assert store_reads({"base": "m0", "models": ["m1", "m0", "m2"], "split": "test", "n_boot": 3}) == (
        ["m0", "m1", "m2"], "test")
    assert store_reads({"model": "a/b", "grid": None}) == (["a/b"], None)
    for bad in ({"models": [1, 2]}, {"model": 3}):
        with pytest.raises(DivergentError, match="does not name models"):
            store_reads(bad)
    with pytest.raises(DivergentError, match="names the whole store and some of its models"):
        Resources(reads=("store", "store-models"))
    with pytest.raises(DivergentError, match="no parameter that names models"):
        unit(name="test-ray-store-subset.nameless", version=1,
             resources=Resources(reads=("store-models",)))(lambda ctx, *, split: {})
    assert units.spec("pairs-block").resources.reads == ("store-models",)
    assert units.spec("head").resources.reads == ("store-models",)


def test_the_part_of_a_store_holds_its_models_only_and_reads_them_as_the_whole(inline, tmp_path):
    from divergent.analyses.pairs import pair_counts

    store = inline[0]
    whole = store_paths(store)
    assert any(p.startswith("cache/pairs/") for p in whole)         # derived results: in the whole store only
    assert "cache/verdicts.json" not in whole                       # this machine's hash verdicts: never shipped
    part = store_paths(store, ["m0", "m3", "nope"], "test")          # a model not in the store: nothing of it
    assert set(part) == expected(store, ["m0", "m3"], "test") and len(part) == 1 + 4 + 2
    assert set(store_paths(store, ["m3"])) == expected(store, ["m3"], None)   # no split: every split

    files = store_files(store, ["m0", "m3"], "test")
    assert sum(map(len, files.values())) < sum((store / p).stat().st_size for p in whole) / 2
    copy = tmp_path / "node"
    write_files(files, {"store": str(copy)})
    st, orig = Store.open(copy), Store.open(store)
    assert st.models == orig.models and st.temperature("m7") == orig.temperature("m7")   # the whole manifest
    np.testing.assert_array_equal(st.array("m3", "test", "logits"), orig.array("m3", "test", "logits"))
    pd.testing.assert_frame_equal(pair_counts(copy, split="test", base="m0", models=["m0", "m3"], cache=False),
                                  pair_counts(store, split="test", base="m0", models=["m0", "m3"], cache=False))
    with pytest.raises(DivergentError, match=r"model 'm5' is not in this copy of the store.*'m0', 'm3' on split "
                                             r"'test' only") as e:
        st.array("m5", "test", "logits")
    assert not isinstance(e.value, CorruptStoreError) and "model, base and models" in str(e.value)
    with pytest.raises(DivergentError, match=r"model 'm3' on split 'holdout' is not in this copy"):
        st.array("m3", "holdout", "logits")

    # the key of a part changes with its own files only
    key = store_key(store, ["m0", "m3"], "test")
    other = store / Store.open(store).info("m5", "test", "logits")["path"]
    mine = store / Store.open(store).info("m3", "test", "logits")["path"]
    t = time.time() + 5
    os.utime(other, (t, t))
    assert store_key(store, ["m0", "m3"], "test") == key
    os.utime(mine, (t, t))
    assert store_key(store, ["m0", "m3"], "test") != key


def test_large_files_travel_memory_mapped_without_a_copy(tmp_path, inline, monkeypatch):
    """A file of at least MAP_MIN_BYTES is shipped as a read-only memory map, a plain uint8 array
    whose pickle (protocol 5, what Ray uses) carries its bytes out of band: Ray copies the pages
    into the object store and the driver never holds the file in its own memory. The node writes
    it back byte for byte."""
    import pickle

    from divergent.study import ray_cluster

    store = inline[0]
    monkeypatch.setattr(ray_cluster, "MAP_MIN_BYTES", 1)   # every (non-empty) file mapped
    files = store_files(store, ["m0", "m3"], "test")
    mapped = {k: v for k, v in files.items() if not isinstance(v, bytes)}
    assert set(mapped) == {f"store/{p}" for p in expected(store, ["m0", "m3"], "test")}
    for key, arr in mapped.items():
        assert type(arr) is np.ndarray and arr.dtype == np.uint8 and not arr.flags.writeable
        assert bytes(arr) == (store / key.partition("/")[2]).read_bytes()
        out_of_band = []
        head = pickle.dumps(arr, protocol=5, buffer_callback=out_of_band.append)
        assert len(out_of_band) == 1 and len(head) < 1024, key   # the bytes are not in the pickle
    copy = tmp_path / "node"
    write_files(files, {"store": str(copy)})
    np.testing.assert_array_equal(Store.open(copy).array("m3", "test", "logits"),
                                  Store.open(store).array("m3", "test", "logits"))


# ---------------------------------------------------------------- on a local multi-node cluster

@pytest.fixture(scope="module")
def on_ray(cluster, inline):
    """The same study on the cluster, shared_fs off: its summary, tables and the executor."""
    from divergent.study.executors import RayExecutor

    out = cluster.watch / "subset"
    with Store.create(out / "store").writer() as w:   # the inline run's splits
        st = Store.open(inline[0])
        for s in st.splits:
            sd = st.split(s)
            w.add_split(s, labels=sd.labels, class_names=list(sd.class_names), ids=sd.ids)
    ex = RayExecutor(address=cluster.address, shared_fs=False)
    from divergent.study import ray_cluster

    with pytest.MonkeyPatch.context() as mp:   # every shipped file memory-mapped, as large ones are
        mp.setattr(ray_cluster, "MAP_MIN_BYTES", 1)
        s = run_graph(_graph(2, {}), out, executor=ex, progress=False)
    return s, ex, out


@pytest.mark.timeout(180)
def test_each_block_is_shipped_its_models_only_and_the_tables_equal_inline(on_ray, inline, cluster):
    s, ex, out = on_ray
    assert s.ok, s.failed
    assert pairs_blocks("m0", MODELS, 2) == BLOCKS
    _, pt, mt = inline
    pd.testing.assert_frame_equal(pd.read_parquet(s.results["pairs"]["pairs"]), pt, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(s.results["pairs"]["model_table"]), mt, check_exact=True)
    store = out / "store"
    whole = sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and ".staging" not in p.parts)
    for k, block in enumerate(BLOCKS):
        got = ex.shipped[f"pairs-block:{k}"]
        assert {f.partition("/")[2] for f in got} == expected(store, ["m0", *block], "test") | {".partial.json"}
        assert sum(got.values()) < whole / 2
        assert s.results[f"pairs-block:{k}"]["base_summary_reused"]   # the base's summaries came from pairs-base
    # the base is prepared once, by pairs-base, shipped the base's arrays only
    assert {f.partition("/")[2] for f in ex.shipped["pairs-base"]} == expected(store, ["m0"], "test") | {".partial.json"}
    assert cluster.opened_under(out) == []   # nothing read the driver's directory in place
    # the driver's hash verdicts are its own: a node's (its inodes, its part) never replace them
    from divergent.store.verdicts import file_sig

    v = json.loads((store / "cache" / "verdicts.json").read_text())["files"]
    assert v and all(list(file_sig(os.stat(store / rel))) == e[1:5] for rel, e in v.items())
    assert not ex._subsets                   # no part of the store is held once its units ended


@pytest.mark.timeout(120)
def test_reading_a_model_outside_the_part_names_the_model(on_ray, cluster):
    from divergent.study.executors import RayExecutor

    _, _, out = on_ray
    g = Graph()
    g.add(Unit("peek:ok", "analyses", _peek, {"models": ["m2"], "read": "m2", "split": "test"}))
    g.add(Unit("peek:other", "analyses", _peek, {"models": ["m2"], "read": "m4", "split": "test"}))
    s = run_graph(g, out, executor=RayExecutor(address=cluster.address, shared_fs=False), progress=False)
    ref = float(np.asarray(Store.open(out / "store").array("m2", "test", "logits"), dtype=np.float64).sum())
    assert s.results["peek:ok"]["sum"] == ref
    assert set(s.results["peek:ok"]["held"]) == expected(out / "store", ["m2"], "test") | {".partial.json"}
    err = s.failed["peek:other"]
    assert err.startswith("DivergentError:") and "model 'm4' is not in this copy of the store" in err, err
    assert "'m2' on split 'test' only" in err and "Traceback" not in err and "same path" not in err
