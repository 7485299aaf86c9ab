"""--mapping-rule: a target's score is the sum (default) or the mean (model-vs-human) of its sources."""
import numpy as np
import pytest

from divergent.errors import DivergentError
from divergent.extract.mapping import apply_mapping, load_mapping
from divergent.store.formats.model_vs_human import categories


def test_model_vs_human_16_mean_vs_sum_by_hand():
    m = load_mapping("model-vs-human-16")
    assert len(m) == 207 and sorted(set(m.values())) == categories() and m.rule == "sum"
    dog = [i for i, c in m.items() if c == "dog"]
    p = np.full((1, 1000), 0.0)
    p[0, dog] = 0.59 / len(dog)     # much mass spread over many dog classes
    p[0, 499] = 0.30                # one knife class
    p[0, 0] = 1 - p.sum()           # an unmapped class (tench)
    cats = categories()
    summed, _ = apply_mapping(p, m, cats)
    mean, info = apply_mapping(p, load_mapping("model-vs-human-16", rule="mean"), cats)
    assert cats[int(summed.argmax())] == "dog" and cats[int(mean.argmax())] == "knife"
    # model-vs-human's ImageNetProbabilitiesTo16ClassesMapping: np.mean over each category's indices
    ref = np.array([p[0, [i for i, c in m.items() if c == k]].mean() for k in cats])
    np.testing.assert_allclose(mean[0], ref / ref.sum(), rtol=1e-6)
    assert info["rule"] == "mean"


def test_unknown_rule_is_refused():
    with pytest.raises(DivergentError, match="median"):
        load_mapping("model-vs-human-16", rule="median")
