"""The one-pass extraction: outputs equal the model's, resume after kill -9 is bit-identical, bad input is refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.extract import extract, extract_many
from divergent.store import Store

torch = pytest.importorskip("torch")
R20 = "cifar10/resnet20"


def test_logits_and_features_equal_the_model(cifar_small, tmp_path):
    r = extract(tmp_path / "st", R20, str(cifar_small), "test", batch_size=32, device="cpu", workers=0, progress=False)
    assert r["status"] == "done" and r["stored"] == ["features", "logits"]
    st = Store.open(tmp_path / "st")
    sd = st.split("test")
    assert sd.n == 100 and sd.class_names[0] == "airplane"
    logits = np.asarray(st.array(R20, "test", "logits"))
    feats = np.asarray(st.array(R20, "test", "features"))
    assert logits.shape == (100, 10) and feats.shape == (100, 64)
    # independent path: decode with PIL, normalize with torchvision, run the module directly
    from PIL import Image
    from torchvision import transforms as T

    from divergent.sources import load

    runner = load(R20, device="cpu")
    tf = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = torch.stack([tf(Image.open(cifar_small / i).convert("RGB")) for i in sd.ids[:40]])
    with torch.inference_mode():
        np.testing.assert_allclose(logits[:40], runner.module(x).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(feats[:40], runner.module.forward_features(x).numpy(), rtol=1e-5, atol=1e-5)
    card = st.card(R20)
    assert card.provenance["weights_sha256"] and card.preprocessing["size"] == 32
    assert card.train_data == "cifar10" and card.head == "trained" and card.extra["head_info"]["stored"] == "logits"
    assert (logits.argmax(1) == sd.labels).mean() > 0.6  # real data, real model
    again = extract(tmp_path / "st", R20, str(cifar_small), "test", progress=False)
    assert again["status"] == "skipped"
    forced = extract(tmp_path / "st", R20, str(cifar_small), "test", batch_size=64, device="cpu", workers=1, force=True, progress=False)
    assert forced["status"] == "done"
    np.testing.assert_array_equal(np.asarray(Store.open(tmp_path / "st").array(R20, "test", "logits")), logits)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from divergent.extract import extract
extract(sys.argv[1], "cifar10/resnet56", sys.argv[2], "all", batch_size=8, device="cpu", workers=0,
        progress=False, chunk_images=8)
"""


@pytest.mark.slow
def test_kill_9_mid_run_resumes_bit_identical(cifar_small, tmp_path):
    killed_store, clean_store = tmp_path / "killed", tmp_path / "clean"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(killed_store), str(cifar_small)], env=env)
    staging = killed_store / ".staging" / "extract"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if len(list(staging.glob("*/chunk-*.npz"))) >= 3:
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    r = extract(killed_store, "cifar10/resnet56", str(cifar_small), "all", batch_size=64, device="cpu", workers=0,
                progress=False, chunk_images=8)
    assert 0 < r["resumed_from"] < 300 and r["batch_size"] == 8  # the recorded batch size is reused
    extract(clean_store, "cifar10/resnet56", str(cifar_small), "all", batch_size=8, device="cpu", workers=0,
            progress=False, chunk_images=8)
    a, b = Store.open(killed_store), Store.open(clean_store)
    for kind in ("logits", "features"):
        assert np.array_equal(np.asarray(a.array("cifar10/resnet56", "all", kind)), np.asarray(b.array("cifar10/resnet56", "all", kind)))
    assert not list(staging.glob("*/chunk-*"))  # staging cleaned after the commit


def test_class_mismatch_is_an_error(cifar_small, tmp_path):
    extract(tmp_path / "st", R20, str(cifar_small), "test", device="cpu", workers=0, progress=False)
    other = tmp_path / "five"
    for c in ("airplane", "automobile", "bird", "cat", "deer"):
        (other / c).mkdir(parents=True)
        for f in sorted((cifar_small / c).iterdir())[:6]:
            (other / c / f.name).write_bytes(f.read_bytes())
    with pytest.raises(DivergentError, match="classes differ"):
        extract(tmp_path / "st", "cifar10/resnet32", str(other), "test", device="cpu", workers=0, progress=False)


def test_head_that_fits_no_label_space(cifar_small, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    with pytest.raises(DivergentError, match="outputs 1000 classes; the split has 10") as e:
        extract(tmp_path / "st", "imagenet/efficientnet-lite0", str(cifar_small), "test", device="cpu", workers=0,
                progress=False, head="logits", input_size=64)
    assert "--mapping" in str(e.value)
    r = extract(tmp_path / "st", "imagenet/efficientnet-lite0", str(cifar_small), "test", device="cpu", workers=0,
                progress=False, input_size=64)
    assert r["stored"] == ["features"] and r["model"] == "imagenet/efficientnet-lite0@64px"
    st = Store.open(tmp_path / "st")
    assert st.array(r["model"], "test", "features").shape == (100, 1280)
    assert st.card(r["model"]).head == "none" and st.card(r["model"]).hparams == {"input_size": 64}


def test_class_mapping_with_background_drop(shared_dir, cifar_small, tmp_path):
    """A 1001-way quantized MobileNet mapped onto CIFAR-10 through a CSV file (real model, real images)."""
    labels = (shared_dir / "models/coral-tflite/imagenet_labels.txt").read_text().splitlines()[1:]
    targets = {"airplane": ["airliner", "warplane"], "automobile": ["sports car", "convertible", "cab", "jeep"],
               "ship": ["container ship", "liner", "fireboat"], "truck": ["trailer truck", "moving van", "garbage truck"]}
    rows = ["source,target"]
    for tgt, names in targets.items():
        for i, lab in enumerate(labels):
            if lab.split(",")[0] in names:
                rows.append(f"{i},{tgt}")
    (tmp_path / "map.csv").write_text("\n".join(rows) + "\n")
    r = extract(tmp_path / "st", "imagenet/mobilenet_v1_0.25_128_quant", str(cifar_small), "test", device="cpu",
                workers=0, progress=False, mapping=tmp_path / "map.csv")
    assert r["stored"] == ["features", "probs"]
    st = Store.open(tmp_path / "st")
    p = np.asarray(st.array(r["model"], "test", "probs"))
    assert p.dtype == np.float32 and p.shape == (100, 10)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    card = st.card(r["model"])
    assert card.head == "class-mapping"
    info = card.extra["head_info"]
    assert info["background_class_dropped"] == 0 and info["mapping"]["mapped_source_classes"] == len(rows) - 1
    assert info["mapping"]["unmapped_source_classes"] == 1000 - (len(rows) - 1)
    assert set(info["mapping"]["target_classes_without_source"]) == {"bird", "cat", "deer", "dog", "frog", "horse"}


def test_corrupt_image_fail_or_skip(cifar_small, tmp_path):
    bad = tmp_path / "bad"
    for c in sorted(p.name for p in cifar_small.iterdir()):
        (bad / c).mkdir(parents=True)
        for f in sorted((cifar_small / c).iterdir())[:3]:
            (bad / c / f.name).write_bytes(f.read_bytes())
    (bad / "cat" / "0001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DivergentError, match="cat/0001.jpg"):
        extract(tmp_path / "st", R20, str(bad), "all", device="cpu", workers=0, progress=False)
    r = extract(tmp_path / "st2", R20, str(bad), "all", device="cpu", workers=0, progress=False, on_error="skip")
    st = Store.open(tmp_path / "st2")
    sd = st.split("all")
    assert sd.n == 29 and "cat/0001.jpg" not in set(sd.ids)
    assert [s[0] for s in sd.meta["skipped"]] == ["cat/0001.jpg"]
    assert r["status"] == "done"


def test_bulk_records_failures_and_carries_on(cifar_small, tmp_path):
    df = extract_many(tmp_path / "st", "cifar10/resnet2*,cifar10/nope", str(cifar_small), "test", device="cpu",
                      workers=0, progress=False)
    assert list(df["status"]) == ["done", "failed"]
    assert "unknown model 'cifar10/nope'" in df["error"].iloc[1] and "did you mean" in df["error"].iloc[1]
    assert (tmp_path / "st" / ".staging" / "extract" / "failures.jsonl").exists()
    assert Store.open(tmp_path / "st").models == ["cifar10/resnet20"]


def test_out_of_memory_halves_the_batch(cifar_small, tmp_path, monkeypatch):
    import divergent.sources.adapters as ad

    real = ad._torch_runner

    def flaky(*a, **k):
        r = real(*a, **k)
        inner = r.fn

        def fn(batch):
            if len(batch) > 8:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
            return inner(batch)

        r.fn = fn
        return r

    monkeypatch.setattr(ad, "_torch_runner", flaky)
    r = extract(tmp_path / "st", R20, str(cifar_small), "test", batch_size=32, device="cpu", workers=0, progress=False, runtime="torch")
    assert r["batch_size"] == 8
    monkeypatch.setattr(ad, "_torch_runner", real)
    extract(tmp_path / "ref", R20, str(cifar_small), "test", batch_size=8, device="cpu", workers=0, progress=False, runtime="torch")
    np.testing.assert_array_equal(np.asarray(Store.open(tmp_path / "st").array(R20, "test", "logits")),
                                  np.asarray(Store.open(tmp_path / "ref").array(R20, "test", "logits")))


def test_existing_split_from_another_source_rule(cifar_small, tmp_path):
    extract(tmp_path / "st", R20, str(cifar_small), "test", device="cpu", workers=0, progress=False)
    with pytest.raises(DivergentError, match="examples differ"):
        extract(tmp_path / "st", "cifar10/resnet32", str(cifar_small), "test", device="cpu", workers=0, progress=False,
                dataset_options={"seed": 1})
