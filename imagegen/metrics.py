"""Bits per dimension: the one definition used by training, ``imagegen eval`` and ``scripts/``.

Bits/dim is the mean over every sub-pixel of the categorical head's negative log-likelihood,
in bits: ``sum(-log2 p(x_i | x_<i)) / (N * C * H * W)``, computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torchmetrics

from .models import AutoregressiveModel
from .models.head import nll


class BitsPerDim(torchmetrics.Metric):
    """Accumulates summed NLL (bits) and sub-pixel count; ``compute()`` gives bits/dim, summed
    over processes when running distributed."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("bits", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, x: torch.Tensor) -> None:
        """Add logits ``(B, C, H, W, K)`` of images ``x (B, C, H, W)``."""
        self.bits += nll(logits, x).double().sum() / math.log(2)
        self.count += x.numel()

    def compute(self) -> torch.Tensor:
        return self.bits / self.count


@torch.inference_mode()
def bits_per_dim(model: AutoregressiveModel, images: torch.Tensor, cond: torch.Tensor | None = None,
                 batch_size: int = 100, progress: Iterable | None = None) -> float:
    """Exact bits/dim of ``images (N, C, H, W)`` (with ``cond``, batch-first) under ``model``.

    Runs in eval mode, in the model's own dtype; the NLL itself is always float32.
    ``progress``, if given, wraps the batch range (e.g. ``tqdm``).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    metric = BitsPerDim().to(device)
    starts = range(0, len(images), batch_size)
    for s in progress(starts) if progress else starts:
        x = images[s : s + batch_size].to(device)
        c = None if cond is None else cond[s : s + batch_size].to(device)
        metric.update(model(x, c), x)
    model.train(was_training)
    return float(metric.compute())
