"""imagenet-testbed evaluation directories (as its src/inference.py writes them), read with no code run."""
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from divergent.data.imagenet import imagenet_wnids  # noqa: E402
from divergent.errors import DivergentError  # noqa: E402
from divergent.store import Store  # noqa: E402
from divergent.store.formats import import_format  # noqa: E402


def write_eval(d, *, model="resnet50", setting="val", n=8, seed=0):
    """What inference.py + eval.py leave in a log directory."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    logits = torch.from_numpy(rng.normal(size=(n, 1000)).astype(np.float32))
    targets = torch.from_numpy(rng.integers(0, 1000, n))
    wn = imagenet_wnids()
    paths = np.concatenate([[f"{wn[t]}/img_{i:03d}.JPEG" for i, t in enumerate(targets.tolist())]])
    torch.save(logits, d / "logits.pt")
    torch.save(targets, d / "targets.pt")
    with open(d / "image_paths.pkl", "wb") as f:
        np.save(f, paths)
    (d / "metrics.json").write_text(json.dumps({"top1": 0.1, "top5": 0.5}))
    (d / "task.cmd").write_text(f"CUDA_VISIBLE_DEVICES=0 python src/inference.py --model={model} "
                                f"--eval-setting={setting}  --logdir={d}\n")
    return logits.numpy(), targets.numpy(), paths


def test_val_and_a_shifted_setting_become_split_and_shifted_split(tmp_path):
    z, y, paths = write_eval(tmp_path / "e1")
    z2, y2, _ = write_eval(tmp_path / "e2", setting="imagenetv2-matched-frequency", seed=1)
    import_format(tmp_path / "st", tmp_path / "e1", format="imagenet-testbed", split="test")
    import_format(tmp_path / "st", tmp_path / "e2", format="imagenet-testbed", split="test")
    st = Store.open(tmp_path / "st")
    assert sorted(st.splits) == ["test", "test~imagenetv2-matched-frequency"]
    sd = st.split("test")
    assert sd.class_names == list(imagenet_wnids())
    assert list(sd.ids) == list(paths) and np.array_equal(sd.labels, y)
    np.testing.assert_array_equal(st.array("resnet50", "test", "logits"), z)
    assert st.split("test~imagenetv2-matched-frequency").meta["shift_of"] == "test"
    assert st.card("resnet50").provenance["imagenet_testbed"]["metrics"]["top1"] == 0.1


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_with_code_is_refused(tmp_path, capsys):
    write_eval(tmp_path / "e")
    (tmp_path / "e" / "image_paths.pkl").write_bytes(pickle.dumps([_Evil()]))
    with pytest.raises(DivergentError, match="image_paths.pkl"):
        import_format(tmp_path / "st", tmp_path / "e", format="imagenet-testbed", split="test")
    assert "code ran" not in capsys.readouterr().out
    assert not (tmp_path / "st").exists()
    # a plain pickled list of strings is accepted
    write_eval(tmp_path / "f")
    paths = np.load(tmp_path / "f" / "image_paths.pkl").tolist()
    (tmp_path / "f" / "image_paths.pkl").write_bytes(pickle.dumps(paths))
    import_format(tmp_path / "st", tmp_path / "f", format="imagenet-testbed", split="test")


def test_a_pt_file_that_is_not_a_tensor_is_refused(tmp_path, capsys):
    write_eval(tmp_path / "e")
    torch.save({"logits": torch.zeros(8, 1000), "x": _Evil()}, tmp_path / "e" / "logits.pt")
    with pytest.raises(DivergentError, match="logits.pt"):
        import_format(tmp_path / "st", tmp_path / "e", format="imagenet-testbed", split="test")
    assert "code ran" not in capsys.readouterr().out
    assert not (tmp_path / "st").exists()


def test_targets_outside_the_logits_are_refused(tmp_path):
    write_eval(tmp_path / "e")
    torch.save(torch.full((8,), 1000), tmp_path / "e" / "targets.pt")
    with pytest.raises(DivergentError, match="class_sublist"):
        import_format(tmp_path / "st", tmp_path / "e", format="imagenet-testbed", split="test")
