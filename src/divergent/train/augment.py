"""Batched, seeded image augmentations on float tensors in [0, 1] (deterministic given a torch.Generator)."""
from __future__ import annotations

import math

from ..errors import require, unknown

#: SimCLR view augmentations: name -> keyword arguments of `simclr_view` ("simclr" = its defaults)
SIMCLR_VIEWS: dict[str, dict] = {
    "simclr": {},
    # Fashion-MNIST (28x28 grey, centred objects): milder crops (area 0.5-1). Measured in docs/zoo.md:
    # +0.3 points over "simclr"; no jitter costs 3 points, stronger jitter (0.8) does not help.
    "simclr-gray": {"scale": (0.5, 1.0)},
}

AUGMENTATIONS = ("none", "crop-flip", *SIMCLR_VIEWS)


def augment(x, kind: str, gen):
    """Augment a batch (N, C, H, W) in [0, 1] with randomness drawn only from `gen` (CPU generator)."""
    if kind == "none":
        return x
    if kind == "crop-flip":
        return shift_flip(x, gen, max_shift=max(2, x.shape[-1] // 8))
    if kind in SIMCLR_VIEWS:
        return simclr_view(x, gen, **SIMCLR_VIEWS[kind])
    raise unknown("augmentation", kind, AUGMENTATIONS)


def _rand(n, gen, device):
    torch = require("torch", "torch")
    return torch.rand(n, generator=gen).to(device)


def _affine(x, sx, sy, tx, ty):
    torch = require("torch", "torch")
    F = torch.nn.functional
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, sy, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def shift_flip(x, gen, max_shift: int):
    """Random integer translation by up to `max_shift` pixels (zero fill) and horizontal flip."""
    torch = require("torch", "torch")
    n, size = x.shape[0], x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (2, n), generator=gen).to(x.device, x.dtype)
    flip = torch.where(_rand(n, gen, x.device) < 0.5, -1.0, 1.0).to(x.dtype)
    return _affine(x, flip, torch.ones_like(flip), shift[0] * 2 / size, shift[1] * 2 / size)


def simclr_view(x, gen, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), jitter=0.4, p_gray=0.2):
    """SimCLR-style view: random resized crop, horizontal flip, brightness/contrast(/saturation) jitter."""
    torch = require("torch", "torch")
    n, c, dev = x.shape[0], x.shape[1], x.device
    area = scale[0] + (scale[1] - scale[0]) * _rand(n, gen, dev)
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(n, gen, dev)
    w = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    tx = (2 * _rand(n, gen, dev) - 1) * (1 - w)
    ty = (2 * _rand(n, gen, dev) - 1) * (1 - h)
    flip = torch.where(_rand(n, gen, dev) < 0.5, -1.0, 1.0)
    y = _affine(x, (w * flip).to(x.dtype), h.to(x.dtype), tx.to(x.dtype), ty.to(x.dtype))
    b = (1 + jitter * (2 * _rand(n, gen, dev) - 1)).view(n, 1, 1, 1)
    k = (1 + jitter * (2 * _rand(n, gen, dev) - 1)).view(n, 1, 1, 1)
    y = y * b
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * k + mean
    if c == 3:
        s = (1 + jitter * (2 * _rand(n, gen, dev) - 1)).view(n, 1, 1, 1)
        gray = (0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3])
        y = (y - gray) * s + gray
        to_gray = (_rand(n, gen, dev) < p_gray).view(n, 1, 1, 1)
        y = torch.where(to_gray, gray.expand_as(y), y)
    return y.clamp(0.0, 1.0)


def mask_patches(x, gen, ratio: float, patch: int = 4):
    """Zero a random `ratio` of the non-overlapping patch×patch squares; returns (masked x, pixel mask)."""
    torch = require("torch", "torch")
    n, _, hgt, wid = x.shape
    gh, gw = hgt // patch, wid // patch
    keep = (torch.rand(n, 1, gh, gw, generator=gen) >= ratio).to(x.device, x.dtype)
    keep = keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    keep = torch.nn.functional.pad(keep, (0, wid - gw * patch, 0, hgt - gh * patch), value=1.0)
    return x * keep, 1.0 - keep
