"""A divergent store read by other tools: model-vs-human raw-data CSVs and a tidy long Parquet table."""
import numpy as np
import pandas as pd
import pytest

from divergent.analyses.consistency import consistency
from divergent.cli import main
from divergent.store import Store
from divergent.store.export import export_long, export_model_vs_human
from divergent.store.formats import import_format

from mvh_raw import write_raw


def test_model_vs_human_round_trip(tmp_path):
    import_format(tmp_path / "a", write_raw(tmp_path / "raw-data"), format="model-vs-human")
    files = export_model_vs_human(Store.open(tmp_path / "a"), tmp_path / "out")
    assert sorted(p.name for p in files if p.parent.name == "sketch") == [
        "sketch_resnet50_session-1.csv", "sketch_subject-01_session_1.csv", "sketch_subject-02_session_1.csv"]
    df = pd.read_csv(tmp_path / "out" / "contrast" / "contrast_subject-02_session_1.csv")
    assert list(df.columns) == ["subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename"]
    assert (df["object_response"] == "na").sum() == 1 and set(df["subj"]) == {"subject-02"}
    import_format(tmp_path / "b", tmp_path / "out", format="model-vs-human")
    a = consistency(tmp_path / "a").set_index("model")
    b = consistency(tmp_path / "b").set_index("model")
    pd.testing.assert_frame_equal(a, b, check_like=True)


def test_long_parquet_has_one_row_per_model_and_example(tmp_path):
    import_format(tmp_path / "a", write_raw(tmp_path / "raw-data"), format="model-vs-human")
    st = Store.open(tmp_path / "a")
    with st.writer() as w:
        rng = np.random.default_rng(0)
        w.put("scored", "sketch", logits=rng.normal(size=(4, 16)).astype(np.float32))
    assert main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "x.parquet")]) == 0
    df = pd.read_parquet(tmp_path / "x.parquet")
    assert {"model", "split", "id", "label", "pred", "correct", "confidence"} <= set(df.columns)
    assert len(df) == 3 * 12 + 4 * 4
    s = df[df.model == "scored"]
    assert s["confidence"].between(1 / 16, 1).all()
    h = df[df.model == "contrast/subject-02"]
    assert (h["pred"] == -1).sum() == 1 and not h.loc[h["pred"] == -1, "correct"].any()
    assert df.loc[df.model == "resnet50", "confidence"].isna().all()
