"""The trainer on real Fashion-MNIST: deterministic, resumable, train-split only, better than chance."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from divergent.errors import DivergentError  # noqa: E402
from divergent.train import Recipe, predict, train_recipe, training_indices  # noqa: E402
from divergent.train import data as train_data  # noqa: E402
from divergent.train.evaluate import eval_split  # noqa: E402


def tiny(**changes) -> Recipe:
    base = dict(name="test/tiny", dataset="fashion-mnist", family="cnn", width=0.5, depth=2, limit=256,
                batch_size=64, epochs=2, lr=3e-3, augment="crop-flip", dropout=0.2, seed=5)
    return Recipe(**{**base, **changes})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fmnist_test_half(fmnist_dir):
    x, y = eval_split("fashion-mnist", "test")
    return x[:300], y[:300]


def _weights(trained):
    ck = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    return ck["model"]


def test_same_seed_same_predictions(tmp_path, fmnist_test_half):
    x, _ = fmnist_test_half
    a = train_recipe(tiny(), tmp_path / "a", device="cpu", progress=False)
    b = train_recipe(tiny(), tmp_path / "b", device="cpu", progress=False)
    la, fa = predict(a, x)
    lb, fb = predict(b, x)
    assert la.dtype == np.float32 and fa.dtype == np.float32 and la.shape == (300, 10)
    assert np.array_equal(la, lb) and np.array_equal(fa, fb)
    c = train_recipe(tiny(seed=6, epochs=1), tmp_path / "c", device="cpu", progress=False)
    assert not np.array_equal(predict(c, x)[0], la)
    # a second call loads the finished model instead of retraining
    again = train_recipe(tiny(), tmp_path / "a", device="cpu", progress=False)
    assert np.array_equal(predict(again, x)[0], la)
    with pytest.raises(DivergentError, match="different recipe"):
        train_recipe(tiny(lr=1e-3), tmp_path / "a", device="cpu", progress=False)


def test_resume_after_interruption_gives_identical_weights(tmp_path, fmnist_dir):
    r = tiny(epochs=3)
    straight = train_recipe(r, tmp_path / "s", device="cpu", progress=False)
    assert train_recipe(r, tmp_path / "i", device="cpu", progress=False, until_epoch=1) is None
    ckpt = tmp_path / "i" / "test__tiny" / "checkpoint.pt"
    assert ckpt.exists() and not (tmp_path / "i" / "test__tiny" / "model.pt").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = train_recipe(r, tmp_path / "i", device="cpu", progress=False)
    assert resumed.resumed and not straight.resumed
    wa, wb = _weights(straight), _weights(resumed)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not ckpt.exists()


def test_never_trains_on_holdout_or_test(tmp_path, fmnist_dir):
    train_data.REQUESTED_SPLITS.clear()
    r = tiny(epochs=1, limit=128)
    train_recipe(r, tmp_path, device="cpu", progress=False)
    assert train_data.REQUESTED_SPLITS and set(train_data.REQUESTED_SPLITS) == {("fashion-mnist", "train")}
    ids = train_data.load_split("fashion-mnist", "train").ids[training_indices(r)]
    assert all(i.startswith("train/") for i in ids)
    for split in ("holdout", "test"):
        with pytest.raises(DivergentError, match="only trains"):
            train_data.load_split("fashion-mnist", split)


def test_quick_training_beats_chance(tmp_path, fmnist_test_half):
    x, y = fmnist_test_half
    r = tiny(name="test/quick", limit=2048, epochs=1, augment="none", dropout=0.0, width=1.0, batch_size=128)
    trained = train_recipe(r, tmp_path, device="cpu", progress=False)
    acc = float((predict(trained, x)[0].argmax(1) == y).mean())
    assert acc > 0.6, acc  # chance is 0.1
    assert trained.train_wall_s > 0 and len(trained.epoch_wall_s) == 1
    assert trained.card.provenance["train_examples"] == 2048


@pytest.mark.parametrize("objective", ["contrastive", "autoencoder", "masked-image", "distillation"])
def test_framework_objectives_train_and_get_a_head(tmp_path, fmnist_test_half, objective):
    x, y = fmnist_test_half
    extra = {"teacher": "test/teacher"} if objective == "distillation" else {}
    if objective == "distillation":
        train_recipe(tiny(name="test/teacher", epochs=1, limit=1024, augment="none", dropout=0.0), tmp_path,
                     device="cpu", progress=False)
        extra["limit"] = 1024
    r = tiny(name=f"test/{objective}", objective=objective, **{"epochs": 1, "limit": 256, "augment": "none", **extra})
    trained = train_recipe(r, tmp_path, device="cpu", progress=False)
    assert trained.card.objective == objective
    assert trained.card.head == ("trained" if objective == "distillation" else "linear-probe")
    logits, feats = predict(trained, x)
    assert np.isfinite(logits).all() and feats.shape[1] == 64
    assert float((logits.argmax(1) == y).mean()) > 0.3


def test_predict_accepts_channel_last_and_rejects_wrong_size(tmp_path, fmnist_test_half):
    x, _ = fmnist_test_half
    trained = train_recipe(tiny(epochs=1, limit=128), tmp_path, device="cpu", progress=False)
    a = predict(trained, x[:20])[0]
    b = predict(trained, x[:20, :, :, None])[0]
    assert np.array_equal(a, b)
    with pytest.raises(DivergentError, match="do not fit"):
        predict(trained, np.zeros((2, 32, 32), np.uint8))
