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

from .decoding import DecodingState


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
    (default: the middle); ``dilation`` spreads the taps; the input is zero-padded so the output has
    the input's size. A mask-A convolution is one that reads the image itself: at the centre it leaves
    out the sub-pixel's own value.
    """

    def __init__(self, in_features: int, out_features: int, kernel: int | tuple[int, int],
                 mask_type: str, channels: int, center: tuple[int, int] | None = None, bias: bool = True,
                 dilation: int = 1):
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        super().__init__(in_features, out_features, kernel, bias=bias, dilation=dilation)
        self.mask_type = mask_type
        self.center = center or (kernel[0] // 2, kernel[1] // 2)
        (ci, cj), d = self.center, dilation
        self.pad = (cj * d, (kernel[1] - 1 - cj) * d, ci * d, (kernel[0] - 1 - ci) * d)  # F.pad's order
        self.register_buffer("mask", causal_mask(out_features, in_features, kernel, self.center,
                                                 mask_type, channels), persistent=False)

    def forward(self, x: torch.Tensor, state: DecodingState | None = None) -> torch.Tensor:
        """``(B, F_in, H, W) -> (B, F_out, H, W)``; with a decoding ``state``, ``x`` is the input at the
        state's pixel, ``(B, F_in, 1, 1)``, and the result the output there (``ConvCache``)."""
        if state is not None and self.kernel_size != (1, 1):
            return state.cache(self, lambda: ConvCache(self, state)).step(x)
        x = F.pad(x, self.pad) if any(self.pad) else x  # a 1x1 kernel needs no padding (and no copy)
        return F.conv2d(x, self.weight * self.mask, self.bias, dilation=self.dilation)


class ConvCache:
    """The padded input map of one masked convolution while decoding, filled in one pixel at a time:
    ``step`` writes the input at the state's pixel ``(i, j)`` and applies the kernel there, one window
    instead of a whole map. A mask-A convolution reads the image, so its map is an image map of the
    state, which the model completes pixel by pixel."""

    def __init__(self, conv: MaskedConv2d, state: DecodingState):
        left, right, top, bottom = conv.pad
        self.map = state.padded(conv.in_channels, conv.pad, image=conv.mask_type == "A")
        self.state, self.top, self.left = state, top, left
        self.window = (top + bottom + 1, left + right + 1)
        self.weight = (conv.weight * conv.mask).detach().to(state.dtype)
        self.bias = None if conv.bias is None else conv.bias.detach().to(state.dtype)
        self.dilation = conv.dilation

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``(B, F_in, 1, 1)`` at ``(i, j)`` -> output ``(B, F_out, 1, 1)`` at ``(i, j)``."""
        i, j = self.state.i, self.state.j
        self.map[:, :, i + self.top, j + self.left] = x[:, :, 0, 0]
        window = self.map[:, :, i : i + self.window[0], j : j + self.window[1]]
        return F.conv2d(window, self.weight, self.bias, dilation=self.dilation)
