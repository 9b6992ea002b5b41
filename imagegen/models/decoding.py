"""Incremental decoding: the reference decoder every model has, and the cached one built from layer steps.

A ``Decoder`` serves the sampler: ``next_logits()`` for sub-pixel ``order[step]``, then ``push`` its
value onto the ``canvas``. ``ReferenceDecoder`` re-runs ``forward`` on the whole canvas at every step:
slow, plainly right.

``CachedDecoder`` calls ``model.step(canvas, cond, state)`` instead, which computes one position. Each
layer owns that computation: given the ``DecodingState`` it computes its output at the state's position
only, from a cache it makes on its first step (``DecodingState.cache``), as ``MaskedConv2d.forward(x,
state)`` does. So a family's step is its forward pass with the state passed down (``RasterModel.step``
for the convolutional and recurrent families, ``ImageTransformer.step``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import torch

from .layout import to_image, to_sequence

if TYPE_CHECKING:
    from .base import AutoregressiveModel

T = TypeVar("T")


class Decoder(ABC):
    """Incremental decoding of ``batch_size`` images of ``shape = (C, H, W)``: ``next_logits()`` gives the
    ``(B, K)`` logits of sub-pixel ``order[step]``, ``push(values)`` commits its values ``(B,)`` onto the
    ``canvas`` (``(B, C*H*W)`` long, flat order, zeros where nothing is pushed yet) and advances."""

    def __init__(self, model: AutoregressiveModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        device = next(model.parameters()).device
        self.model, self.cond, self.shape = model, cond, shape
        self.canvas = torch.zeros(batch_size, shape[0] * shape[1] * shape[2], dtype=torch.long, device=device)
        self.order = model.generation_order(*shape).to(device)  # (C*H*W,) flat indices in generation order
        self.positions = self.order.tolist()
        self.step = 0  # how many sub-pixels have been pushed

    @abstractmethod
    def next_logits(self) -> torch.Tensor: ...

    def push(self, values: torch.Tensor) -> None:
        self.canvas[:, self.positions[self.step]] = values
        self.step += 1


class ReferenceDecoder(Decoder):
    """Decodes by running the full model on the canvas for every sub-pixel: slow but plainly right."""

    def next_logits(self) -> torch.Tensor:
        logits = self.model(to_image(self.canvas, *self.shape), self.cond)  # (B, C, H, W, K)
        return to_sequence(logits)[:, self.positions[self.step]]


class CachedDecoder(Decoder):
    """Decodes by ``model.step``: one position per step from the layers' caches in ``state``."""

    def __init__(self, model: AutoregressiveModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        super().__init__(model, batch_size, shape, cond)
        p = next(model.parameters())
        self.state = DecodingState(batch_size, shape, self.positions, p.device, p.dtype)

    def next_logits(self) -> torch.Tensor:
        self.state.t = self.step
        return self.model.step(self.canvas, self.cond, self.state)


class DecodingState:
    """What the layers of one cached decoding share.

    Step ``t`` decodes flat sub-pixel ``order[t]``; a raster model also sets ``(i, j)``, its pixel, and
    ``new_row``, whether the step is the row's first.
    Caches are made for ``batch_size`` images of ``shape = (C, H, W)`` on ``device`` in ``dtype``
    (``zeros``, ``padded``). ``cache(owner, make)`` holds each layer's cache; a layer that reads the image
    gets a padded map of it, which the model fills in pixel by pixel (``write_pixel``).
    """

    def __init__(self, batch_size: int, shape: tuple[int, int, int], order: list[int], device: torch.device,
                 dtype: torch.dtype):
        self.batch_size, self.shape, self.order = batch_size, shape, order
        self.device, self.dtype = device, dtype
        self.t = self.i = self.j = 0
        self.new_row = True
        self._caches: dict = {}
        self._images: list[tuple[torch.Tensor, int, int]] = []

    def zeros(self, *size: int) -> torch.Tensor:
        return torch.zeros(*size, device=self.device, dtype=self.dtype)

    def cache(self, owner: object, make: Callable[[], T]) -> T:
        """``owner``'s cache: ``make()`` on the first call, the same object on every later one."""
        cache = self._caches.get(owner)
        if cache is None:
            cache = self._caches[owner] = make()
        return cache

    def padded(self, features: int, pad: tuple[int, int, int, int], image: bool = False) -> torch.Tensor:
        """A zero map ``(B, features, H + top + bottom, W + left + right)`` for ``pad = (left, right, top,
        bottom)`` (``F.pad``'s order); ``image``: the image's (``features == C``), which ``write_pixel``
        fills in."""
        left, right, top, bottom = pad
        _, H, W = self.shape
        padded = self.zeros(self.batch_size, features, H + top + bottom, W + left + right)
        if image:
            self._images.append((padded, top, left))
        return padded

    def write_pixel(self, pixel: torch.Tensor) -> None:
        """Copy the completed pixel ``(B, C)`` at ``(i, j)`` into every image map."""
        for image, top, left in self._images:
            image[:, :, self.i + top, self.j + left] = pixel
