"""Which sub-pixels surprise a model: ``-log2 p(x_i | x_<i)`` of each sub-pixel of an image.

The map sums to the image's total NLL in bits and its mean is the image's bits/dim, exactly as
``imagegen.metrics.bits_per_dim`` defines it (the categorical head's NLL in float32).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..models import AutoregressiveModel
from ..models.head import nll
from .common import evaluating


@torch.inference_mode()
def nll_map(model: AutoregressiveModel, image: torch.Tensor, cond: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Bits of each sub-pixel of ``image (C, H, W)`` (values in ``[0, K)``) under ``model``, given the
    sub-pixels before it in generation order: float64 ``(C, H, W)``. ``cond``: the model's
    conditioning for this one image, batch-first (``model.condition(image[None], labels)``)."""
    device = next(model.parameters()).device
    x = image[None].to(device).long()
    with evaluating(model), torch.autocast(device.type, enabled=False):
        logits = model(x, cond)
    return (nll(logits, x)[0].double() / math.log(2)).cpu()


def plot_nll(image: torch.Tensor, bits: torch.Tensor, levels: int, path: str | Path, title: str) -> Path:
    """The picture: ``image (C, H, W)`` beside the heat map of ``bits (C, H, W)`` (one panel per
    channel, colour bar in bits), the image's bits/dim in the title. Written to ``path``."""
    from . import plotting

    plt = plotting.pyplot()
    C = image.shape[0]
    fig, axes = plt.subplots(1, 1 + C, figsize=(3.4 * (1 + C) + 1.4, 3.6), squeeze=False,
                             layout="constrained")
    plotting.show_image(axes[0, 0], image, levels, "the image")
    top = float(bits.max())
    for c in range(C):
        ax = axes[0, 1 + c]
        im = ax.imshow(bits[c].numpy(), cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        plotting.pixel_axes(ax, "bits of each sub-pixel" + plotting.channel_name(c, C))
        fig.colorbar(im, ax=ax, shrink=0.85, label="bits: −log₂ p(sub-pixel | all before it)")
    fig.suptitle(f"{title}\n{float(bits.mean()):.4f} bits/dim, {float(bits.sum()):.1f} bits in all")
    return plotting.save_figure(fig, path)
