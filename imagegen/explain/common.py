"""What every map needs: naming a sub-pixel, generation-order ranks, and eval mode for a while."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..models import AutoregressiveModel

Shape = tuple[int, int, int]  # (C, H, W)
SubPixel = tuple[int, int, int]  # (channel, row, col)


def flat_index(shape: Shape, pixel: SubPixel) -> int:
    """The flat index ``(row * W + col) * C + channel`` of ``pixel`` in a ``(C, H, W)`` image;
    ValueError, saying the valid ranges, if it lies outside."""
    C, H, W = shape
    c, i, j = pixel
    if not (0 <= i < H and 0 <= j < W and 0 <= c < C):
        raise ValueError(f"pixel row {i}, column {j}, channel {c} is outside the {H}x{W} image with {C} "
                         f"channel(s): rows 0..{H - 1}, columns 0..{W - 1}, channels 0..{C - 1}")
    return (i * W + j) * C + c


def to_image(flat: torch.Tensor, shape: Shape) -> torch.Tensor:
    """``(..., C*H*W)`` in flat sub-pixel order -> ``(..., C, H, W)``."""
    C, H, W = shape
    return flat.reshape(*flat.shape[:-1], H, W, C).movedim(-1, -3)


def ranks(model: AutoregressiveModel, shape: Shape) -> torch.Tensor:
    """``(C*H*W,)``: the step at which each flat sub-pixel is generated (the inverse of
    ``model.generation_order``)."""
    order = model.generation_order(*shape)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank


@contextlib.contextmanager
def evaluating(model: AutoregressiveModel) -> Iterator[AutoregressiveModel]:
    """``model`` in eval mode (no dropout) inside the block; its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
