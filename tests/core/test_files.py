"""The one file module (divergent._files): what every atomic writer guarantees (the user's umask,
fsync of the file and of its directory, unique marked temporaries that a later process can tell
apart, nothing torn or left behind on an error), the sha256 family and the store names that depend
on it staying the same, the shared assets folder, and the store's read API for what callers used
to compute themselves."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from divergent import _files
from divergent.errors import DivergentError
from divergent.store import Store, extract_job_dir, stage_entry


@pytest.fixture
def group_umask():
    """umask 002 (a group-shared setup): files must come out 0664, not 0644 or 0600."""
    old = os.umask(0o002)
    yield 0o002
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _writers(d: Path) -> dict[str, Path]:
    """One file written by each writer of the family; name -> its path (the content-addressed
    array is written as arr.npy and renamed to arr-<sha256>.npy)."""
    out = {}
    out["bytes"] = d / "a.bin"
    _files.atomic_write_bytes(out["bytes"], b"x")
    out["text"] = d / "t.txt"
    _files.atomic_write_text(out["text"], "é")
    out["json"] = d / "j.json"
    _files.atomic_write_json(out["json"], {"b": 1})
    out["npy"] = d / "a.npy"
    _files.atomic_save_npy(out["npy"], np.arange(3))
    out["addressed"], _ = _files.save_npy_addressed(d, "arr", np.arange(4))
    out["path"] = d / "p.parquet"
    with _files.atomic_path(out["path"]) as tmp:
        pd.DataFrame({"a": [1]}).to_parquet(tmp)
    out["open"] = d / "o.npz"
    with _files.atomic_open(out["open"]) as f:
        np.savez(f, a=np.arange(2))
    out["temp"] = d / "c.npy"
    tmp = _files.reserve_temp(out["temp"])
    with open(tmp, "wb") as f:
        np.save(f, np.arange(2))
    _files.commit_temp(tmp, out["temp"])
    return out


def test_every_writer_leaves_the_mode_the_umask_gives(tmp_path, group_umask):
    want = 0o666 & ~group_umask
    for name, p in _writers(tmp_path).items():
        assert _mode(p) == want, f"{name}: {oct(_mode(p))}, want {oct(want)}"
    # the store's own files: a store shared by a group stays writable by the group
    st = Store.create(tmp_path / "s")
    with st.writer() as w:
        w.add_split("test", labels=[0, 1], class_names=["a", "b"], ids=["x", "y"])
    assert _mode(st.root / "manifest.json") == want
    assert _mode(st.root / st.split_info("test", "labels")["path"]) == want
    assert _mode(st.root / ".lock") == want
    stage = stage_entry(st.root, "m", "test", arrays={"logits": np.zeros((2, 2), np.float32)})
    assert _mode(stage / "entry.json") == want and _mode(stage / "logits.npy") == want


def test_every_writer_fsyncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    paths = _writers(tmp_path)
    synced_names = [Path(s).name for s in synced]
    for name, p in paths.items():
        written_as = "arr.npy" if name == "addressed" else p.name
        assert any(_files.is_temp_name(s) and s.startswith(f".{written_as}.") for s in synced_names), \
            f"{name}: the file was not fsynced before its rename"
    assert synced.count(str(tmp_path)) == len(paths), "a rename was not made durable (directory fsync)"


def test_temporaries_are_unique_marked_and_never_left_behind(tmp_path):
    final = tmp_path / "t.parquet"
    final.write_bytes(b"old")
    with _files.atomic_path(final) as a, _files.atomic_path(final) as b:
        assert a != b  # two writers of one file never share a temporary
        for t in (a, b):
            assert _files.is_temp_name(t.name) and _files.producer_alive(t.name) is True
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert final.read_bytes() == b"a"  # the last to finish wins, whole
    with pytest.raises(RuntimeError):
        with _files.atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        with _files.atomic_open(final) as f:
            f.write(b"half")
            raise RuntimeError("killed mid-write")
    with pytest.raises(ValueError):
        _files.atomic_save_npy(tmp_path / "o.npy", np.array([object()]))  # refused mid-write (no pickles)
    assert final.read_bytes() == b"a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_a_temporary_of_a_dead_writer_is_a_leftover(tmp_path):
    code = ("import os, sys; from pathlib import Path; from divergent import _files; "
            "t = _files.reserve_temp(Path(sys.argv[1])); print(t)")
    dead = Path(subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.bin")], check=True,
                               capture_output=True, text=True).stdout.strip())
    assert dead.exists() and _files.temp_is_leftover(dead)
    mine = _files.reserve_temp(tmp_path / "y.bin")
    assert not _files.temp_is_leftover(mine)


def test_the_sha256_family_and_the_names_built_on_it_stay_the_same(tmp_path):
    data = os.urandom(5000)
    (tmp_path / "f").write_bytes(data)
    assert _files.sha256_file(tmp_path / "f") == _files.sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    obj = {"b": 1, "a": [1, 2.5, "x"], "p": None}
    assert _files.canonical_json(obj) == '{"a":[1,2.5,"x"],"b":1,"p":null}'
    # values computed by the helpers these replaced: study unit keys, store cache keys, extraction
    # fingerprints and model folders of existing stores must not change
    assert _files.canonical_json_sha256(obj) == "e6211200058dab13fc11d6c8de5699e37d75192a225433cefe8485e1573bf50c"
    from divergent.extract.chunks import fingerprint
    from divergent.store.cache import cache_key
    from divergent.store.layout import dir_key

    assert cache_key("pairs/test", {"engine": "1", "a": {"t": "1.5"}}) == "3cc76f89100a3756e0b5711009fac2fd"
    assert fingerprint(model="m", n=3, ids=["a", "b"]) == "ec0248743eb53668"
    assert [dir_key(n) for n in ("timm:resnet50.a1_in1k", "fmnist/cnn base", "...")] == [
        "timm_resnet50.a1_in1k-efa4db9d", "fmnist_cnn_base-a2632fca", "m-6eae3a5b"]
    assert extract_job_dir(tmp_path, "fmnist/cnn base", "test") == tmp_path / ".staging/extract/fmnist_cnn_base-a2632fca.test"
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "g").write_bytes(b"1")
    want = hashlib.sha256(b"e/g\0" + hashlib.sha256(b"1").hexdigest().encode()).hexdigest()
    assert _files.sha256_tree(tmp_path / "d") == want


def test_one_shared_root_for_datasets_and_model_assets(tmp_path, monkeypatch):
    import divergent.data.locate as locate
    import divergent.sources as sources
    from divergent.sources.registry import resolve_path

    assert sources.shared_root is _files.shared_root
    (tmp_path / "sh" / "models").mkdir(parents=True)
    (tmp_path / "sh" / "models" / "w.th").write_bytes(b"w")
    monkeypatch.setenv("DIVERGENT_SHARED", str(tmp_path / "sh"))
    assert _files.shared_root() == tmp_path / "sh"
    assert resolve_path("$SHARED/models/w.th") == tmp_path / "sh" / "models" / "w.th"
    assert locate._system_roots("cifar10-jpeg") == [("shared", tmp_path / "sh" / "data" / "cifar10-jpeg")]
    # a DIVERGENT_SHARED that names no folder is never replaced by another folder
    monkeypatch.chdir(tmp_path / "sh")
    (tmp_path / "sh" / "shared").mkdir()
    monkeypatch.setenv("DIVERGENT_SHARED", str(tmp_path / "nowhere"))
    assert _files.shared_root() is None
    assert locate._system_roots("cifar10-jpeg") == []
    with pytest.raises(DivergentError, match="DIVERGENT_SHARED"):
        resolve_path("$SHARED/models/w.th")
    # unset: `shared` beside the checkout, else beside the working directory, else in it
    monkeypatch.delenv("DIVERGENT_SHARED")
    beside_checkout = Path(_files.__file__).resolve().parents[2].parent / "shared"
    assert _files.shared_candidates() == [beside_checkout, tmp_path / "shared", tmp_path / "sh" / "shared"]
    assert _files.shared_root() == (beside_checkout if beside_checkout.is_dir() else tmp_path / "sh" / "shared")


def test_the_store_answers_what_callers_used_to_compute(toy_store):
    st = toy_store
    with st.writer() as w:
        w.put("dec", "test", pred=np.zeros(600, np.int64))
        w.put("pr", "test", probs=np.full((600, 5), 0.2, np.float32))
    st = Store.open(st.root)
    assert st.has_scores("m0", "test") and st.has_scores("pr", "test")
    assert not st.has_scores("dec", "test") and not st.has_scores("m0", "nope")
    labels = st.split_info("test", "labels")
    assert st.labels_sha256("test") == labels["sha256"] == _files.sha256_file(st.root / labels["path"])
    assert np.array_equal(st.predictions("m0", "test"), np.argmax(st.array("m0", "test", "logits"), axis=1))
    assert np.array_equal(st.predictions("dec", "test"), np.zeros(600))
    with pytest.raises(DivergentError):
        st.split_info("test", "logits")
    cache = st.derived_cache("pairs", "a/b")
    assert cache.dir == st.root / "cache" / "pairs" / "a__b"
    p = cache.put({"x": "1"}, {"codes": np.arange(3, dtype=np.uint8)})
    assert p.parent == cache.dir and np.array_equal(cache.get({"x": "1"})["codes"], np.arange(3))
    assert st.verify() == []


def test_write_table_is_atomic_and_marked(tmp_path, monkeypatch):
    from divergent.cli._output import write_table

    seen = []
    real = pd.DataFrame.to_csv

    def spy(self, path, *a, **k):
        seen.append(Path(path))
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", spy)
    out = tmp_path / "t.csv"
    write_table(pd.DataFrame({"a": [1, 2]}), out)
    assert pd.read_csv(out)["a"].tolist() == [1, 2]
    assert _files.producer_alive(seen[0].name) is True  # a marked, unique temporary, not t.csv.tmp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
