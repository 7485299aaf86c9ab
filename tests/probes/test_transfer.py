"""Downstream transfer (Section 4.7): single embeddings, stacked pairs, single- and multi-label."""
from __future__ import annotations

import pytest

from divergent.errors import DivergentError
from divergent.probes.transfer import transfer


def test_single_label_transfer_with_pairs(digits_store):
    df = transfer(digits_store, ["pixels", "relu"], task="digits", grid=[1e-4, 1e-2])
    assert list(df.kind) == ["single", "single", "pair"]
    assert list(df.models) == ["pixels", "relu", "pixels+relu"]
    assert (df.metric == "accuracy").all() and df.value.between(0.85, 1.0).all()
    assert df.dims.tolist() == [64, 48, 112]
    assert df.split.iloc[0] == "digits/test"


def test_multilabel_transfer(digits_store):
    df = transfer(digits_store, ["pixels", "relu"], task="mosaic", pairs=True, grid=[1e-3, 1e-2])
    assert set(df.metric) == {"map11", "map_all"}
    assert len(df) == 6
    assert df.value.between(0.5, 1.0).all()
    assert (df.select_metric == "map11").all()


def test_transfer_bad_input(digits_store):
    with pytest.raises(DivergentError, match="no split"):
        transfer(digits_store, ["pixels"], task="voc")
    with pytest.raises(DivergentError, match="no models"):
        transfer(digits_store, [], task="digits")
    with pytest.raises(DivergentError, match="no model"):
        transfer(digits_store, ["pixels", "ghost"], task="digits")


def test_transfer_return_scores(digits_store):
    import numpy as np

    df, z = transfer(digits_store, ["pixels", "relu"], task="digits", grid=[1e-3], return_scores=True)
    assert list(z) == ["pixels", "relu", "pixels+relu"]
    y = np.asarray(digits_store.split("digits/test").labels)
    for r in df.itertuples():
        assert z[r.models].shape == (len(y), 10)
        assert float((z[r.models].argmax(1) == y).mean()) == r.value
    plain = transfer(digits_store, ["pixels", "relu"], task="digits", grid=[1e-3])
    assert plain.value.tolist() == df.value.tolist()
