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
