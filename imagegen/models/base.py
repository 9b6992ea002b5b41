"""What every model shares: the generation order and the reference (re-run) decoder.

A model maps images ``(B, C, H, W)`` of integers in ``[0, K)`` (and an optional ``cond``) to
logits ``(B, C, H, W, K)``. Sub-pixel ``(i, j, c)`` has the flat index ``(i * W + j) * C + c``;
``generation_order`` lists flat indices in the order they are generated, and the logits of
each sub-pixel depend only on the sub-pixels before it in that order (and on ``cond``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class Decoder(Protocol):
    """Incremental decoding: ask for the next sub-pixel's logits, then commit its value."""

    order: torch.Tensor  # (C*H*W,) flat indices in generation order
    step: int  # how many sub-pixels have been pushed

    def next_logits(self) -> torch.Tensor:
        """``(B, K)`` logits of sub-pixel ``order[step]``."""
        ...

    def push(self, values: torch.Tensor) -> None:
        """Commit the values ``(B,)`` of sub-pixel ``order[step]`` and advance."""
        ...


def raster_order(channels: int, height: int, width: int) -> torch.Tensor:
    """Raster over pixels, colour channels within a pixel: ``arange(C*H*W)``."""
    return torch.arange(channels * height * width)


def check_ints(minimum: int, **values: object) -> None:
    """Raise ValueError unless every value is an integer >= ``minimum`` (the hparams that count
    features, layers, heads or classes); ``None`` values are skipped (optional, left at the default)."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_kernels(**sizes: object) -> None:
    """Raise ValueError unless every value is an odd integer >= 1: a masked kernel is centred on
    the pixel it computes, so it needs a middle."""
    check_ints(1, **sizes)
    for name, value in sizes.items():
        if value % 2 == 0:
            raise ValueError(f"{name} must be odd (the kernel is centred on its pixel), got {value}")


def scale_levels(x: torch.Tensor, levels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integers in ``[0, levels)`` -> floats in ``[-1, 1]`` of ``dtype`` (same shape)."""
    return (x.float() * (2.0 / (levels - 1)) - 1.0).to(dtype)


class AutoregressiveModel(nn.Module):
    """Base of every model: shape bookkeeping, generation order and decoders.

    Subclasses implement ``forward(x, cond=None) -> (B, C, H, W, K)`` and may override
    ``decoder`` with a cached one that matches ``reference_decoder`` at every step.
    """

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None):
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        if not isinstance(size, tuple | list) or len(size) != 2:
            raise ValueError(f"image_size must be an integer or [height, width], got {image_size!r}")
        check_ints(1, channels=channels, levels=levels, num_classes=num_classes, height=size[0],
                   width=size[1])
        if not 2 <= levels <= 256:
            raise ValueError(f"levels must be between 2 and 256 (8-bit images), got {levels}")
        self.channels = channels
        self.image_size = tuple(size)
        self.levels = levels
        self.num_classes = num_classes
        self.config: dict = {}  # filled by build_model: the keyword arguments that rebuild this model

    #: Super-resolution models set this: their ``cond`` is the image area-downsampled by it.
    upscale_factor: int | None = None

    def condition(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """The ``cond`` this model takes for ``images (B, C, H, W)``: the low-resolution image
        ``(B, C, H/f, W/f)`` for a super-resolution model, the ``labels (B,)`` for a
        class-conditional one, else None. Training and evaluation make ``cond`` only here."""
        if self.upscale_factor:
            from ..data.pairs import area_downsample

            return area_downsample(images, self.upscale_factor)
        if self.num_classes:
            if labels is None:
                raise ValueError("this model is class-conditional: it needs a label per image")
            return labels
        return None

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images in ``[0, K)`` -> floats in ``[-1, 1]`` (same shape), in the parameters'
        dtype (float32, or bfloat16 for a model cast to it for sampling)."""
        return scale_levels(x, self.levels, next(self.parameters()).dtype)

    def generation_order(self, channels: int, height: int, width: int) -> torch.Tensor:
        """Flat sub-pixel indices ``(C*H*W,)`` in generation order (default: raster, then R, G, B)."""
        return raster_order(channels, height, width)

    def decoder(self, batch_size: int, shape: tuple[int, int, int] | None = None,
                cond: torch.Tensor | None = None) -> Decoder:
        """The fastest exact decoder of this model (the reference one unless a family caches)."""
        return self.reference_decoder(batch_size, shape, cond)

    def reference_decoder(self, batch_size: int, shape: tuple[int, int, int] | None = None,
                          cond: torch.Tensor | None = None) -> Decoder:
        """A decoder that re-runs ``forward`` on the whole canvas at every step."""
        return ReferenceDecoder(self, batch_size, shape or (self.channels, *self.image_size), cond)


class ReferenceDecoder:
    """Decodes by running the full model on the canvas for every sub-pixel: slow but plainly right."""

    def __init__(self, model: AutoregressiveModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        C, H, W = shape
        device = next(model.parameters()).device
        self.model, self.cond = model, cond
        self.canvas = torch.zeros(batch_size, H, W, C, dtype=torch.long, device=device)
        self.order = model.generation_order(C, H, W).to(device)
        self.step = 0

    def next_logits(self) -> torch.Tensor:
        logits = self.model(self.canvas.permute(0, 3, 1, 2), self.cond)  # (B, C, H, W, K)
        flat = logits.permute(0, 2, 3, 1, 4).flatten(1, 3)  # (B, H*W*C, K)
        return flat[:, self.order[self.step]]

    def push(self, values: torch.Tensor) -> None:
        self.canvas.view(self.canvas.shape[0], -1)[:, self.order[self.step]] = values
        self.step += 1
