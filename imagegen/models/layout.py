"""The image <-> sequence layout, written once.

Sub-pixel ``(i, j, c)`` of a ``C x H x W`` image has the flat index ``(i * W + j) * C + c``: raster
over pixels, colour channels within a pixel. ``to_sequence`` and ``to_image`` convert between the two
layouts (any trailing feature dimensions ride along); ``subpixels`` splits the grouped feature maps of
the convolutional and recurrent models (``masked.py``) into one feature vector per sub-pixel.
"""

from __future__ import annotations

import torch


def to_sequence(x: torch.Tensor) -> torch.Tensor:
    """Images ``(B, C, H, W, ...)`` -> sequences ``(B, H*W*C, ...)`` in flat sub-pixel order."""
    return x.movedim(1, 3).flatten(1, 3)


def to_image(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Sequences ``(B, H*W*C, ...)`` in flat sub-pixel order -> images ``(B, C, H, W, ...)``."""
    return x.unflatten(1, (height, width, channels)).movedim(3, 1)


def subpixels(features: torch.Tensor, channels: int) -> torch.Tensor:
    """Grouped feature maps ``(B, C*F, H, W)`` -> per-sub-pixel features ``(B, C, H, W, F)``."""
    B, CF, H, W = features.shape
    return features.view(B, channels, CF // channels, H, W).permute(0, 1, 3, 4, 2)
