"""Receptive fields: how strongly the log-likelihood of one sub-pixel depends on every input
sub-pixel, ``|d log p(x_p | x_<p) / d x|``, averaged over a few images.

Inputs are integers, so the gradient is taken with respect to their one-hot vectors, fed through
a differentiable copy of the model's input: ``values = sum_k k * onehot_k`` for models that rescale
the integers, or the ``input_embedding``'s ``from_onehot`` for models that look them up in a table
(the transformers). A sub-pixel's sensitivity is the gradient's absolute value summed over the K
entries. Causality makes it exactly zero at the sub-pixel itself and everything after it in
generation order.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import AutoregressiveModel
from .common import Shape, SubPixel, evaluating, flat_index, ranks, to_image


def onehot_logits(model: AutoregressiveModel, onehot: torch.Tensor, cond: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """``model``'s logits ``(B, C, H, W, K)`` of the images whose one-hot vectors are ``onehot
    (B, C, H, W, K)`` (float), differentiable with respect to ``onehot``."""
    x = onehot.argmax(-1)
    embedding = getattr(model, "input_embedding", None)
    if embedding is not None and hasattr(embedding, "from_onehot"):
        # A table lookup cannot take floats: swap its output for the same map of the one-hot vectors.
        hook = embedding.register_forward_hook(lambda module, args, out: module.from_onehot(onehot))
        try:
            return model(x, cond)
        finally:
            hook.remove()
    levels = torch.arange(onehot.shape[-1], dtype=onehot.dtype, device=onehot.device)
    return model((onehot * levels).sum(-1), cond)  # equals x; scale() takes float images


def receptive_field(model: AutoregressiveModel, images: torch.Tensor, pixel: SubPixel,
                    cond: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over ``images (N, C, H, W)`` of ``sum_k |d log p(x_p | x_<p) / d onehot(x)[..., k]|`` for
    the sub-pixel ``pixel = (channel, row, col)``: float ``(C, H, W)``. ``cond``: ``N`` rows."""
    N, C, H, W = images.shape
    flat_index((C, H, W), pixel)  # checks that it lies inside
    device = next(model.parameters()).device
    x = images.to(device).long()
    onehot = F.one_hot(x, model.levels).float().requires_grad_(True)
    with evaluating(model), torch.autocast(device.type, enabled=False):
        logits = onehot_logits(model, onehot, cond)
    c, i, j = pixel
    log_p = logits[:, c, i, j].float().log_softmax(-1).gather(-1, x[:, c, i, j, None])
    (grad,) = torch.autograd.grad(log_p.sum(), onehot)
    return grad.abs().sum(-1).mean(0).cpu()


def future(model: AutoregressiveModel, shape: Shape, pixel: SubPixel) -> torch.Tensor:
    """``(C, H, W)`` bool: the sub-pixel ``pixel`` and every one after it in ``model``'s generation order."""
    rank = ranks(model, shape)
    return to_image(rank >= rank[flat_index(shape, pixel)], shape)


def plot_receptive_field(field: torch.Tensor, later: torch.Tensor, pixel: SubPixel, path: str | Path,
                         title: str, source: str) -> Path:
    """The picture: ``field (C, H, W)`` of sub-pixel ``pixel`` relative to its maximum on a log colour
    scale (one panel per channel), exactly zero in white, ``later (C, H, W)`` (the sub-pixel and its
    future) hatched; ``source`` says what it is averaged over."""
    from matplotlib.colors import LogNorm

    from . import plotting

    plt = plotting.pyplot()
    C = field.shape[0]
    relative = field / field.max().clamp_min(torch.finfo(field.dtype).tiny)
    fig, axes = plt.subplots(1, C, figsize=(4.4 * C + 1.6, 4.4), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    for c in range(C):
        ax = axes[0, c]
        shown = relative[c].numpy().copy()
        shown[shown == 0] = float("nan")  # exactly zero: white
        im = ax.imshow(shown, cmap=cmap, norm=LogNorm(1e-4, 1), interpolation="nearest")
        plotting.hatch(ax, later[c], "this sub-pixel and its future")
        plotting.mark(ax, pixel[1:], "the sub-pixel")
        plotting.pixel_axes(ax, "input sub-pixels" + plotting.channel_name(c, C))
    fig.colorbar(im, ax=axes, shrink=0.85, extend="min",
                 label="|∂ log p / ∂ input|, relative (white: exactly 0)")
    plotting.legend(fig, axes[0, 0])
    fig.suptitle(f"{title}\nmean over {source}")
    return plotting.save_figure(fig, path)
