"""Masked convolutions: the causal building block of PixelCNN and PixelRNN.

Sub-pixels are ordered raster over pixels and R, G, B within a pixel. Feature maps are split
into ``channels`` contiguous groups, group ``g`` belonging to colour ``g``; at the kernel's
centre, output group ``g`` sees input groups ``< g`` (mask A, first layer) or ``<= g`` (mask B).
Positions before the centre in raster order are all visible, positions after it none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_of(index: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Colour group of each feature index of a map with ``size`` features split into ``channels``
    contiguous groups (as even as ``size`` allows)."""
    return index * channels // size


def causal_mask(out_features: int, in_features: int, kernel: tuple[int, int], center: tuple[int, int],
                mask_type: str, channels: int) -> torch.Tensor:
    """The ``(out, in, kh, kw)`` 0/1 mask of a masked convolution whose output sits at ``center``."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', not {mask_type!r}")
    kh, kw = kernel
    ci, cj = center
    rows = torch.arange(kh)[:, None]
    cols = torch.arange(kw)[None, :]
    before = (rows < ci) | ((rows == ci) & (cols < cj))
    mask = before.expand(out_features, in_features, kh, kw).clone().float()
    g_out = group_of(torch.arange(out_features), out_features, channels)[:, None]
    g_in = group_of(torch.arange(in_features), in_features, channels)[None, :]
    mask[:, :, ci, cj] = (g_in < g_out if mask_type == "A" else g_in <= g_out).float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose output at a pixel sees only earlier sub-pixels (see the module doc).

    ``kernel`` is ``(kh, kw)`` and ``center`` the kernel position aligned with the output pixel
    (default: the middle); the input is zero-padded so the output has the input's size.
    """

    def __init__(self, in_features: int, out_features: int, kernel: int | tuple[int, int],
                 mask_type: str, channels: int, center: tuple[int, int] | None = None, bias: bool = True):
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        super().__init__(in_features, out_features, kernel, bias=bias)
        self.center = center or (kernel[0] // 2, kernel[1] // 2)
        ci, cj = self.center
        self.pad = (cj, kernel[1] - 1 - cj, ci, kernel[0] - 1 - ci)  # F.pad order: left, right, top, bottom
        self.register_buffer("mask", causal_mask(out_features, in_features, kernel, self.center,
                                                 mask_type, channels), persistent=False)

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        """``(B, F_in, H, W) -> (B, F_out, H, W)``; with a ``cache``, ``x`` is the input at the
        cache's current position, ``(B, F_in, 1, 1)``, and the result the output there."""
        if cache is not None:
            return cache.step(x)
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


class ConvCache:
    """The padded input map of one masked convolution, filled in one position at a time.

    The decoder sets ``i, j``; ``step`` writes the input at ``(i, j)`` and computes the output
    there from the kernel window, which costs one kernel application instead of a full map.
    """

    def __init__(self, conv: MaskedConv2d, batch: int, height: int, width: int,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float32):
        left, right, top, bottom = conv.pad
        self.map = torch.zeros(batch, conv.in_channels, height + top + bottom, width + left + right,
                               device=device, dtype=dtype)
        self.top, self.left = top, left
        self.kh, self.kw = conv.kernel_size
        self.weight = (conv.weight * conv.mask).detach().to(dtype)
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)
        self.i = self.j = 0

    def write(self, x: torch.Tensor, i: int, j: int) -> None:
        """Store the input ``(B, F_in)`` at ``(i, j)`` without computing anything."""
        self.map[:, :, i + self.top, j + self.left] = x

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``(B, F_in, 1, 1)`` at ``(i, j)`` -> output ``(B, F_out, 1, 1)`` at ``(i, j)``."""
        self.write(x[:, :, 0, 0], self.i, self.j)
        window = self.map[:, :, self.i:self.i + self.kh, self.j:self.j + self.kw]
        return F.conv2d(window, self.weight, self.bias)
