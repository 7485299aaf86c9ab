"""timm inference.py results in every output format, and model cards from real timm model names."""
import numpy as np
import pandas as pd
import pytest

from divergent.cards import category
from divergent.data.imagenet import imagenet_names, imagenet_wnids
from divergent.errors import DivergentError
from divergent.sources.timm_names import card_from_name
from divergent.store import Store
from divergent.store.formats import import_format

N, C = 6, 1000


@pytest.fixture
def in1k_store(tmp_path):
    """A split in ImageNet-1k's label space (WordNet-id folders), ids relative to the dataset root."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    wn = imagenet_wnids()
    ids = [f"{wn[y]}/ILSVRC2012_val_{i:08d}.JPEG" for i, y in enumerate(labels)]
    st = Store.create(tmp_path / "st")
    with st.writer() as w:
        w.add_split("test", labels=labels, class_names=list(wn), ids=ids, dataset="imagenet")
    return st, labels, np.asarray(ids), rng.normal(size=(N, C)).astype(np.float32)


def _timm_frame(ids, logits, *, topk, output_type="prob", include_index=True, separate=False,
                label_type="description", fullname=False):
    """The DataFrame inference.py builds (timm 1.0, inference.py lines 283-347), same layout."""
    out = np.exp(logits - logits.max(1, keepdims=True))
    out = out / out.sum(1, keepdims=True) if output_type == "prob" else logits
    names = [i if fullname else i.rsplit("/", 1)[-1] for i in ids]
    data = {"filename": names}
    if topk:
        idx = np.argsort(-out, axis=1, kind="stable")[:, :topk]
        vals = np.take_along_axis(out, idx, 1).astype(np.float32)
        lab = (np.asarray(imagenet_wnids())[idx] if label_type == "name" else np.asarray(imagenet_names(), dtype=object)[idx])
    else:
        idx, lab, vals = None, None, out.astype(np.float32)
    col = "prob" if output_type == "prob" else "logit"
    if separate and vals.shape[-1] > 1:
        if include_index and idx is not None:
            for i in range(idx.shape[1]):
                data[f"index_{i}"] = idx[:, i]
        if lab is not None and label_type != "none":
            for i in range(lab.shape[1]):
                data[f"label_{i}"] = lab[:, i]
        for i in range(vals.shape[1]):
            data[f"{col}_{i}"] = vals[:, i]
    else:
        if include_index and idx is not None:
            data["index"] = list(idx.squeeze(-1) if idx.shape[-1] == 1 else idx)
        if lab is not None and label_type != "none":
            data["label"] = list(lab.squeeze(-1) if lab.shape[-1] == 1 else lab)
        data[col] = list(vals.squeeze(-1) if vals.shape[-1] == 1 else vals)
    return pd.DataFrame(data)


def _save(df, path, fmt):
    """timm's save_results."""
    if fmt == "parquet":
        df.set_index("filename").to_parquet(path)
    elif fmt == "json":
        df.set_index("filename").to_json(path, indent=4, orient="index")
    elif fmt == "json-records":
        df.to_json(path, lines=True, orient="records")
    elif fmt == "json-split":
        df.to_json(path, indent=4, orient="split", index=False)
    else:
        df.to_csv(path, index=False)
    return path


EXT = {"csv": ".csv", "json": ".json", "json-records": ".json", "json-split": ".json", "parquet": ".parquet"}


@pytest.mark.parametrize("fmt", list(EXT))
def test_topk_with_index_in_every_format(in1k_store, tmp_path, fmt):
    st, labels, ids, z = in1k_store
    df = _timm_frame(ids, z, topk=5)
    path = _save(df, tmp_path / f"r{EXT[fmt]}", fmt)
    import_format(st.root, path, format="timm", split="test", model="timm:resnet50.a1_in1k")
    st = Store.open(st.root)
    pred = st.array("timm:resnet50.a1_in1k", "test", "pred")
    assert pred.shape == (N, 5)
    assert np.array_equal(pred[:, 0], z.argmax(1))
    sc = st.array("timm:resnet50.a1_in1k", "test", "scores")
    assert np.all(np.diff(sc, axis=1) <= 0)
    card = st.card("timm:resnet50.a1_in1k")
    assert (card.family, card.train_data, card.depth) == ("resnet", "imagenet", 50)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json-split"])
def test_topk0_full_logits_become_logits(in1k_store, tmp_path, fmt):
    st, labels, ids, z = in1k_store
    df = _timm_frame(ids, z, topk=0, output_type="logit")
    path = _save(df, tmp_path / f"r{EXT[fmt]}", fmt)
    import_format(st.root, path, format="timm", split="test", model="m")
    st = Store.open(st.root)
    got = st.array("m", "test", "logits")
    np.testing.assert_allclose(got, z, rtol=1e-6, atol=1e-6)


def test_labels_without_index_map_through_imagenet_names(in1k_store, tmp_path):
    st, labels, ids, z = in1k_store
    for label_type in ("description", "name"):
        df = _timm_frame(ids, z, topk=1, include_index=False, label_type=label_type)
        path = _save(df, tmp_path / f"r-{label_type}.csv", "csv")
        import_format(st.root, path, format="timm", split="test", model=f"m-{label_type}")
    st = Store.open(st.root)
    for label_type in ("description", "name"):
        assert np.array_equal(st.array(f"m-{label_type}", "test", "pred")[:, 0], z.argmax(1))


def test_ambiguous_basenames_are_refused(tmp_path):
    st = Store.create(tmp_path / "st")
    with st.writer() as w:
        w.add_split("test", labels=[0, 1], class_names=["a", "b"], ids=["a/0.jpg", "b/0.jpg"])
    path = tmp_path / "r.csv"
    pd.DataFrame({"filename": ["0.jpg", "0.jpg"], "index": [0, 1], "prob": [0.9, 0.8]}).to_csv(path, index=False)
    before = (tmp_path / "st" / "manifest.json").read_bytes()
    with pytest.raises(DivergentError, match="--fullname"):
        import_format(st.root, path, format="timm", split="test", model="m")
    assert (tmp_path / "st" / "manifest.json").read_bytes() == before
    pd.DataFrame({"filename": ["a/0.jpg", "b/0.jpg"], "index": [0, 1], "prob": [0.9, 0.8]}).to_csv(path, index=False)
    import_format(st.root, path, format="timm", split="test", model="m")  # --fullname names match whole ids


def test_timm_needs_an_existing_split(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"filename": ["0.jpg"], "index": [0], "prob": [0.9]}).to_csv(path, index=False)
    with pytest.raises(DivergentError, match="no labels"):
        import_format(tmp_path / "st", path, format="timm", split="test", model="m")
    assert not (tmp_path / "st").exists()


# real timm names (timm 1.0 list_pretrained()) and the category each pair must get
ZOO = [
    ("resnet50.a1_in1k", "resnet50.a2_in1k", "hyperparameters"),
    ("resnet50.a1_in1k", "resnet101.a1_in1k", "hyperparameters"),
    ("resnet50.a1_in1k", "resnet50.fb_swsl_ig1b_ft_in1k", "dataset"),
    ("resnet50.a1_in1k", "convnext_tiny.in12k_ft_in1k", "dataset"),
    ("resnet50.a1_in1k", "convnext_tiny.fb_in1k", "architecture"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_base_patch16_clip_224.openai", "dataset"),
    ("coatnet_0_rw_224.sw_in1k", "maxvit_rmlp_pico_rw_256.sw_in1k", "architecture"),
    ("coatnet_0_rw_224.sw_in1k", "coatnet_1_rw_224.sw_in1k", "hyperparameters"),
    ("gcvit_tiny.in1k", "visformer_tiny.in1k", "architecture"),
    ("deit_base_patch16_224.fb_in1k", "deit_base_distilled_patch16_224.fb_in1k", "framework"),
    ("levit_128.fb_dist_in1k", "xcit_tiny_24_p16_224.fb_dist_in1k", "architecture"),
    ("convnextv2_large.fcmae_ft_in1k", "convnext_large.fb_in1k", "framework"),
    ("efficientnet_b0.ra_in1k", "tf_efficientnet_b0.ns_jft_in1k", "dataset"),
    ("mobilenetv3_large_100.ra_in1k", "efficientnet_b0.ra_in1k", "architecture"),
    ("wide_resnet50_2.racm_in1k", "resnet50.a1_in1k", "architecture"),
]


@pytest.mark.parametrize("a, b, want", ZOO)
def test_categories_of_a_timm_zoo_without_hand_written_cards(a, b, want):
    ca, cb = card_from_name(f"timm:{a}", default_tag=False), card_from_name(b, default_tag=False)
    assert category(ca, cb) == want
