"""Accuracy/agreement on the line, ALine-S, ALine-D and ATC on arrays: hand-computed cases and
exact recovery on synthetic lines (property tests)."""
import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from divergent.errors import DivergentError
from divergent.metrics import lines as lm


def test_probit_clips_to_1e4():
    assert lm.probit(0.0) == pytest.approx(ndtri(1e-4))
    assert lm.probit(1.0) == pytest.approx(ndtri(1 - 1e-4))
    assert lm.probit(0.5) == 0.0
    assert lm.inv_probit(lm.probit(0.3)) == pytest.approx(0.3, abs=1e-15)


def test_fit_line_hand_computed():
    f = lm.fit_line([0, 1, 2], [1, 3, 5])
    assert (f["slope"], f["bias"], f["r2"]) == pytest.approx((2.0, 1.0, 1.0))
    # x mean 1.5, y mean 1; sxy = 3, sxx = 5, syy = 2 -> slope 0.6, bias 0.1, r2 = 9/10
    f = lm.fit_line([0, 1, 2, 3], [0, 1, 1, 2])
    assert (f["slope"], f["bias"], f["r2"]) == pytest.approx((0.6, 0.1, 0.9))
    assert np.isnan(lm.fit_line([1, 1, 1], [0, 1, 2])["slope"])


def _on_the_line(rng, m, a, b, lead=()):
    acc_id = rng.uniform(0.55, 0.95, size=lead + (m,))
    agr_id = rng.uniform(0.6, 0.97, size=lead + (m * (m - 1) // 2,))
    f = lambda p: ndtr(a * ndtri(p) + b)  # noqa: E731
    return acc_id, f(acc_id), agr_id, f(agr_id)


@pytest.mark.parametrize("m", [3, 4, 7])
def test_aline_s_and_d_exact_when_the_lines_hold(m):
    rng = np.random.default_rng(m)
    acc_id, acc_ood, agr_id, agr_ood = _on_the_line(rng, m, a=0.83, b=-0.41)
    s = lm.aline_s(acc_id, agr_id, agr_ood)
    d = lm.aline_d(acc_id, agr_id, agr_ood)
    assert s["slope"] == pytest.approx(0.83, abs=1e-12) and s["bias"] == pytest.approx(-0.41, abs=1e-12)
    np.testing.assert_allclose(s["estimate"], acc_ood, atol=1e-12)
    np.testing.assert_allclose(d["estimate"], acc_ood, atol=1e-12)
    # the naive baseline is far off
    assert np.abs(acc_id - acc_ood).mean() > 0.05


def test_aline_batched_over_resamples():
    rng = np.random.default_rng(1)
    acc_id, acc_ood, agr_id, agr_ood = _on_the_line(rng, 5, a=1.2, b=-0.7, lead=(4,))
    np.testing.assert_allclose(lm.aline_d(acc_id, agr_id, agr_ood)["estimate"], acc_ood, atol=1e-12)
    np.testing.assert_allclose(lm.aline_s(acc_id, agr_id, agr_ood)["estimate"], acc_ood, atol=1e-12)
    one = lm.aline_d(acc_id[2], agr_id[2] * 0.99, agr_ood[2])["estimate"]
    many = lm.aline_d(acc_id, agr_id * 0.99, agr_ood)["estimate"]
    np.testing.assert_allclose(many[2], one, atol=1e-14)


def test_aline_hand_computed_three_models():
    # probit scale: x = probit(agr_id) = [0, 1, 2], y = probit(agr_ood) = [0, 1, 3] over pairs
    # (0,1), (0,2), (1,2): slope 1.5, bias -1/6; probit(acc_id) = [0.5, 1.0, 1.5].
    # ALine-D: (w0+w1)/2 = 0 + 1.5 (0.75 - 0) = 1.125, (w0+w2)/2 = 1 + 1.5 (1 - 1) = 1,
    # (w1+w2)/2 = 3 + 1.5 (1.25 - 2) = 1.875  ->  w = [0.25, 2.0, 1.75].
    acc_id, agr_id, agr_ood = ndtr([0.5, 1.0, 1.5]), ndtr([0.0, 1.0, 2.0]), ndtr([0.0, 1.0, 3.0])
    d = lm.aline_d(acc_id, agr_id, agr_ood)
    assert d["slope"] == pytest.approx(1.5)
    np.testing.assert_allclose(d["estimate"], ndtr([0.25, 2.0, 1.75]), atol=1e-12)
    s = lm.aline_s(acc_id, agr_id, agr_ood)
    np.testing.assert_allclose(s["estimate"], ndtr(1.5 * np.array([0.5, 1.0, 1.5]) - 1 / 6), atol=1e-12)


def test_aline_d_needs_three_models():
    with pytest.raises(DivergentError, match="at least 3"):
        lm.aline_d([0.8, 0.9], [0.85], [0.7])


def test_atc_hand_computed():
    # 2 errors among 5 -> the threshold is the 3rd smallest score; 3 of 5 scores are >= it
    t = lm.atc_threshold([0.5, 0.1, 0.4, 0.3, 0.2], [True, False, True, False, True])
    assert t == 0.3
    assert lm.atc_estimate([0.5, 0.1, 0.4, 0.3, 0.2], t) == pytest.approx(0.6)
    assert lm.atc_estimate([0.05, 0.3, 0.35, 0.9], t) == pytest.approx(0.75)
    assert lm.atc_threshold([0.2, 0.4], [False, False]) == np.inf
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(lm.atc_score(p, "negent"), [-np.log(2), 0.0])
    np.testing.assert_allclose(lm.atc_score(p, "maxconf"), [0.5, 1.0])
    with pytest.raises(DivergentError):
        lm.atc_score(p, "entropy")


def test_line_checks():
    good = {"accuracy": {"r2": 0.97}, "agreement": {"r2": 0.95}}
    iv = {"accuracy_slope": (0.8, 1.0), "agreement_slope": (0.9, 1.1), "accuracy_bias": (-0.5, -0.3),
          "agreement_bias": (-0.4, -0.2)}
    assert lm.line_checks(good, iv) == []
    bad_r2 = {"accuracy": {"r2": 0.97}, "agreement": {"r2": 0.5}}
    assert "R^2" in lm.line_checks(bad_r2, iv)[0]
    apart = dict(iv, agreement_bias=(-0.25, -0.1))
    why = lm.line_checks(good, apart)
    assert len(why) == 1 and why[0].startswith("the biases differ beyond their intervals")
    both = lm.line_checks(good, dict(apart, agreement_slope=(1.2, 1.4)))
    assert [w.split(" (")[0] for w in both] == ["the slopes differ beyond their intervals",
                                                "the biases differ beyond their intervals"]
