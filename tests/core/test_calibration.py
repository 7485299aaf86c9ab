"""Temperature scaling and ECE against independent implementations (torchmetrics, a fine grid)."""
import math
import warnings

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from divergent.metrics.calibration import ece, fit_temperature, nll
from divergent.metrics.probs import reference_probs


def _data(seed=0, n=3000, c=10, scale=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    z = rng.normal(size=(n, c)) * scale
    z[np.arange(n), y] += scale * 1.2
    return z.astype(np.float32), y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_torchmetrics(seed):
    z, y = _data(seed)
    p = reference_probs(z, 1.7)
    ref = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=10, n_bins=15, norm="l1")
    assert ece(p, y) == pytest.approx(float(ref), abs=1e-6)


def test_nll_matches_torch_cross_entropy():
    z, y = _data(3)
    ref = torch.nn.functional.cross_entropy(torch.tensor(z, dtype=torch.float64) / 0.7, torch.tensor(y))
    assert nll(z, y, 0.7) == pytest.approx(float(ref), rel=1e-12)


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])
def test_temperature_matches_fine_grid(scale):
    z, y = _data(4, n=1500, scale=scale)
    fit = fit_temperature(z, y)
    grid = np.exp(np.linspace(math.log(1e-3), math.log(1e2), 4001))
    vals = [nll(z, y, t) for t in grid]
    best = grid[int(np.argmin(vals))]
    assert fit.nll_after <= min(vals) + 1e-9
    assert fit.temperature == pytest.approx(best, rel=2e-3)
    assert fit.nll_after <= fit.nll_before


def test_overconfident_model_needs_small_temperature_and_bound_warns():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 500)
    z = np.zeros((500, 5), np.float32)
    z[np.arange(500), y] = 1e-4  # always right, tiny margins: NLL falls as T -> 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fit = fit_temperature(z, y)
    assert fit.at_bound and fit.temperature < 2e-3
    assert any("bound" in str(x.message) for x in w)


def test_temperature_and_ece_match_netcal():
    # netcal: an independent implementation of temperature scaling (maximum likelihood in torch) and ECE.
    # Its "temperature" multiplies the log-probabilities (q = softmax(w log p)): w = 1 / T; it fits in
    # float32 and clips probabilities, hence the tolerance.
    from netcal.metrics import ECE
    from netcal.scaling import TemperatureScaling

    z, y = _data(5, n=2000, scale=1.5)
    p1 = reference_probs(z, 1.0)
    ts = TemperatureScaling()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts.fit(p1, y)
    w = float(np.ravel(ts.weights)[0])
    fit = fit_temperature(z, y)
    assert not fit.at_bound and abs(math.log(fit.temperature)) > 0.2   # a real correction, away from T = 1
    assert fit.temperature == pytest.approx(1.0 / w, rel=1e-3)
    for t in (1.0, fit.temperature):
        p = reference_probs(z, t)
        assert ece(p, y) == pytest.approx(float(ECE(bins=15).measure(p, y)), abs=1e-9)


def _bound_store(path):
    """A store whose model 'sure' is always right with tiny margins (NLL falls as T -> 0) and 'fine' is not."""
    from divergent.store import Store

    fine, y = _data(6, n=400, c=5)
    sure = np.zeros((400, 5), np.float32)
    sure[np.arange(400), y] = 1e-4
    st = Store.create(path)
    with st.writer() as w:
        w.add_split("holdout", labels=y, class_names=list("abcde"), ids=[f"h/{i}" for i in range(400)])
        w.put("sure", "holdout", logits=sure)
        w.put("fine", "holdout", logits=fine)
    return st


def test_calibrate_warns_when_a_fit_ends_at_the_bound(tmp_path):
    import divergent as dv
    from divergent.store import Store

    st = _bound_store(tmp_path / "s")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = dv.calibrate(st, fit_on="holdout", progress=False).set_index("model")
    msgs = [str(w.message) for w in caught if "bound" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith("sure: temperature fit ended at a bound"), msgs
    assert bool(df.loc["sure", "at_bound"]) and not bool(df.loc["fine", "at_bound"])
    assert df.loc["sure", "temperature"] < 2e-3
    stored = Store.open(st.root)
    assert stored.calibration("sure")["at_bound"] is True and stored.calibration("fine")["at_bound"] is False
