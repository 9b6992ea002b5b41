"""Conditioning inputs: the low-resolution image of a super-resolution model.

(Class labels are a learned bias inside each model's own layers.)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import scale_levels


class LowResolutionStack(nn.Module):
    """Location-dependent conditioning ``s = m(y)`` of "Conditional Image Generation with PixelCNN
    Decoders" (section 2.3, ``m`` a deconvolutional network), built like the conditioning network of
    Dahl et al. 2017, "Pixel Recursive Super Resolution": residual blocks on the low-resolution grid,
    then a transposed convolution up to the output grid.

    * a 3x3 convolution, then ``num_layers`` residual blocks ``x + conv(ReLU(conv(ReLU(x))))`` of 3x3
      convolutions (He et al. 2016, "Identity Mappings in Deep Residual Networks"), all on the
      ``h x w`` low-resolution grid;
    * global context (Liu et al. 2015, "ParseNet: Looking Wider to See Better", section 3.1): the
      features' mean over the grid, through a linear layer, added at every position, so every
      output position sees every low-resolution pixel whatever the image size;
    * a ``factor x factor`` transposed convolution of stride ``factor``: each of the ``factor**2``
      output pixels above a low-resolution pixel gets its own linear map of that pixel's features.

    ``(B, C, h, w)`` integers in ``[0, levels)`` -> ``(B, features, h * factor, w * factor)``.
    """

    def __init__(self, channels: int, levels: int, factor: int, features: int = 32, num_layers: int = 3):
        super().__init__()
        self.levels = levels
        self.stem = nn.Conv2d(channels, features, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(features, features, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(features, features, 3, padding=1))
            for _ in range(num_layers))
        self.context = nn.Linear(features, features)
        self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(features, features, factor, stride=factor))

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        s = self.stem(scale_levels(low, self.levels, self.stem.weight.dtype))
        for block in self.blocks:
            s = s + block(s)
        s = s + self.context(s.mean((2, 3)))[:, :, None, None]
        return self.up(s)
