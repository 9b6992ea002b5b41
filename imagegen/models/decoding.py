"""Incremental decoding: the reference decoder every model has, and the cached ones built from layer steps.

A ``Decoder`` serves the sampler: ``next_logits()`` for sub-pixel ``order[step]``, then ``push`` its
value. ``ReferenceDecoder`` re-runs ``forward`` on the whole canvas at every step: slow, plainly right.

A cached decoder computes one position per step. Each layer owns that computation: called with a
``DecodingState`` it computes its output at the state's position only, from a cache it makes on its
first step (``DecodingState.cache``), as ``MaskedConv2d.forward(x, state)`` does. So a family's cached
decoder is its own forward pass with the state passed down: ``RasterDecoder`` runs
``RasterModel.features(x, cond, state)`` one pixel at a time (the PixelCNNs and PixelRNNs), and the
transformer's decoder (``transformer.py``) runs its blocks at one sequence position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch

from .layout import to_image, to_sequence

if TYPE_CHECKING:
    from .base import AutoregressiveModel, RasterModel

T = TypeVar("T")


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


class ReferenceDecoder:
    """Decodes by running the full model on the canvas for every sub-pixel: slow but plainly right."""

    def __init__(self, model: AutoregressiveModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        device = next(model.parameters()).device
        self.model, self.cond, self.shape = model, cond, shape
        self.canvas = torch.zeros(batch_size, shape[0] * shape[1] * shape[2], dtype=torch.long, device=device)
        self.order = model.generation_order(*shape).to(device)
        self.step = 0

    def next_logits(self) -> torch.Tensor:
        logits = self.model(to_image(self.canvas, *self.shape), self.cond)  # (B, C, H, W, K)
        return to_sequence(logits)[:, self.order[self.step]]

    def push(self, values: torch.Tensor) -> None:
        self.canvas[:, self.order[self.step]] = values
        self.step += 1


class DecodingState:
    """What the layers of one cached decoder share.

    ``t`` is the step (sub-pixel ``order[t]`` is next); a raster decoder also sets ``(i, j)``, the pixel of
    that sub-pixel. Caches are made for ``batch_size`` images of ``shape = (C, H, W)`` on ``device`` in
    ``dtype`` (``zeros``). ``cache(owner, make)`` holds each layer's cache. ``image(pad)`` gives a layer
    that reads the image a padded map of it, which the decoder fills in pixel by pixel (``write_pixel``).
    """

    def __init__(self, batch_size: int, shape: tuple[int, int, int], device: torch.device,
                 dtype: torch.dtype):
        self.batch_size, self.shape, self.device, self.dtype = batch_size, shape, device, dtype
        self.t = self.i = self.j = 0
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

    def image(self, pad: tuple[int, int, int, int]) -> torch.Tensor:
        """A zero map ``(B, C, H + top + bottom, W + left + right)`` of the image for ``pad = (left, right,
        top, bottom)`` (``F.pad``'s order), into which ``write_pixel`` copies every completed pixel."""
        left, right, top, bottom = pad
        C, H, W = self.shape
        image = self.zeros(self.batch_size, C, H + top + bottom, W + left + right)
        self._images.append((image, top, left))
        return image

    def write_pixel(self, pixel: torch.Tensor) -> None:
        """Copy the completed pixel ``(B, C)`` at ``(i, j)`` into every ``image`` map."""
        for image, top, left in self._images:
            image[:, :, self.i + top, self.j + left] = pixel


class CachedDecoder(ABC):
    """What the cached decoders share: the generation order, the step, the layers' ``state``, the head."""

    def __init__(self, model: AutoregressiveModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        p = next(model.parameters())
        self.model, self.cond, self.shape = model, cond, shape
        self.order = model.generation_order(*shape).to(p.device)
        self.channel = (self.order % shape[0]).tolist()  # the colour of each step's sub-pixel
        self.state = DecodingState(batch_size, shape, p.device, p.dtype)

    @property
    def step(self) -> int:
        return self.state.t

    @abstractmethod
    def features(self) -> torch.Tensor:
        """The head's input ``(B, F)`` at sub-pixel ``order[step]``."""

    @abstractmethod
    def commit(self, values: torch.Tensor) -> None:
        """Take in the values ``(B,)`` of sub-pixel ``order[step]`` (the step then advances)."""

    def next_logits(self) -> torch.Tensor:
        return self.model.head.at(self.features(), self.channel[self.step])

    def push(self, values: torch.Tensor) -> None:
        self.commit(values)
        self.state.t += 1


class RasterDecoder(CachedDecoder):
    """Cached decoding of a ``RasterModel`` in raster order, R, G, B within a pixel: each step runs
    ``model.features`` at one pixel from the sub-pixels of that pixel known so far (the others blank).

    Every layer's output at a pixel depends only on the sub-pixels before the pixel's last colour (mask
    A, then mask B), so what the last colour's step leaves in the layers' caches is final; only the
    image maps (``DecodingState.image``) need the completed pixel.
    """

    def __init__(self, model: RasterModel, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        super().__init__(model, batch_size, shape, cond)
        self.blank = float(model.scale(torch.zeros((), device=self.state.device)))
        self.pixel = torch.full((batch_size, shape[0]), self.blank, device=self.state.device)

    def features(self) -> torch.Tensor:
        C, _, W = self.shape
        pixel, c = divmod(self.step, C)
        self.state.i, self.state.j = divmod(pixel, W)
        out = self.model.features(self.pixel.to(self.state.dtype)[:, :, None, None], self.cond, self.state)
        return out.view(len(out), C, -1)[:, c]  # (B, C*F, 1, 1) -> colour c's (B, F)

    def commit(self, values: torch.Tensor) -> None:
        c = self.step % self.shape[0]
        self.pixel[:, c] = self.model.scale(values)
        if c == self.shape[0] - 1:
            self.state.write_pixel(self.pixel.to(self.state.dtype))
            self.pixel.fill_(self.blank)
