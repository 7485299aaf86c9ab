"""model-vs-human raw data in, its human-likeness table out (checked against hand-computed values)."""
import numpy as np
import pytest

from divergent.analyses.consistency import consistency
from divergent.analyses.pairs import pairs
from divergent.cli import main
from divergent.errors import DivergentError
from divergent.store import Store
from divergent.store.formats import import_format
from divergent.store.formats.model_vs_human import short_imagename
from mvh_raw import write_raw


def test_short_imagename_matches_model_vs_human():
    assert short_imagename("0000_cl_s01_bw_boat_40_n02951358_5952.JPEG") == "n02951358_5952.JPEG"
    assert short_imagename("airplane1-bicycle2.png") == "airplane1-bicycle2.png"
    assert short_imagename("0001_s5n_s01_0_bird_00_bird3-bird2.png") == "bird3-bird2.png"


def test_import_splits_humans_and_na(tmp_path):
    raw = write_raw(tmp_path / "raw-data")
    res = import_format(tmp_path / "st", raw, format="model-vs-human")
    assert len(res) == 6
    st = Store.open(tmp_path / "st")
    assert sorted(st.splits) == ["contrast", "sketch"]
    assert "contrast/subject-01" in st.models and "resnet50" in st.models
    sd = st.split("contrast")
    assert sd.n == 12 and len(sd.class_names) == 16
    assert sorted(set(sd.meta["conditions"])) == ["c10", "c100", "c50"]
    pred = st.array("contrast/subject-02", "contrast", "pred")[:, 0]
    assert (pred == -1).sum() == 1  # the unanswered trial
    assert st.card("contrast/subject-01").train_data == "human-vision"
    # decision-only pairs work, and 'na' counts as wrong
    df = pairs(st, split="contrast", calibrated=False, n_boot=0)
    row = df[(df.model_a == "contrast/subject-01") & (df.model_b == "contrast/subject-02")].iloc[0]
    assert row["acc_b"] == pytest.approx(6 / 12)
    assert np.isnan(row["ensemble_acc"])


def test_consistency_table_matches_hand_computed_values(tmp_path):
    write_raw(tmp_path / "raw-data")
    import_format(tmp_path / "st", tmp_path / "raw-data", format="model-vs-human")
    t = consistency(tmp_path / "st", humans="subject-*").set_index("model")
    m = t.loc["resnet50"]
    assert m["accuracy_difference"] == pytest.approx(0.0390625)
    assert m["observed_consistency"] == pytest.approx(0.78125)
    assert m["error_consistency"] == pytest.approx(19 / 48)
    h = t.loc["humans"]
    assert h["accuracy_difference"] == pytest.approx(0.109375)
    assert h["observed_consistency"] == pytest.approx(0.6875)
    assert h["error_consistency"] == pytest.approx(0.175)
    assert m["n_datasets"] == 2 and m["n_humans"] == 4


def test_consistency_cli_writes_the_table(tmp_path):
    write_raw(tmp_path / "raw-data")
    assert main(["import", str(tmp_path / "st"), str(tmp_path / "raw-data"), "--format", "model-vs-human"]) == 0
    out = tmp_path / "h.csv"
    assert main(["consistency", str(tmp_path / "st"), "--humans", "subject-*", "--aggregate", "model-vs-human",
                 "--out", str(out)]) == 0
    import pandas as pd

    df = pd.read_csv(out).set_index("model")
    assert df.loc["resnet50", "error_consistency"] == pytest.approx(19 / 48)


@pytest.mark.parametrize("bad, needle", [
    (lambda p: p.write_text("subj,trial\nsubject-01,1\n"), "no column"),
    (lambda p: p.write_text(p.read_text().replace(",knife,knife,c50", ",spoon,knife,c50", 1)), "unknown responses"),
    (lambda p: p.write_text(p.read_text().replace(",bicycle,c50,", ",knife,c50,", 1)), "must agree"),
    (lambda p: p.write_text("\n".join(p.read_text().splitlines()[:-1]) + "\n"), "answered 11 of the 12"),
])
def test_bad_files_are_refused_and_nothing_is_written(tmp_path, bad, needle):
    raw = write_raw(tmp_path / "raw-data")
    bad(raw / "contrast" / "contrast_subject-02_session_1.csv")
    with pytest.raises(DivergentError, match=needle):
        import_format(tmp_path / "st", raw, format="model-vs-human")
    assert not (tmp_path / "st").exists()


def test_a_model_may_not_answer_na(tmp_path):
    raw = write_raw(tmp_path / "raw-data")
    p = raw / "sketch" / "sketch_resnet50_session-1.csv"
    lines = p.read_text().splitlines()
    parts = lines[1].split(",")
    parts[4] = "na"
    p.write_text("\n".join([lines[0], ",".join(parts), *lines[2:]]) + "\n")
    with pytest.raises(DivergentError, match="answered 'na'"):
        import_format(tmp_path / "st", raw, format="model-vs-human")


def test_a_name_the_store_refuses_leaves_no_store_behind(tmp_path):
    raw = write_raw(tmp_path / "raw-data")
    p = raw / "sketch" / "sketch_resnet50_session-1.csv"
    p.write_text(p.read_text().replace("\nresnet50,", "\n../resnet50,"))
    with pytest.raises(DivergentError, match="resnet50"):
        import_format(tmp_path / "st", raw, format="model-vs-human")
    assert not (tmp_path / "st").exists()
