"""Image completion: which sub-pixels to keep, and sampling the rest.

A mask is a bool tensor ``(C, H, W)``, True where the input's sub-pixel is kept. Kept
sub-pixels that come before every generated one in the model's generation order are
conditioned on exactly; a kept sub-pixel that comes after a generated one is kept by clamping
(the sub-pixels generated before it did not see it).
"""

from __future__ import annotations

import torch

from .models import AutoregressiveModel
from .models.layout import to_image, to_sequence
from .sampling import sample


def keep_rows(shape: tuple[int, int, int], rows: int) -> torch.Tensor:
    """Mask ``(C, H, W)`` keeping the top ``rows`` rows."""
    C, H, W = shape
    if not 0 <= rows <= H:
        raise ValueError(f"keep {rows} rows of a {H}-row image: choose 0..{H}")
    mask = torch.zeros(C, H, W, dtype=torch.bool)
    mask[:, :rows] = True
    return mask


def keep_fraction(model: AutoregressiveModel, shape: tuple[int, int, int], fraction: float) -> torch.Tensor:
    """Mask ``(C, H, W)`` keeping the first ``fraction`` of the sub-pixels in ``model``'s generation
    order (the top of the image for raster models; whole blocks for the 2D-local transformer)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"keep fraction {fraction} must be between 0 and 1")
    C, H, W = shape
    order = model.generation_order(C, H, W)
    flat = torch.zeros(H * W * C, dtype=torch.bool)
    flat[order[: round(fraction * len(order))]] = True
    return to_image(flat[None], C, H, W)[0].contiguous()


def clamped(model: AutoregressiveModel, mask: torch.Tensor) -> int:
    """How many kept sub-pixels of ``mask (C, H, W)`` come after a generated one in generation
    order, i.e. are kept by clamping rather than conditioned on."""
    C, H, W = mask.shape
    in_order = to_sequence(mask[None])[0][model.generation_order(C, H, W)]
    generated_before = torch.cumsum(~in_order, 0) > 0
    return int((in_order & generated_before).sum())


def complete(model: AutoregressiveModel, image: torch.Tensor, mask: torch.Tensor, num: int, *,
             temperature: float = 1.0, seed: int | None = None, cond: torch.Tensor | None = None,
             progress=None) -> torch.Tensor:
    """``num`` completions of ``image (C, H, W)`` (values in ``[0, K)``) keeping ``mask (C, H, W)``:
    uint8 ``(num, C, H, W)`` whose kept sub-pixels equal the image's. ``cond``: ``num`` rows."""
    device = next(model.parameters()).device
    known = image.to(device).long().expand(num, -1, -1, -1)
    return sample(model, num, temperature=temperature, seed=seed, cond=cond, known=known,
                  known_mask=mask.to(device).expand(num, -1, -1, -1), progress=progress)
