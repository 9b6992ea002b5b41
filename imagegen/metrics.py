"""Bits per dimension, the one definition used by training, ``imagegen eval`` and ``scripts/``;
and the super-resolution sample metrics (PSNR, SSIM, consistency with the input).

Bits/dim is the mean over every sub-pixel of the categorical head's negative log-likelihood,
in bits: ``sum(-log2 p(x_i | x_<i)) / (N * C * H * W)``, computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from .errors import NonFiniteError
from .imageio import to_uint8
from .models import AutoregressiveModel
from .models.head import nll
from .sampling import sample


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
                 batch_size: int = 100, progress: Iterable | None = None,
                 shard: tuple[int, int] = (0, 1)) -> float:
    """Exact bits/dim of ``images (N, C, H, W)`` (with ``cond``, batch-first) under ``model``.

    The model runs in eval mode, in float32 (a model in another dtype raises ValueError: load it in
    float32), with autocast off; the NLL is accumulated in float64. No images, or values outside
    ``[0, model.levels)``, raise ValueError; a NaN or infinite result (non-finite logits) raises
    ``NonFiniteError``. ``shard=(rank, world)`` makes
    each process evaluate every ``world``-th batch and the result is summed over processes.
    ``progress``, if given, wraps the batch range (e.g. ``tqdm``).
    """
    if len(images) == 0:
        raise ValueError("bits/dim of no images is undefined: pass at least one image")
    low, high = int(images.min()), int(images.max())
    if low < 0 or high >= model.levels:
        raise ValueError(f"image values must lie in [0, {model.levels}) for this {model.levels}-level model, "
                         f"got {low}..{high}")
    params = list(model.parameters())
    if any(p.dtype != torch.float32 for p in params):
        raise ValueError("bits/dim is measured in float32: load the model with dtype=torch.float32")
    was_training = model.training
    model.eval()
    device = params[0].device
    metric = BitsPerDim().to(device)
    rank, world = shard
    starts = range(rank * batch_size, len(images), world * batch_size)
    with torch.autocast(device.type, enabled=False):
        for s in progress(starts) if progress else starts:
            x = images[s : s + batch_size].to(device).long()
            c = None if cond is None else cond[s : s + batch_size].to(device)
            metric.update(model(x, c), x)
    model.train(was_training)
    bpd = float(metric.compute())
    if not math.isfinite(bpd):
        raise NonFiniteError(f"bits/dim came out {bpd}: the model gives non-finite logits (NaN or inf); its "
                             "weights are broken (a diverged run?) or overflow")
    return bpd


class Consistency(torchmetrics.Metric):
    """How well samples agree with the low-resolution input: the mean absolute difference, in
    grey levels, between each sample's ``factor x factor`` block means and the input pixels."""

    full_state_update = False

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: torch.Tensor, low: torch.Tensor) -> None:
        """Add samples ``(B, C, H, W)`` and their low-resolution inputs ``(B, C, H/f, W/f)``."""
        means = F.avg_pool2d(samples.double(), self.factor)
        self.total += (means - low.double()).abs().sum()
        self.count += low.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


@torch.inference_mode()
def superres_metrics(model: AutoregressiveModel, images: torch.Tensor, *, temperature: float = 1.0,
                     seed: int = 0, batch_size: int = 100, progress: Iterable | None = None
                     ) -> dict[str, float]:
    """Sample one upscaling of each ``images (N, C, H, W)`` from its area-downsampled version and
    score it against the original: PSNR (dB) and SSIM on 0..255 grey levels, and consistency (grey
    levels). Returns ``{"psnr", "ssim", "consistency"}``."""
    device = next(model.parameters()).device
    psnr = PeakSignalNoiseRatio(data_range=255.0, dim=(1, 2, 3)).to(device)  # mean over images
    ssim = StructuralSimilarityIndexMeasure(data_range=255.0).to(device)
    consistency = Consistency(model.upscale_factor).to(device)
    starts = range(0, len(images), batch_size)
    for k, s in enumerate(progress(starts) if progress else starts):
        truth = images[s : s + batch_size].to(device)
        low = model.condition(truth)
        drawn = sample(model, len(truth), temperature=temperature, seed=(seed + k) % 2**64, cond=low)
        fake, real = to_uint8(drawn, model.levels).float(), to_uint8(truth, model.levels).float()
        psnr.update(fake, real)
        ssim.update(fake, real)
        consistency.update(fake, to_uint8(low, model.levels))
    return {"psnr": float(psnr.compute()), "ssim": float(ssim.compute()),
            "consistency": float(consistency.compute())}
