"""The shared 256-way categorical head: every model turns features into logits here.

A model produces one feature vector per sub-pixel, laid out as ``(B, C, H, W, F)``; the
head maps it to logits ``(B, C, H, W, K)`` with a separate affine map per colour channel.
NLL, bits/dim and tempered sampling of those logits are also defined only here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .decoding import DecodingState, Dense


class CategoricalHead(nn.Module):
    """Per-channel affine map from sub-pixel features to K-way logits.

    Args:
        features: F, the feature size of one sub-pixel.
        channels: C, the number of colour channels (each gets its own weights).
        levels: K, the number of intensity values.
    """

    def __init__(self, features: int, channels: int, levels: int = 256):
        super().__init__()
        self.channels, self.levels = channels, levels
        self.weight = nn.Parameter(torch.empty(channels, features, levels))
        self.bias = nn.Parameter(torch.zeros(channels, levels))
        nn.init.normal_(self.weight, std=features**-0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W, F)`` features -> ``(B, C, H, W, K)`` logits."""
        logits = torch.einsum("bchwf,cfk->bchwk", features, self.weight.to(features.dtype))
        return logits + self.bias.to(features.dtype)[None, :, None, None, :]

    def at(self, features: torch.Tensor, channel: int, state: DecodingState | None = None) -> torch.Tensor:
        """``(B, F)`` features of one sub-pixel of colour ``channel`` -> ``(B, K)`` logits; with a decoding
        ``state``, by the per-channel maps it prepares once (``Dense``)."""
        if state is None:
            return features @ self.weight[channel].to(features.dtype) + self.bias[channel].to(features.dtype)
        maps = state.cache(self, lambda: [Dense(w.T, b, state)
                                          for w, b in zip(self.weight, self.bias, strict=True)])
        return maps[channel](features)


def nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats of each sub-pixel.

    ``logits (..., K)`` and integer targets ``x (...)`` -> float32 ``(...)``. Computed in
    float32 whatever the logits' dtype, so bits/dim is exact under mixed precision.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)


def loss(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean NLL in nats over every sub-pixel: the training loss. Scalar float32."""
    return F.cross_entropy(logits.float().flatten(0, -2), x.long().flatten())


def bits_per_dim(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean NLL in bits per sub-pixel of ``x`` under ``logits (..., K)``. Scalar float32."""
    return loss(logits, x) / math.log(2)


def sample(logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
           uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Draw from softmax(logits / temperature): ``(B, K)`` -> int64 ``(B,)``.

    ``temperature == 0`` takes the argmax. Uses the inverse-CDF on one uniform per row so that
    a seeded generator gives the same draws on every device and decoder; ``uniform``, a ``(B, 1)``
    float32 buffer to draw them into (the sampler's, made once), else a new one.
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = F.softmax(logits.float() if temperature == 1 else logits.float() / temperature, dim=-1)
    if uniform is None:
        u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device)
    else:
        u = torch.rand(uniform.shape, generator=generator, out=uniform)
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)
