"""Incremental decoding: the reference decoder every model has, and the cached one built from layer steps.

A ``Decoder`` serves the sampler: ``next_logits()`` for sub-pixel ``order[step]``, then ``push`` its
value onto the ``canvas``. ``ReferenceDecoder`` re-runs ``forward`` on the whole canvas at every step:
slow, plainly right.

``CachedDecoder`` calls ``model.step(canvas, cond, state)`` instead, which computes one position. Each
layer owns that computation: given the ``DecodingState`` it computes its output at the state's position
only, from a cache it makes on its first step (``DecodingState.cache``), as ``MaskedConv2d.forward(x,
state)`` does. So a family's step is its forward pass with the state passed down (``RasterModel.step``
for the convolutional and recurrent families, ``ImageTransformer.step``).

A step is latency-bound: a few small matrix products per layer, so what a step does besides them (Python,
casts, allocations) is what costs. Caches are made once, in the decoding's dtype; every weight a step
multiplies by is prepared once too, as a ``Dense`` (masked, transposed, cast), in the layout this machine
multiplies fastest at this batch size (``dense_layout``, measured once per process).
"""

from __future__ import annotations

import functools
import time
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
    (``zeros``, ``padded``, ``dense``). ``cache(owner, make)`` holds each layer's cache; a layer that reads
    the image gets a padded map of it, which the model fills in pixel by pixel (``write_pixel``).
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

    def dense(self, owner: object, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Dense:
        """``owner``'s ``Dense`` of ``weight (O, I)`` and ``bias (O,)``, made on the first call."""
        return self.cache(owner, lambda: Dense(weight, bias, self))

    def padded(self, features: int, pad: tuple[int, int, int], image: bool = False) -> torch.Tensor:
        """A zero map ``(B, H + top, W + left + right, features)``, features last so that a pixel and a row
        of a window are contiguous, for ``pad = (left, right, top)`` (``F.pad``'s order; a causal kernel
        reads no row below its centre); ``image``: the image's (``features == C``), which ``write_pixel``
        fills in."""
        left, right, top = pad
        _, H, W = self.shape
        padded = self.zeros(self.batch_size, H + top, W + left + right, features)
        if image:
            self._images.append((padded, top, left))
        return padded

    def write_pixel(self, pixel: torch.Tensor) -> None:
        """Copy the completed pixel ``(B, C)`` at ``(i, j)`` into every image map."""
        for image, top, left in self._images:
            image[:, self.i + top, self.j + left] = pixel


class Dense:
    """A decoding step's affine map ``x (B, I) -> (B, O)``, ``x @ weight.T + bias`` as ``F.linear`` computes
    it (up to float rounding), with the weight cast to the decoding's dtype and laid out once, in the layout
    ``dense_layout`` measured fastest on this machine for this batch size (``batch``, default the state's) and
    dtype. The result may be a
    transposed view (``.T`` of a contiguous ``(O, B)``): reshape, not view, where it matters."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, state: DecodingState,
                 batch: int | None = None):
        out_features, in_features = weight.shape
        weight = weight.detach().to(state.dtype)
        self.bias = None if bias is None else bias.detach().to(state.dtype)
        batch = batch or state.batch_size  # the rows it is measured for (it takes any)
        self.layout = dense_layout(state.device.type, state.dtype, batch, in_features, out_features,
                                   torch.get_num_threads())
        if self.layout == "x@w":  # weight (I, O): the product streams rows of it
            self.weight = weight.T.contiguous()
        else:  # "w@x": weight (O, I), result (O, B) transposed back
            self.weight = weight.contiguous()
            self.bias = None if self.bias is None else self.bias[:, None]

    def __call__(self, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """``base + x @ weight.T``, ``base (B, O)`` (broadcastable) taking the place of the bias (pass one
        that holds it, to fold an addition into the product); ``x (B, I)`` -> ``(B, O)``."""
        if self.layout == "x@w":
            add = self.bias if base is None else base
            return torch.mm(x, self.weight) if add is None else torch.addmm(add, x, self.weight)
        add = self.bias if base is None else base.T if base.dim() == 2 else base[:, None]
        return (torch.mm(self.weight, x.T) if add is None else torch.addmm(add, self.weight, x.T)).T


@functools.cache
def dense_layout(device_type: str, dtype: torch.dtype, batch: int, in_features: int, out_features: int,
                 threads: int | None = None) -> str:
    """The faster way to compute ``x (batch, I) @ W.T`` on this machine: ``"x@w"`` (``W.T`` stored
    contiguous) or ``"w@x"`` (``W @ x.T``, transposed back). Which one wins depends on the CPU, its BLAS,
    the dtype and the shape (small batches of bf16 are the extreme case), so it is timed: a few interleaved
    calls of each, once per process per shape and thread count; ties go to ``"x@w"``. Off the CPU the
    vendor library decides (``"x@w"``)."""
    if device_type != "cpu":
        return "x@w"
    del threads  # part of the cache key only: torch.get_num_threads() at the call
    g = torch.Generator().manual_seed(0)  # never torch's global one: sampling leaves it alone
    x = torch.randn(batch, in_features, generator=g).to(dtype)
    w = torch.randn(out_features, in_features, generator=g).to(dtype)
    candidates = {"x@w": (torch.mm, x, w.T.contiguous()), "w@x": (torch.mm, w, x.T)}
    best = {name: float("inf") for name in candidates}
    reps = max(1, min(20, int(2e6 // (batch * in_features * out_features + 1))))
    for _ in range(5):
        for name, (fn, a, b) in candidates.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn(a, b)
            best[name] = min(best[name], time.perf_counter() - start)
    return "w@x" if best["w@x"] < 0.9 * best["x@w"] else "x@w"
