"""Low-/high-resolution pairs for super-resolution: area downsampling of integer images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def area_downsample(images: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Mean of each ``factor x factor`` block, rounded to the nearest level.

    ``(N, C, H, W)`` integers -> same dtype ``(N, C, H // factor, W // factor)``. ``H`` and ``W``
    must be multiples of ``factor``.
    """
    N, C, H, W = images.shape
    if H % factor or W % factor:
        raise ValueError(f"image size {H}x{W} is not a multiple of the downsampling factor {factor}")
    mean = F.avg_pool2d(images.double(), factor)
    return torch.floor(mean + 0.5).to(images.dtype)
