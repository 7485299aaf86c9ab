"""Extraction of shifted splits: `extract --shift` stores <split>~<corruption>-<severity> with the
split's ids and labels, the corruption's record in the split's metadata; a later extraction with
another seed or library version is refused with the store untouched; each shifted split is
generated once for every model; the trainer's evaluation reads the same pixels."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from divergent.data import shift as S
from divergent.errors import DivergentError
from divergent.extract import extract, extract_many
from divergent.store import Store

torch = pytest.importorskip("torch")
pytest.importorskip("imagecorruptions", reason="imagecorruptions-imaug is not installed (make install adds it)")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
R20, R32 = "cifar10/resnet20", "cifar10/resnet32"
KW = dict(batch_size=50, device="cpu", workers=0, progress=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    S.GENERATED.clear()
    return tmp_path / "cache" / "divergent" / "shifted"


def _tree(path):
    from divergent._files import sha256_tree

    return sha256_tree(path)


def test_shifted_split_shares_ids_and_labels_and_records_the_shift(cifar_small, tmp_path, cache):
    st_path = tmp_path / "st"
    extract(st_path, R20, str(cifar_small), "test", **KW)
    r = extract(st_path, R20, str(cifar_small), "test", shift="gaussian_noise:3", **KW)
    assert r["status"] == "done" and r["split"] == "test~gaussian_noise-3"
    st = Store.open(st_path)
    plain, shifted = st.split("test"), st.split("test~gaussian_noise-3")
    assert np.array_equal(plain.ids, shifted.ids) and np.array_equal(plain.labels, shifted.labels)
    assert shifted.meta["shift"] == {"corruption": "gaussian_noise", "severity": 3, "seed": 0,
                                     "generator": "imagecorruptions-imaug", "version": S.library_version()}
    acc = {s: (np.argmax(st.array(R20, s, "logits"), 1) == plain.labels).mean() for s in st.splits}
    assert acc["test"] > 0.6 and acc["test~gaussian_noise-3"] < acc["test"] - 0.2  # real model, real shift
    # the logits are the model's on the cached corrupted pixels (what any reader of the split sees)
    from divergent.data import open_dataset
    from divergent.sources import load
    from divergent.sources.preprocess import ImageTransform

    sds = S.shifted(open_dataset(str(cifar_small), "test"), S.Shift("gaussian_noise", 3))
    runner = load(R20, device="cpu", runtime="torch")
    want, _ = runner(torch.from_numpy(np.stack([ImageTransform(runner.preprocess)(sds.raw(i)) for i in range(len(sds))])))
    got = np.asarray(st.array(R20, "test~gaussian_noise-3", "logits"))
    assert np.abs(got - want).max() < 1e-3


def test_every_model_reads_one_generation_and_runs_agree(cifar_small, tmp_path, cache):
    df = extract_many(tmp_path / "a", [R20, R32], str(cifar_small), "test", shift="contrast:2,impulse_noise:4", **KW)
    assert list(df["status"]) == ["done"] * 4
    assert list(df["split"]) == ["test~contrast-2"] * 2 + ["test~impulse_noise-4"] * 2
    assert len(S.GENERATED) == 2 * 100  # 100 test images x 2 shifts, not x 2 models
    assert len(list(cache.glob("*/*"))) == 2
    extract(tmp_path / "a", R20, str(cifar_small), "test", shift="contrast:2", name="again", **KW)  # a later run
    assert len(S.GENERATED) == 2 * 100  # read from the cache
    assert np.array_equal(Store.open(tmp_path / "a").array("again", "test~contrast-2", "logits"),
                          Store.open(tmp_path / "a").array(R20, "test~contrast-2", "logits"))
    import shutil

    shutil.rmtree(cache)  # another run, from scratch: the same pixels, so the same logits
    extract(tmp_path / "b", R20, str(cifar_small), "test", shift="impulse_noise:4", **KW)
    assert len(S.GENERATED) == 300
    a, b = Store.open(tmp_path / "a"), Store.open(tmp_path / "b")
    assert np.array_equal(a.array(R20, "test~impulse_noise-4", "logits"), b.array(R20, "test~impulse_noise-4", "logits"))


def test_mismatched_seed_or_version_is_refused_with_the_store_untouched(cifar_small, tmp_path, cache, monkeypatch):
    st_path = tmp_path / "st"
    extract(st_path, R20, str(cifar_small), "test", shift="fog:1", **KW)
    before, n_gen = _tree(st_path), len(S.GENERATED)
    with pytest.raises(DivergentError, match="seed: stored 0, now 1"):
        extract(st_path, R32, str(cifar_small), "test", shift="fog:1", shift_seed=1, **KW)
    with pytest.raises(DivergentError, match="seed: stored 0, now 2"):  # even a model already there is not skipped
        extract(st_path, R20, str(cifar_small), "test", shift=S.Shift("fog", 1, seed=2), **KW)
    monkeypatch.setattr(S, "library_version", lambda: "9.9.9")
    with pytest.raises(DivergentError, match="version: stored '.*', now '9.9.9'"):
        extract(st_path, R32, str(cifar_small), "test", shift="fog:1", **KW)
    assert _tree(st_path) == before and len(S.GENERATED) == n_gen  # nothing written, nothing generated


def test_cli_extracts_a_shift_list_and_refuses_a_bad_shift(cifar_small, tmp_path, cache):
    import typer

    from divergent.cli.extract import register

    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    st_path = tmp_path / "st"
    r = CliRunner().invoke(app, ["extract", str(st_path), "--model", R20, "--data", str(cifar_small), "--no-progress",
                                 "--device", "cpu", "--workers", "0", "--shift", "pixelate:1,5"])
    assert r.exit_code == 0, r.output
    assert sorted(Store.open(st_path).splits) == ["test~pixelate-1", "test~pixelate-5"]
    before = _tree(st_path)
    for bad, words in ((["--shift", "pixelat:1"], "did you mean 'pixelate'"), (["--shift", "pixelate:9"], "outside 1-5"),
                       (["--shift", "pixelate:1", "--shift-seed", "3"], "seed: stored 0, now 3"),
                       (["--shift-from", str(tmp_path)], "--shift-from needs --shift")):
        r = CliRunner().invoke(app, ["extract", str(st_path), "--model", R20, "--data", str(cifar_small),
                                     "--no-progress", *bad])
        assert r.exit_code == 2 and words in r.output, r.output
        assert "Traceback" not in r.output
    assert _tree(st_path) == before
    r = CliRunner().invoke(app, ["extract", str(tmp_path / "new"), "--model", R20, "--data", str(cifar_small),
                                 "--shift", "nois:1"])
    assert r.exit_code == 2 and not (tmp_path / "new").exists()


def test_trainer_evaluation_reads_the_shifted_split(fmnist_dir, cache):
    """The trained models' evaluation path (train.evaluate.eval_split) takes a shift: the 28 px gray
    Fashion-MNIST test half, corrupted once and cached, with the split's labels."""
    from divergent.data import open_dataset
    from divergent.train.evaluate import eval_split

    images, labels = eval_split("fashion-mnist", "test", shift="contrast:3")
    plain, plain_labels = eval_split("fashion-mnist", "test")
    assert images.shape == plain.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(labels, plain_labels) and not np.array_equal(images, plain)
    assert len(S.GENERATED) == 5000
    again, _ = eval_split("fashion-mnist", "test", shift=S.Shift("contrast", 3))
    assert np.array_equal(again, images) and len(S.GENERATED) == 5000
    ds = open_dataset("fashion-mnist", "test")
    k = 1234
    assert np.array_equal(images[k], S.corrupt_image(ds.raw(k), S.Shift("contrast", 3), str(ds.ids[k])))
