"""Conditioning inputs: the low-resolution image of a super-resolution model.

(Class labels are a learned bias inside each model's own layers.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import scale_levels


class LowResolutionStack(nn.Module):
    """Location-dependent conditioning ``s = m(y)`` of "Conditional Image Generation with PixelCNN
    Decoders" (section 2.3): the low-resolution image ``y`` is upsampled to the output grid by
    repeating each pixel ``factor x factor`` times and passed through unmasked 3x3 convolutions.

    ``(B, C, h, w)`` integers in ``[0, levels)`` -> ``(B, features, h * factor, w * factor)``.
    """

    def __init__(self, channels: int, levels: int, factor: int, features: int = 32, num_layers: int = 3):
        super().__init__()
        self.levels, self.factor = levels, factor
        self.convs = nn.ModuleList(
            nn.Conv2d(features if depth else channels, features, 3, padding=1) for depth in range(num_layers))

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        s = scale_levels(low, self.levels, self.convs[0].weight.dtype)
        s = F.interpolate(s, scale_factor=self.factor, mode="nearest")
        for depth, conv in enumerate(self.convs):
            s = conv(F.relu(s) if depth else s)
        return s
