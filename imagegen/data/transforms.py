"""Pixel-level transforms: binarization and square crop + resize."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from imagegen.errors import DataError

BINARIZE_MODES = ("threshold", "stochastic")
_CHUNK = 4096  # images per random draw, to bound the float buffer of stochastic binarization


def binarize(
    images: torch.Tensor, mode: str = "threshold", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Binarize 8-bit images.

    images: uint8 tensor of any shape, e.g. (N, C, H, W), values 0..255.
    mode: "threshold" gives 1 where pixel > 127; "stochastic" draws 1 with probability pixel / 255
    (pass a seeded `generator` for reproducible draws).
    Returns a uint8 tensor of the same shape with values in {0, 1}.
    """
    if images.dtype != torch.uint8:
        raise DataError(f"binarize expects uint8 images with values 0..255, got dtype {images.dtype}")
    if mode == "threshold":
        return (images > 127).to(torch.uint8)
    if mode == "stochastic":
        flat = images.reshape(len(images), -1) if images.dim() > 1 else images.reshape(1, -1)
        out = torch.empty(flat.shape, dtype=torch.uint8, device=images.device)
        for start in range(0, len(flat), _CHUNK):
            block = flat[start : start + _CHUNK]
            u = torch.rand(block.shape, generator=generator, device=images.device)
            out[start : start + _CHUNK] = (u * 255.0 < block).to(torch.uint8)
        return out.reshape(images.shape)
    raise DataError(f"unknown binarize mode {mode!r}: use one of {', '.join(BINARIZE_MODES)}")


def crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Center-crop a Pillow image to a square and resize it to (size, size).

    Downsizing averages with Image.Resampling.BOX, upsizing uses BICUBIC; a crop already of
    the right size is returned unfiltered.
    """
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    if side == size:
        return image.crop(box)
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC
    return image.resize((size, size), resample=resample, box=box)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W), C in {1, 3}, to (N, C, size, size) with `crop_resize`."""
    n, c, h, w = images.shape
    if h == w == size:
        return images
    if c not in (1, 3):
        raise DataError(f"cannot resize images with {c} channels: only 1 (L) or 3 (RGB) are supported")
    arr = images.permute(0, 2, 3, 1).numpy()
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for i in range(n):
        im = Image.fromarray(np.ascontiguousarray(arr[i, :, :, 0] if c == 1 else arr[i]))
        out[i] = np.asarray(crop_resize(im, size)).reshape(size, size, c)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
