"""PixelCNN with dilations (``dilated_pixelcnn``): gated residual blocks whose masked kernels are dilated
1, 2, 4, ... (the cycle restarting every ``dilation_cycle`` blocks), so the receptive field grows
exponentially with depth instead of linearly, as the dilated causal convolutions of WaveNet (van den
Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio", section 2.1) do for audio.

The family is written from shared pieces only (docs/adding_a_model.md): a dilated ``MaskedConv2d`` is
causal like any other (the taps of its kernel, spread out), and each layer decodes with its own cache, so
``RasterModel`` gives it a cached decoder and tests/test_families.py its causality and cached-decoding
tests. Like the masked PixelCNN, it has a blind spot above and to the right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import RasterModel, check_groups, check_ints, check_kernels
from .decoding import DecodingState
from .head import CategoricalHead
from .masked import MaskedConv2d
from .pixelcnn import gate


class DilatedBlock(nn.Module):
    """``x + 1x1_B(tanh(a) * sigmoid(b))`` with ``[a, b]`` a dilated masked ``k x k`` convolution of
    ``x`` plus a class bias: ``(B, hidden, H, W)`` in and out (one pixel with a decoding state)."""

    def __init__(self, hidden: int, kernel_size: int, dilation: int, channels: int):
        super().__init__()
        self.channels = channels
        self.conv = MaskedConv2d(hidden, 2 * hidden, kernel_size, "B", channels, dilation=dilation)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | float = 0.0,
                state: DecodingState | None = None) -> torch.Tensor:
        return x + self.out(gate(self.conv(x, state) + bias, self.channels))


class DilatedPixelCNN(RasterModel):
    """PixelCNN with dilations. ``hidden``: the blocks' width (a multiple of C); block ``k`` dilates its
    ``kernel_size`` kernel by ``2 ** (k % dilation_cycle)``; ``out_hidden``: the per-colour width of the
    output layer."""

    name = "dilated_pixelcnn"

    def __init__(self, *, hidden: int = 12, num_layers: int = 4, kernel_size: int = 3,
                 first_kernel_size: int = 7, dilation_cycle: int = 3, out_hidden: int = 16, **image):
        super().__init__(**image)
        C = self.channels
        check_ints(1, hidden=hidden, num_layers=num_layers, dilation_cycle=dilation_cycle,
                   out_hidden=out_hidden)
        check_groups(hidden, C)
        check_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        self.conv_in = MaskedConv2d(C, hidden, first_kernel_size, "A", C)
        self.label = nn.Embedding(self.num_classes, num_layers * 2 * hidden) if self.num_classes else None
        self.blocks = nn.ModuleList(DilatedBlock(hidden, kernel_size, 2 ** (k % dilation_cycle), C)
                                    for k in range(num_layers))
        self.out = MaskedConv2d(hidden, C * out_hidden, 1, "B", C)
        self.head = CategoricalHead(out_hidden, C, self.levels)

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                 state: DecodingState | None = None) -> torch.Tensor:
        """Scaled images ``(B, C, H, W)`` -> output features ``(B, C*out_hidden, H, W)``; with a decoding
        ``state``, one pixel (``RasterModel``)."""
        biases = [0.0] * len(self.blocks) if self.label is None else \
            self.label(cond)[:, :, None, None].chunk(len(self.blocks), 1)
        out = self.conv_in(x, state)
        for block, bias in zip(self.blocks, biases, strict=True):
            out = block(out, bias, state)
        return F.relu(self.out(F.relu(out)))
