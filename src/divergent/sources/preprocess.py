"""Preprocessing: PIL image -> uint8 HWC crop (in DataLoader workers) -> normalized batch (main side).

The geometric part (grayscale->RGB, resize, center crop) runs per image in the workers and
returns uint8 arrays, which are cheap to pass between processes; the arithmetic part
(value range, mean/std, channel order, layout, dtype) runs once per batch, on the device.
Both follow torchvision/timm exactly: ``Resize(int)`` keeps the aspect ratio with the shorter
side at the target (``long = int(target * long / short)``), ``CenterCrop`` offsets by
``int(round((h - crop) / 2))``, and normalization is ``x.float().div(255).sub(mean).div(std)``
in float32, so results are bit-identical to the reference transforms.
"""
from __future__ import annotations

import numpy as np

from ..errors import DivergentError
from .spec import Preprocess

_PIL_INTERP = {"bilinear": 2, "bicubic": 3, "nearest": 0, "lanczos": 1, "box": 4, "hamming": 5}


def _resize_shorter(img, target: int, interp: int):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == target:
        return img
    new_short, new_long = target, int(target * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), interp)


def _center_crop(img, size: int):
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if w < size or h < size:
        raise DivergentError(f"image of {w}x{h} is smaller than the crop {size}x{size}", "use a resize rule that upsamples first")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


class ImageTransform:
    """Picklable per-image transform: PIL image (or uint8 array) -> uint8 HWC RGB array of size x size."""

    def __init__(self, pre: Preprocess):
        self.pre = pre

    def __call__(self, img) -> np.ndarray:
        from PIL import Image

        pre = self.pre
        if isinstance(img, np.ndarray):
            arr = img
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            if pre.resize_rule == "none" and arr.shape[:2] == (pre.size, pre.size) and arr.dtype == np.uint8 and arr.shape[2] == 3:
                return np.ascontiguousarray(arr)
            img = Image.fromarray(arr)
        if img.mode != "RGB":
            if not pre.gray_to_rgb and img.mode in ("L", "I", "F"):
                raise DivergentError("grayscale image given to a model that does not accept grayscale", "enable gray_to_rgb")
            img = img.convert("RGB")
        interp = _PIL_INTERP[pre.interpolation]
        if pre.resize_rule == "shorter-then-crop":
            img = _center_crop(_resize_shorter(img, pre.resize_to, interp), pre.size)
        elif pre.resize_rule == "exact":
            r = pre.resize_to
            if img.size != (r, r):
                img = img.resize((r, r), interp)
            img = _center_crop(img, pre.size)
        elif img.size != (pre.size, pre.size):
            raise DivergentError(
                f"image of {img.size[0]}x{img.size[1]} given to a model that takes {pre.size}x{pre.size} without resizing",
                "use a dataset at the model's input size, or a spec with a resize rule",
            )
        return np.asarray(img, dtype=np.uint8)


def normalize_torch(batch, pre: Preprocess):
    """uint8 NHWC torch tensor (on its device) -> the model's input tensor."""
    import torch

    x = batch
    if pre.dtype == "uint8":
        if pre.channel_order == "BGR":
            x = x.flip(-1)
        return x.permute(0, 3, 1, 2).contiguous() if pre.layout == "NCHW" else x.contiguous()
    x = x.permute(0, 3, 1, 2).contiguous().to(torch.float32)  # as ToTensor: CHW first, then float
    if pre.value_range == "0-1":
        x = x.div(255)
    mean = torch.as_tensor(pre.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(pre.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    if any(pre.mean) or any(s != 1.0 for s in pre.std):
        x = x.sub(mean).div(std)
    if pre.channel_order == "BGR":
        x = x.flip(1)
    if pre.layout == "NHWC":
        x = x.permute(0, 2, 3, 1).contiguous()
    return x


def normalize_numpy(batch: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 NHWC numpy array -> the model's input array (same float32 arithmetic as torch)."""
    x = np.asarray(batch)
    if pre.dtype == "uint8":
        if pre.channel_order == "BGR":
            x = x[..., ::-1]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if pre.layout == "NCHW" else x)
    x = x.astype(np.float32)
    if pre.value_range == "0-1":
        x = x / np.float32(255)
    if any(pre.mean) or any(s != 1.0 for s in pre.std):
        x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.channel_order == "BGR":
        x = x[..., ::-1]
    if pre.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess_images(images, pre: Preprocess) -> np.ndarray:
    """Convenience: a list of PIL images -> the model's input (numpy), for checks and notebooks."""
    t = ImageTransform(pre)
    return normalize_numpy(np.stack([t(im) for im in images]), pre)
