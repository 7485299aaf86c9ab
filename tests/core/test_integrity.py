"""Integrity of the store: checksum verdicts, the manifest's checksum, the pair cache's key and
checks, the fit-then-write race (calibrate, linear heads), and what counts as a leftover."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import divergent as dv
from divergent.cli import main
from divergent.errors import CorruptStoreError, DivergentError
from divergent import _files
from divergent.store import DerivedCache, Store, leftovers, remove_leftovers, stage_entry, staged_entries, verify_store
from divergent.store import verdicts as _verdicts


@pytest.fixture
def hashes(monkeypatch):
    """Names of the files hashed from now on; verdicts start from nothing (as in a new process),
    and files count as settled however recently they were written."""
    monkeypatch.setattr(_verdicts, "_MEMO", {})
    monkeypatch.setattr(_verdicts, "RACY_S", 0.0)
    monkeypatch.setattr(_verdicts, "RACY_COARSE_S", 0.0)
    calls: list[str] = []
    real = _verdicts.sha256_file

    def spy(path, *a, **k):
        calls.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(_verdicts, "sha256_file", spy)
    return calls


def _flip(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- verdicts
def test_each_array_is_hashed_once_then_trusted_until_it_changes(toy_store, hashes, monkeypatch):
    info = toy_store.info("m0", "test", "logits")
    path = toy_store.root / info["path"]
    Store.open(toy_store.root).array("m0", "test", "logits")
    assert hashes == [path.name]
    st = Store.open(toy_store.root)
    st.array("m0", "test", "logits")
    st.array("m0", "test", "logits")
    assert hashes == [path.name]  # remembered in this process
    monkeypatch.setattr(_verdicts, "_MEMO", {})  # a new process: the verdict file answers
    Store.open(toy_store.root).array("m0", "test", "logits")
    assert hashes == [path.name]
    entry = json.loads((toy_store.root / _verdicts.VERDICTS).read_text())["files"][info["path"]]
    assert entry[0] == info["sha256"]
    # the same bytes written again (new mtime and ctime), or a new inode: hashed again
    path.write_bytes(path.read_bytes())
    Store.open(toy_store.root).array("m0", "test", "logits")
    assert hashes == [path.name] * 2
    shutil.copy(path, path.with_name("copy"))
    os.replace(path.with_name("copy"), path)
    monkeypatch.setattr(_verdicts, "_MEMO", {})
    Store.open(toy_store.root).array("m0", "test", "logits")
    assert hashes == [path.name] * 3
    # a changed byte is caught even though the file was verified before
    _flip(path)
    with pytest.raises(CorruptStoreError, match="does not match its checksum"):
        Store.open(toy_store.root).array("m0", "test", "logits")


def test_a_verdict_needs_all_four_file_attributes(tmp_path, monkeypatch):
    monkeypatch.setattr(_verdicts, "_MEMO", {})
    v = _verdicts.Verdicts(tmp_path)
    sig = (11, 2222, 3_000_000_000_123, 4_000_000_000_456)
    at = sig[3] + 10**10
    v.record("a.npy", sig, "f" * 64, at)
    v.save()
    monkeypatch.setattr(_verdicts, "_MEMO", {})
    fresh = _verdicts.Verdicts(tmp_path)
    assert fresh.lookup("a.npy", sig) == "f" * 64
    for i in range(4):  # inode, size, mtime_ns, ctime_ns
        other = list(sig)
        other[i] += 1
        assert fresh.lookup("a.npy", tuple(other)) is None
    # a file changed just before it was hashed may have changed again in the same clock tick
    v.record("b.npy", sig, "e" * 64, sig[3] + 1_000_000)
    v.save()
    monkeypatch.setattr(_verdicts, "_MEMO", {})
    assert _verdicts.Verdicts(tmp_path).lookup("b.npy", sig) is None


# ---------------------------------------------------------------- the manifest's checksum
def test_a_hand_edited_temperature_is_refused_and_reported(toy_store, capsys):
    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    mf = toy_store.root / "manifest.json"
    text = mf.read_text()
    t = re.search(r'"temperature": (\d\.\d)', text)
    mf.write_text(text[: t.start(1) + 2] + str((int(t[1][2]) + 1) % 10) + text[t.start(1) + 3 :])
    with pytest.raises(CorruptStoreError, match="does not match its checksum"):
        Store.open(toy_store.root)
    with pytest.raises(CorruptStoreError):
        with toy_store.writer():
            pass
    rep = verify_store(toy_store.root)
    assert any("manifest.json does not match its checksum" in p for p in rep.problems)
    assert main(["pairs", str(toy_store.root), "--split", "test", "--n-boot", "0"]) == 2
    assert "checksum" in capsys.readouterr().err


def test_verify_checks_the_manifest_values_against_each_other(toy_store):
    """Values that contradict each other are reported even under a valid checksum (a manifest
    resealed by hand, or written by a faulty producer)."""
    from divergent.store.manifest import sealed as _sealed

    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    mf = toy_store.root / "manifest.json"
    m = json.loads(mf.read_text())
    m["models"]["m1"]["calibration"]["fitted_on_sha256"] = "0" * 64
    m["splits"]["test"]["n_classes"] = 4
    mf.write_text(json.dumps(_sealed(m)))
    problems = verify_store(toy_store.root).problems
    assert any("m1: its temperature was fitted on holdout scores the store no longer holds" in p for p in problems)
    assert any("n_classes 4 but 5 class names" in p for p in problems)
    assert len(problems) == 2


# ---------------------------------------------------------------- the pair cache
def test_the_pair_cache_follows_temperatures_and_content(toy_store):
    """Cached outcome codes are keyed by both temperatures and every input's content hash."""
    dv.calibrate(toy_store, fit_on="holdout", progress=False)
    cols = ["ensemble_acc", "error_inconsistency", "conversion_rate"]
    first = dv.pairs(toy_store, split="test", n_boot=0)
    with toy_store.writer() as w:  # other temperatures, same scores
        w.set_temperature("m0", 0.05, fit_on="holdout")
        w.set_temperature("m2", 20.0, fit_on="holdout")
    cached = dv.pairs(toy_store, split="test", n_boot=0)
    fresh = dv.pairs(toy_store, split="test", n_boot=0, cache=False)
    assert not first[cols].equals(fresh[cols])  # the change matters
    assert cached[cols].equals(fresh[cols])
    dv.pairs(toy_store, split="test", n_boot=0, calibrated=False)
    rng = np.random.default_rng(9)
    with toy_store.writer() as w:  # other scores for m1, same temperature (1)
        w.put("m1", "test", logits=rng.normal(size=(600, 5)).astype(np.float32), force=True)
    cached = dv.pairs(toy_store, split="test", n_boot=0, calibrated=False)
    fresh = dv.pairs(toy_store, split="test", n_boot=0, calibrated=False, cache=False)
    assert cached[cols].equals(fresh[cols])
    assert len(list((toy_store.root / "cache" / "pairs" / "test").glob("*.bin"))) == 3 + 3 + 3 + 2  # one per new (pair, inputs)


def test_a_cache_file_is_checked_on_every_read(toy_store):
    dc = DerivedCache(toy_store.root, "t")
    deps = {"x": "1"}
    p = dc.put(deps, {"codes": np.arange(50, dtype=np.uint8)})
    assert np.array_equal(dc.get(deps)["codes"], np.arange(50))
    assert dc.get({"x": "2"}) is None
    os.replace(p, dc.path({"x": "2"}))  # a file under another key
    with pytest.raises(CorruptStoreError, match="does not belong to its key"):
        dc.get({"x": "2"})


# ---------------------------------------------------------------- fit, then write: the race
def test_calibrate_refits_when_the_scores_change_during_the_fit(toy_store, monkeypatch):
    """An `import --force` of new holdout logits lands between the fit and the write."""
    import divergent.analyses.calibration as cal

    new = (3.0 * np.asarray(toy_store.array("m0", "holdout", "logits"))).astype(np.float32)
    real = cal.fit_temperature
    raced = []

    def fit_then_race(z, y, *a, **k):
        out = real(z, y, *a, **k)
        if not raced:
            raced.append(True)
            with Store.open(toy_store.root).writer(command="import --force") as w:
                w.put("m0", "holdout", logits=new, force=True)
        return out

    monkeypatch.setattr(cal, "fit_temperature", fit_then_race)
    old_fit = real(np.asarray(toy_store.array("m0", "holdout", "logits")), toy_store.split("holdout").labels)
    dv.calibrate(toy_store, fit_on="holdout", models=["m0"], progress=False)
    st = Store.open(toy_store.root)
    rec = st.calibration("m0")
    want = real(new, st.split("holdout").labels).temperature
    assert raced and rec["fitted_on_sha256"] == st.content_hash("m0", "holdout", "logits")
    assert rec["temperature"] == want and want != pytest.approx(old_fit.temperature, rel=0.1)
    assert st.verify() == []


def test_a_temperature_fitted_on_replaced_scores_is_refused(toy_store):
    old = toy_store.content_hash("m1", "holdout", "logits")
    with toy_store.writer() as w:
        w.put("m1", "holdout", logits=np.ones((600, 5), np.float32), force=True)
    with pytest.raises(DivergentError, match="changed while its temperature was being fitted"):
        with toy_store.writer() as w:
            w.set_temperature("m1", 1.5, fit_on="holdout", fitted_on_sha256=old)


def test_a_linear_head_is_refused_when_its_features_change_during_the_fit(tmp_path, monkeypatch, one_torch_thread):
    """Real images (scikit-learn digits) as features; the train features are replaced mid-fit."""
    from sklearn.datasets import load_digits

    import divergent.probes.heads as heads

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    st = Store.create(tmp_path / "s")
    parts = {"train": slice(0, 600), "holdout": slice(600, 900), "test": slice(900, 1200)}
    with st.writer() as w:
        for s, sl in parts.items():
            w.add_split(s, labels=y[sl], class_names=[str(c) for c in range(10)],
                        ids=[f"digits/{i:04d}" for i in range(sl.start, sl.stop)], dataset="digits")
            w.put("pixels", s, features=X[sl])
    real = heads.resolve_grid  # called once the head is fitted and applied, before the write

    def race_then_go_on(*a, **k):
        with Store.open(st.root).writer() as w:
            w.put("pixels", "train", features=X[parts["train"]][::-1].copy(), force=True)
        return real(*a, **k)

    monkeypatch.setattr(heads, "resolve_grid", race_then_go_on)
    with pytest.raises(DivergentError, match="changed while the linear head"):
        heads.fit_head(st, "pixels", grid=[1e-3])
    assert not Store.open(st.root).has("pixels", "test", "logits")


# ---------------------------------------------------------------- leftovers
_DIE = "import os, sys; from pathlib import Path; from divergent import _files; p, fd = _files.open_temp(Path(sys.argv[1])); os.write(fd, b'x'); os._exit(0)"


def _dead_temp(final: Path) -> Path:
    """A marked temporary beside `final`, made by a process that has exited."""
    final.parent.mkdir(parents=True, exist_ok=True)
    before = set(final.parent.iterdir())
    subprocess.run([sys.executable, "-c", _DIE, str(final)], check=True)
    (p,) = set(final.parent.iterdir()) - before
    return p


def test_what_is_a_leftover_and_what_is_not(toy_store, capsys):
    root = toy_store.root
    pending = stage_entry(root, "m9", "test", arrays={"logits": np.zeros((600, 5), np.float32)})
    committed = stage_entry(root, "m8", "test", arrays={"logits": np.ones((600, 5), np.float32)})
    import divergent.store.staging as staging_mod

    keep = staging_mod.remove_committed
    staging_mod.remove_committed = lambda stage: None  # killed right after the manifest was published
    try:
        with toy_store.writer() as w:
            w.commit_staged(committed)
    finally:
        staging_mod.remove_committed = keep
    dead = _dead_temp(root / "cache" / "pairs" / "test" / "x.bin")
    tmp, fd = _files.open_temp(root / "cache" / "mine.json")  # this process runs: not a leftover
    os.close(fd)
    other_host = root / "cache" / ".y.npz.otherhost~1~1.0123abcd.tmp"
    other_host.write_bytes(b"")
    old_unmarked = root / "cache" / ".z.npz.legacy.tmp"
    old_unmarked.write_bytes(b"")
    os.utime(old_unmarked, (time.time() - 2 * 86400,) * 2)
    fresh_unmarked = root / "cache" / ".w.npz.legacy.tmp"
    fresh_unmarked.write_bytes(b"")
    job = root / ".staging" / "extract" / "m.test"
    job.mkdir(parents=True)
    (job / "job.json").write_text("{}")
    (job / "chunk-0000000000.npz").write_bytes(b"resumable")
    dead_chunk = _dead_temp(job / "chunk-0000000008.npz")
    done = root / ".staging" / f".done-{committed.name}x"
    done.mkdir()
    mdir = root / toy_store.info("m0", "test", "logits")["path"]
    unreferenced = mdir.with_name("logits-0123456789abcdef.npy")
    unreferenced.write_bytes(b"x")
    old_style = mdir.with_name(".logits-3f2a.npy")
    old_style.write_bytes(b"x")

    free = {p for p, _ in leftovers(root)}
    assert free == {dead, old_unmarked, dead_chunk, committed, done}
    held = {p for p, _ in leftovers(root, lock_held=True)}
    assert held == free | {unreferenced, old_style}
    assert staged_entries(root) == [pending]
    # verify lists both, separately, and they are not problems
    capsys.readouterr()
    assert main(["verify", str(root)]) == 0
    out = capsys.readouterr().out
    lo, pe = out.index("leftovers of killed processes"), out.index("waiting for a writer")
    assert f".staging/{pending.name}" in out[pe:] and f".staging/{pending.name}" not in out[lo:pe]
    assert str(dead.relative_to(root)) in out[lo:pe]
    # the next writer removes the leftovers, nothing else
    with toy_store.writer():
        pass
    assert leftovers(root, lock_held=True) == []
    for p in (tmp, other_host, fresh_unmarked, job / "job.json", job / "chunk-0000000000.npz", pending / "entry.json"):
        assert p.exists(), p
    assert verify_store(root).pending == [pending]
    assert remove_leftovers(root) == []
