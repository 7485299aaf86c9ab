"""Augmentations: seeded, in range; the CIFAR-10 "simclr" view is pinned to `simclr_view`'s defaults."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from divergent.train.augment import AUGMENTATIONS, SIMCLR_VIEWS, augment, simclr_view  # noqa: E402
from divergent.train.recipes import zoo  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(c):
    return torch.rand(8, c, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("c", [1, 3])
def test_simclr_is_unchanged(c):
    # "simclr" (used by the CIFAR-10 zoo) must stay exactly simclr_view with its defaults
    assert SIMCLR_VIEWS["simclr"] == {}
    x = _batch(c)
    a = augment(x, "simclr", torch.Generator().manual_seed(3))
    b = simclr_view(x, torch.Generator().manual_seed(3), scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), jitter=0.4,
                    p_gray=0.2)
    assert torch.equal(a, b)
    assert all(r.augment in ("crop-flip", "none", "simclr") for r in zoo("cifar10"))


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_augmentations_are_seeded_and_in_range(kind):
    x = _batch(1)
    a = augment(x, kind, torch.Generator().manual_seed(4))
    b = augment(x, kind, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
