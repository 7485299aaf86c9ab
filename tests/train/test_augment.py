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
    if kind == "none":
        assert torch.equal(a, x)
        return
    # it changes every image, draws from the generator it is given, and each image gets its own draw
    assert all(not torch.allclose(a[i], x[i]) for i in range(len(x)))
    assert not torch.equal(augment(x, kind, torch.Generator().manual_seed(5)), a)
    same = augment(x[:1].expand(8, -1, -1, -1).contiguous(), kind, torch.Generator().manual_seed(4))
    assert len({tuple(v.flatten().tolist()) for v in same}) == 8


def _shifted(img, dy, dx, flip):
    """img (H, W) flipped left-right (optional), moved by (dy, dx) whole pixels, zero-filled."""
    src = img.flip(-1) if flip else img
    out = torch.zeros_like(src)
    h, w = src.shape
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = src[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    return out


def test_crop_flip_is_a_whole_pixel_shift_and_flip():
    """Each "crop-flip" image is its input moved by at most max(2, size // 8) pixels, maybe mirrored."""
    x = _batch(1)
    a = augment(x, "crop-flip", torch.Generator().manual_seed(4))
    moves = []
    for i in range(len(x)):
        fits = [(dy, dx, f) for f in (False, True) for dy in range(-3, 4) for dx in range(-3, 4)
                if torch.allclose(_shifted(x[i, 0], dy, dx, f), a[i, 0], atol=1e-5)]
        assert len(fits) == 1, (i, fits)
        moves.append(fits[0])
    assert len(set(moves)) > 1 and {f for _, _, f in moves} == {False, True}
