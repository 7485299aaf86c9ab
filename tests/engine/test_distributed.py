"""All pairs in blocks of models (divergent.engine.distributed): the same table as the local engine,
bit for bit, on the predictions of real models (scikit-learn classifiers trained on the digits);
blocks cached by content; the CLI's flags; Ray on 127.0.0.1 only."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from divergent.analyses.pairs import pairs
from divergent.cli import main
from divergent.engine import ModelSource, all_pair_codes, prepare_many
from divergent.engine import distributed as dist
from divergent.engine.distributed import LocalRunner, merge, pair_counts, plan_blocks
from divergent.store import Store


def _digits_store(root):
    """Seven real classifiers on scikit-learn's digits (train 900 / holdout 450 / test 447): logits of
    ridge classifiers, LDA and a linear SVM, probabilities of MLPs and naive Bayes, and one model with
    decisions only; temperatures fitted on the holdout."""
    from sklearn.datasets import load_digits
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import RidgeClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC

    from divergent.analyses.calibration import calibrate

    d = load_digits()
    X, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    parts = {"train": idx[:900], "holdout": idx[900:1350], "test": idx[1350:]}
    tr = parts["train"]
    models = {
        "ridge-a1": ("logits", RidgeClassifier(alpha=1.0)),
        "ridge-a100": ("logits", RidgeClassifier(alpha=100.0)),
        "lda": ("logits", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1)),
        "svm": ("logits", LinearSVC(C=0.05)),
        "mlp-0": ("probs", MLPClassifier((32,), max_iter=150, random_state=0)),
        "nb": ("probs", GaussianNB(var_smoothing=0.05)),
        "pixels-knn": ("pred", None),
    }
    st = Store.create(root)
    with st.writer() as w:
        for s in ("holdout", "test"):
            w.add_split(s, labels=y[parts[s]], class_names=[str(c) for c in range(10)],
                        ids=[f"digits/{i:04d}" for i in parts[s]], dataset="digits")
        import warnings

        for name, (kind, clf) in models.items():
            if clf is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf.fit(X[tr], y[tr])
            for s in ("holdout", "test"):
                xs = X[parts[s]]
                if kind == "logits":
                    w.put(name, s, logits=clf.decision_function(xs).astype(np.float32))
                elif kind == "probs":
                    w.put(name, s, probs=np.clip(clf.predict_proba(xs), 1e-12, None).astype(np.float32),
                          renormalize=True)
                else:  # nearest training image by pixels: decisions only
                    dist2 = ((xs[:, None, :] - X[tr][None, :, :]) ** 2).sum(-1)
                    w.put(name, s, pred=y[tr][dist2.argmin(1)])
    calibrate(root, fit_on="holdout", progress=False)
    return Store.open(root)


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    return _digits_store(tmp_path_factory.mktemp("digits") / "store")


def _fresh_copy(store, tmp_path):
    """A copy of the store without cached results (each test computes from scratch)."""
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(store.root, dst, ignore=shutil.ignore_patterns("cache"))
    return Store.open(dst)


def test_blocks_equal_the_local_engine_every_column(digits_store, tmp_path):
    st = _fresh_copy(digits_store, tmp_path)
    local = pairs(st, split="test", n_boot=200, cache=False)
    assert len(local) == 21 and local["missing_reason"].str.contains("decision-only").sum() == 6
    for block in (1, 2, 3, 50):
        got = pairs(st, split="test", n_boot=200, cache=False, runner=LocalRunner(task_threads=1), block=block)
        pd.testing.assert_frame_equal(got, local, check_exact=True)
        assert got.attrs["blocks"] == len(plan_blocks([(a, b) for a in range(6) for b in range(a + 1, 6)], block))
        for k in ("engine_fallback_examples", "engine_gathered_examples"):
            assert got.attrs[k] == local.attrs[k]
    base = pairs(st, split="test", base="ridge-a1", n_boot=100, cache=False)
    got = pairs(st, split="test", base="ridge-a1", n_boot=100, cache=False, runner=LocalRunner(1), block=2)
    pd.testing.assert_frame_equal(got, base, check_exact=True)


def test_block_counts_and_tiers_equal_all_pair_codes(digits_store):
    """Pairs in any order (some reversed), k = 2 on 10 classes and a model with tied scores twice
    (examples reach tiers 2 and 3):
    code counts and tier counts equal one all_pair_codes over the same pairs."""
    st = digits_store
    srcs = [ModelSource(x, st.temperature(m), kind, m)
            for m in st.models if st.has_scores(m, "test") for kind, x in [st.scores(m, "test")]]
    kind, x = st.scores("lda", "test")
    # the same real scores rounded to integers: exact ties between classes reach tier 3
    tied = np.round(np.asarray(x) / 8).astype(np.float32)
    srcs += [ModelSource(tied, 1.0, kind, "lda rounded"), ModelSource(tied, 1.0, kind, "lda rounded, again")]
    y = st.split("test").labels
    order = [(b, a) if (a + b) % 3 == 0 else (a, b) for a in range(len(srcs)) for b in range(a + 1, len(srcs))][::-1]
    ref = list(all_pair_codes(prepare_many(srcs, y, k=2), order, progress=False))
    assert sum(r.n_gather for r in ref) > 0 and sum(r.n_fallback for r in ref) > 0
    got = pair_counts(srcs, y, order, size=2, k=2, runner=LocalRunner(1))
    assert np.array_equal(got.counts, np.stack([r.counts for r in ref]))
    assert np.array_equal(got.n_gather, [r.n_gather for r in ref])
    assert np.array_equal(got.n_fallback, [r.n_fallback for r in ref])


def test_plan_and_merge_keep_every_pair_once_in_order():
    rng = np.random.default_rng(1)
    pairs_ = [tuple(int(v) for v in rng.choice(23, 2, replace=False)) for _ in range(90)]
    for size in (1, 4, 7, 23):
        blocks = plan_blocks(pairs_, size)
        pos = sorted(p for b in blocks for p in b.positions)
        assert pos == list(range(len(pairs_)))
        for b in blocks:
            assert len({(a // size, c // size) for a, c in b.pairs}) == 1 and len(b.models) <= 2 * size
            assert [b.models[i] for ab in b.local_pairs() for i in ab] == [m for ab in b.pairs for m in ab]
        rows = [np.array([[p] * dist.N_COLS for p in b.positions]) for b in blocks]
        assert np.array_equal(merge(len(pairs_), blocks, rows)[:, 0], np.arange(len(pairs_)))


def test_block_cache_rerun_computes_nothing(digits_store, tmp_path, monkeypatch):
    st = _fresh_copy(digits_store, tmp_path)
    calls = []
    real = dist.block_counts
    monkeypatch.setattr(dist, "block_counts", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pairs(st, split="test", n_boot=50, runner=LocalRunner(1), block=2)
    assert (first.attrs["blocks"], first.attrs["blocks_computed"], len(calls)) == (6, 6, 6)
    again = pairs(Store.open(st.root), split="test", n_boot=50, runner=LocalRunner(1), block=2)
    assert again.attrs["blocks_computed"] == 0 and len(calls) == 6
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    # a new temperature of one model recomputes only the blocks that read it (groups of 2: 3 of 6)
    with st.writer() as w:
        w.set_temperature("svm", 1.7, fit_on="holdout")
    third = pairs(Store.open(st.root), split="test", n_boot=50, runner=LocalRunner(1), block=2)
    assert third.attrs["blocks_computed"] == 3 and len(calls) == 9
    pd.testing.assert_frame_equal(third, pairs(Store.open(st.root), split="test", n_boot=50, cache=False),
                                  check_exact=True)


@pytest.mark.parametrize("flags, says", [
    (["--executor", "spark"], "unknown executor"),
    (["--block", "0"], "block size must be a positive integer"),
    (["--address", "127.0.0.1:6379"], "the executor is local"),
    (["--executor", "ray", "--workers", "0"], "--workers must be at least 1"),
    (["--shared-fs"], "the executor is local"),
    (["--all", "--base", "svm"], "exclude each other"),
])
def test_cli_bad_flags_exit_2(digits_store, flags, says, capsys):
    assert main(["pairs", str(digits_store.root), "--split", "test", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "fix:" in err


@pytest.mark.slow
def test_ray_cli_equals_local_engine(digits_store, tmp_path, capsys):
    """`divergent pairs --all --executor ray` on a local Ray bound to 127.0.0.1: every column equals
    the local engine's, with the scores sent through the object store or read in place (--shared-fs); a
    rerun reads every block from the cache; Ray is shut down after."""
    pytest.importorskip("ray")
    import ray

    st = _fresh_copy(digits_store, tmp_path)
    out_l, out_r = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert main(["pairs", str(st.root), "--split", "test", "--all", "--n-boot", "100", "--out", str(out_l)]) == 0
    try:
        assert main(["pairs", str(st.root), "--split", "test", "--all", "--n-boot", "100", "--executor", "ray",
                     "--workers", "2", "--block", "2", "--out", str(out_r)]) == 0
        err = capsys.readouterr().err
        assert "a local Ray started on 127.0.0.1" in err and "6 block(s) of pairs, 6 computed" in err
        assert not ray.is_initialized()
        pd.testing.assert_frame_equal(pd.read_parquet(out_r), pd.read_parquet(out_l), check_exact=True)
        assert main(["pairs", str(st.root), "--split", "test", "--all", "--n-boot", "100", "--executor", "ray",
                     "--workers", "1", "--block", "2", "--out", str(out_r)]) == 0
        assert "6 block(s) of pairs, 0 computed" in capsys.readouterr().err
        # the tasks read the score files in place (a shared filesystem); other blocks: computed anew
        assert main(["pairs", str(st.root), "--split", "test", "--all", "--n-boot", "100", "--executor", "ray",
                     "--workers", "2", "--block", "3", "--shared-fs", "--out", str(out_r)]) == 0
        assert "3 block(s) of pairs, 3 computed" in capsys.readouterr().err
        pd.testing.assert_frame_equal(pd.read_parquet(out_r), pd.read_parquet(out_l), check_exact=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()


# ---------------------------------------------------------------- extraction in shards

def _resnet_specs(tmp_path, seeds=(0, 1)):
    """Two ResNet-20s (random weights, saved here) as torch: specs; real digits images."""
    torch = pytest.importorskip("torch")
    from divergent.sources.archs.cifar_resnet import resnet20

    specs = []
    for s in seeds:
        torch.manual_seed(s)
        torch.save(resnet20(num_classes=10).eval().state_dict(), tmp_path / f"r20-{s}.pt")
        specs.append(f"torch:divergent.sources.archs.cifar_resnet:resnet20@{tmp_path / f'r20-{s}.pt'}")
    return specs


EXTRACT_KW = dict(batch_size=64, device="cpu", workers=0, input_size=16, runtime="torch")


class CountingRunner(LocalRunner):
    """In this process; counts the shards, and the driver can die after receiving `fail_after` of them."""

    def __init__(self, fail_after=None):
        super().__init__(task_threads=1)
        self.shards, self.got, self.fail_after = [], 0, fail_after

    def submit(self, fn, *args, **kw):
        self.shards.append(args[3:5])
        return super().submit(fn, *args, **kw)

    def get(self, handle):
        if self.fail_after is not None and self.got >= self.fail_after:
            raise RuntimeError("driver killed")
        self.got += 1
        return handle


@pytest.mark.slow
def test_extract_shards_equal_local_extraction_and_resume(tmp_path, one_torch_thread):
    pytest.importorskip("sklearn")
    from divergent.extract import extract_many
    from divergent.extract.distributed import extract_distributed

    specs = _resnet_specs(tmp_path)
    local = extract_many(tmp_path / "local", ",".join(specs), "digits", "test", progress=False, **EXTRACT_KW)
    assert list(local["status"]) == ["done", "done"]
    # shards of 100 images -> 128 (whole batches of 64): 596 rows in 5 shards per model; the first
    # model's driver is "killed" after 2 shards, its rerun computes only the other 3
    r = CountingRunner(fail_after=2)
    first = extract_distributed(tmp_path / "dist", specs[:1], "digits", "test", runner=r, shard=100, concurrent=1,
                                **EXTRACT_KW)
    assert list(first["status"]) == ["failed"] and r.got == 2 and len(r.shards) == 5
    r = CountingRunner()
    df = extract_distributed(tmp_path / "dist", specs, "digits", "test", runner=r, shard=100, concurrent=1,
                             **EXTRACT_KW)
    assert list(df["status"]) == ["done", "done"] and list(df["shards"]) == [3, 5]
    assert sorted(r.shards)[:3] == [(0, 128), (128, 256), (256, 384)] and (512, 596) in r.shards
    a, b = Store.open(tmp_path / "local"), Store.open(tmp_path / "dist")
    assert a.models == b.models and b.split("test").n == 596
    for m in a.models:
        for kind in ("logits", "features"):
            assert np.array_equal(np.asarray(a.array(m, "test", kind)), np.asarray(b.array(m, "test", kind)))
        assert b.card(m).provenance["batch_size"] == 64


@pytest.mark.parametrize("flags, says", [
    (["--models", "x", "--executor", "spark"], "unknown executor"),
    (["--models", "x", "--address", "127.0.0.1:6379"], "the executor is local"),
    (["--model", "x", "--executor", "ray"], "--executor ray runs bulk extractions"),
    (["--models", "x", "--executor", "ray", "--shard", "0"], "shard size must be a positive number"),
])
def test_extract_cli_bad_flags_exit_2(tmp_path, flags, says, capsys):
    assert main(["extract", str(tmp_path / "st"), "--data", "digits", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "fix:" in err
    assert not (tmp_path / "st").exists()


@pytest.mark.slow
def test_ray_cli_extract_equals_local(tmp_path, one_torch_thread, capsys):
    """`divergent extract --models ... --executor ray` on a local Ray bound to 127.0.0.1: shards on
    Ray workers, merged by the driver; the arrays equal a local extraction's; Ray is shut down after."""
    pytest.importorskip("ray")
    pytest.importorskip("sklearn")
    import ray

    from divergent.extract import extract_many

    specs = _resnet_specs(tmp_path)
    extract_many(tmp_path / "local", ",".join(specs), "digits", "test", progress=False, **EXTRACT_KW)
    args = ["extract", str(tmp_path / "st"), "--data", "digits", "--split", "test", "--models", ",".join(specs),
            "--executor", "ray", "--shard", "256", "--batch-size", "64", "--device", "cpu", "--workers", "0",
            "--input-size", "16", "--runtime", "torch", "--no-progress"]
    try:
        assert main(args) == 0, capsys.readouterr().err
        assert "a local Ray started on 127.0.0.1" in capsys.readouterr().err
        assert not ray.is_initialized()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    a, b = Store.open(tmp_path / "local"), Store.open(tmp_path / "st")
    assert a.models == b.models
    for m in a.models:
        for kind in ("logits", "features"):
            assert np.array_equal(np.asarray(a.array(m, "test", kind)), np.asarray(b.array(m, "test", kind)))
