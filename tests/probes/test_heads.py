"""Linear heads into the store: logits for every split, the card, refusals and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.probes.heads import fit_head
from divergent.store import Store


def test_head_writes_logits_for_every_split(digits_store):
    res = fit_head(digits_store, "relu", "train", "holdout", grid=[1e-4, 1e-3, 1e-2])
    st = Store.open(digits_store.root)
    for s in ("train", "holdout", "test"):
        z = np.asarray(st.array("relu", s, "logits"))
        assert z.shape == (st.split(s).n, 10)
        assert st.has("relu", s, "features")  # the features stay
    assert st.has("relu", "digits/test", "logits")  # same dataset and label space
    assert not st.has("relu", "mosaic/test", "logits")  # multi-label: not the head's label space
    card = st.card("relu")
    assert card.head == "linear-probe"
    rec = card.extra["linear_head"]
    assert rec["lam"] == res["lam"] and rec["fit_on"] == "train" and rec["select_on"] == "holdout"
    assert rec["lam"] in (1e-4, 1e-3, 1e-2) and rec["C"] == pytest.approx(1 / (rec["lam"] * 900))
    test = res["splits"].set_index("split").loc["test", "accuracy"]
    assert test > 0.9  # digits are linearly separable in this projection
    assert len(res["sweep"]) == 3 and res["sweep"].selected.sum() == 1


def test_head_refuses_to_replace_logits_and_new_name(digits_store):
    fit_head(digits_store, "pixels", grid=[1e-3], max_train=300)
    st = Store.open(digits_store.root)
    with pytest.raises(DivergentError, match="already has logits"):
        fit_head(st, "pixels", grid=[1e-3])
    res = fit_head(st, "pixels", grid=[1e-3], name="pixels+lbfgs", max_train=300)
    st = Store.open(digits_store.root)
    assert res["n_fit"] == 300 and st.card("pixels+lbfgs").head == "linear-probe"
    assert st.has("pixels+lbfgs", "test", "logits")
    fit_head(st, "pixels", grid=[1e-3], force=True, max_train=300)


def test_head_bad_input(digits_store):
    with pytest.raises(DivergentError, match="no model"):
        fit_head(digits_store, "nope")
    with pytest.raises(DivergentError, match="selected on the split"):
        fit_head(digits_store, "relu", "train", "train")
    with pytest.raises(DivergentError, match="refusing"):
        fit_head(digits_store, "relu", "train", "test")
    with pytest.raises(DivergentError, match="max_train"):
        fit_head(digits_store, "relu", grid=[1e-3], max_train=5)


class _Shifted:
    """A store whose features for one split have the wrong number of rows."""

    def __init__(self, st):
        self.st = st

    def __getattr__(self, k):
        return getattr(self.st, k)

    def array(self, model, split, kind):
        a = self.st.array(model, split, kind)
        return a[:-1] if split == "holdout" else a


def test_head_mismatched_rows(digits_store):
    with pytest.raises(DivergentError, match="split has 450 examples"):
        fit_head(_Shifted(digits_store), "relu", grid=[1e-3])


def test_missing_embeddings(digits_store, tmp_path):
    from divergent.cards import ModelCard

    st = Store.open(digits_store.root)
    with st.writer() as w:
        w.put("logits-only", "train", logits=np.zeros((900, 10), np.float32), card=ModelCard(name="logits-only"))
    with pytest.raises(DivergentError, match="no embeddings"):
        fit_head(Store.open(digits_store.root), "logits-only", grid=[1e-3])


def test_collapsed_or_constant_embeddings_are_flagged():
    import warnings

    from divergent.probes.heads import CollapsedFeaturesWarning, check_not_collapsed

    rng = np.random.default_rng(0)
    X = np.zeros((50, 1280), np.float32)
    with pytest.raises(DivergentError, match="constant on 'train'"):
        check_not_collapsed("m", "train", X)
    X[:, :6] = rng.normal(size=(50, 6))
    with pytest.warns(CollapsedFeaturesWarning, match="only 6 of 1280"):
        assert check_not_collapsed("m", "train", X) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_not_collapsed("m", "train", rng.normal(size=(50, 64))) == 64
