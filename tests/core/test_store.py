"""The prediction store: round trip, alignment by id, bad input, locking, staging, corruption."""
import json
import os

import numpy as np
import pytest

from divergent.cards import ModelCard
from divergent.errors import CorruptStoreError, DivergentError, StoreLockedError
from divergent.store import SCHEMA_VERSION, Store, stage_entry, staged_entries


def _manifest_bytes(st):
    return (st.root / "manifest.json").read_bytes()


def test_round_trip_and_memmap(toy_store):
    st = Store.open(toy_store.root)
    assert st.models == ["m0", "m1", "m2"] and set(st.splits) == {"holdout", "test"}
    arr = st.array("m1", "test", "logits")
    assert isinstance(arr, np.memmap) and arr.shape == (600, 5) and arr.dtype == np.float32
    assert st.verify() == []
    assert st.split("test").ids[0] == "test/0000"


def test_plain_numpy_can_read_the_store(toy_store):
    m = json.loads((toy_store.root / "manifest.json").read_text())
    info = m["models"]["m0"]["splits"]["test"]["arrays"]["logits"]
    arr = np.load(toy_store.root / info["path"])
    assert list(arr.shape) == info["shape"]


def test_import_aligns_by_id(toy_store):
    st = toy_store
    y = st.split("test").labels
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(600, 5)).astype(np.float32)
    perm = rng.permutation(600)
    ids = st.split("test").ids[perm]
    with st.writer() as w:
        w.put("shuffled", "test", logits=logits[perm], ids=ids, labels=y[perm])
    np.testing.assert_array_equal(Store.open(st.root).array("shuffled", "test", "logits"), logits)


@pytest.mark.parametrize("case", [
    "missing_id", "extra_id", "labels_mismatch", "nan", "inf", "wrong_classes", "negative_probs",
    "probs_not_normalised", "duplicate_model", "escaping_name", "wrong_rows", "float_pred",
])
def test_bad_input_is_refused_and_store_untouched(toy_store, case):
    st = toy_store
    before = _manifest_bytes(st)
    files_before = sorted(p.name for p in st.root.rglob("*.npy"))
    y = st.split("test").labels
    ids = st.split("test").ids
    good = np.random.default_rng(2).normal(size=(600, 5)).astype(np.float32)
    kw = dict(model="new", split="test", logits=good)
    if case == "missing_id":
        kw.update(logits=good[:-1], ids=ids[:-1])
    elif case == "extra_id":
        kw.update(logits=np.vstack([good, good[:1]]), ids=np.append(ids, "test/zzzz"))
    elif case == "labels_mismatch":
        kw.update(labels=(y + 1) % 5)
    elif case == "nan":
        bad = good.copy(); bad[3, 1] = np.nan; kw.update(logits=bad)
    elif case == "inf":
        bad = good.copy(); bad[3, 1] = np.inf; kw.update(logits=bad)
    elif case == "wrong_classes":
        kw.update(logits=good[:, :4])
    elif case == "negative_probs":
        p = np.full((600, 5), 0.2); p[0, 0] = -0.1; kw.pop("logits"); kw.update(probs=p)
    elif case == "probs_not_normalised":
        kw.pop("logits"); kw.update(probs=np.full((600, 5), 0.3))
    elif case == "duplicate_model":
        kw.update(model="m0")
    elif case == "escaping_name":
        kw.update(model="../../etc/evil")
    elif case == "wrong_rows":
        kw.update(logits=good[:10])
    elif case == "float_pred":
        kw.pop("logits"); kw.update(pred=np.zeros(600) + 0.5)
    with pytest.raises(DivergentError) as exc:
        with st.writer() as w:
            w.put(kw.pop("model"), kw.pop("split"), **kw)
    assert exc.value.problem  # says what is wrong
    assert _manifest_bytes(st) == before
    assert sorted(p.name for p in st.root.rglob("*.npy")) == files_before


def test_renormalize_is_explicit_and_recorded(toy_store):
    p = np.full((600, 5), 0.3)
    with toy_store.writer() as w:
        w.put("renorm", "test", probs=p, renormalize=True)
    st = Store.open(toy_store.root)
    np.testing.assert_allclose(np.asarray(st.array("renorm", "test", "probs")).sum(1), 1, atol=1e-6)
    assert st.entry_meta("renorm", "test")["renormalized"] is True


def test_empty_split_and_duplicate_ids_refused(tmp_path):
    st = Store.create(tmp_path / "s")
    with pytest.raises(DivergentError, match="empty"):
        with st.writer() as w:
            w.add_split("test", labels=np.array([], int), class_names=["a"], ids=[])
    with pytest.raises(DivergentError, match="duplicate example ids"):
        with st.writer() as w:
            w.add_split("test", labels=np.array([0, 0]), class_names=["a"], ids=["0000.jpg", "0000.jpg"])


def test_second_writer_is_refused(toy_store):
    with toy_store.writer():
        with pytest.raises(StoreLockedError, match="another process"):
            with Store.open(toy_store.root).writer():
                pass


def test_staged_entries_from_parallel_producers(toy_store):
    logits = np.random.default_rng(3).normal(size=(600, 5)).astype(np.float32)
    paths = [stage_entry(toy_store.root, f"staged{i}", "test", arrays={"logits": logits}) for i in range(3)]
    assert len(staged_entries(toy_store.root)) == 3
    with toy_store.writer() as w:
        for p in paths:
            w.commit_staged(p)
    st = Store.open(toy_store.root)
    assert {"staged0", "staged1", "staged2"} <= set(st.models)
    assert staged_entries(toy_store.root) == []


def test_corrupted_and_truncated_arrays_are_detected(toy_store):
    info = toy_store.info("m0", "test", "logits")
    path = toy_store.root / info["path"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = Store.open(toy_store.root).verify()
    assert any("checksum" in p for p in problems)
    with pytest.raises(CorruptStoreError):
        Store.open(toy_store.root).array("m0", "test", "logits", verify=True)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CorruptStoreError, match="corrupted or truncated|shape"):
        Store.open(toy_store.root).array("m0", "test", "logits")


def test_rm_and_cards(toy_store):
    card = ModelCard(name="x", family="resnet", depth=20, train_data="CIFAR-10", seed=1)
    with toy_store.writer() as w:
        w.set_card("m1", card)
        w.remove("m2")
    st = Store.open(toy_store.root)
    assert st.models == ["m0", "m1"]
    assert st.card("m1").train_data == "cifar10" and st.card("m1").name == "m1"
    assert not any("m2" in p.name for p in st.root.rglob("*.npy"))


def test_unknown_card_vocabulary_is_an_error():
    with pytest.raises(DivergentError, match="unknown family"):
        ModelCard(name="x", family="resnett")


def test_schema_migration_and_newer_schema(toy_store):
    mf = toy_store.root / "manifest.json"
    m = json.loads(mf.read_text())
    m["schema"] = 0
    del m["checksum"]  # manifests older than schema 2 carry no checksum
    mf.write_text(json.dumps(m))
    assert Store.open(toy_store.root).manifest["schema"] == SCHEMA_VERSION
    m["schema"] = 99
    mf.write_text(json.dumps(m))
    with pytest.raises(DivergentError, match="newer"):
        Store.open(toy_store.root)
