"""What every model shares: shape bookkeeping, its config, the generation order and its decoders.

A model maps images ``(B, C, H, W)`` of integers in ``[0, K)`` (and an optional ``cond``) to
logits ``(B, C, H, W, K)``. Sub-pixel ``(i, j, c)`` has the flat index ``(i * W + j) * C + c``
(``layout.py``); ``generation_order`` lists flat indices in the order they are generated, and the
logits of each sub-pixel depend only on the sub-pixels before it in that order (and on ``cond``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .decoding import CachedDecoder, Decoder, DecodingState, ReferenceDecoder
from .layout import subpixels


def check_ints(minimum: int, **values: object) -> None:
    """Raise ValueError unless every value is an integer >= ``minimum`` (the hparams that count
    features, layers, heads or classes); ``None`` values are skipped (optional, left at the default)."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_groups(hidden: int, channels: int) -> None:
    """Raise ValueError unless ``hidden`` features split into ``channels`` equal colour groups (as the
    gated units' halves need)."""
    if hidden % channels:
        raise ValueError(f"hidden={hidden} must be a multiple of channels={channels}")


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
    """Base of every model: shape bookkeeping, its config, generation order and decoders.

    A subclass implements ``forward(x, cond=None) -> (B, C, H, W, K)``, sets ``name`` (its registry
    name) and, for cached decoding, ``decoder_class = CachedDecoder`` and ``step`` (see decoding.py).
    Its constructor takes keyword arguments: the image ones of this one (``channels``, ``image_size``,
    ``levels``, ``num_classes``) and its own hparams, and the model records them all (``config``).
    """

    #: The registry name: ``build_model(model.config["name"], ...)`` builds this class.
    name: str | None = None
    #: Super-resolution models set this: their ``cond`` is the image area-downsampled by it.
    upscale_factor: int | None = None
    #: The decoder ``decoder()`` returns.
    decoder_class: type[Decoder] = ReferenceDecoder

    def __new__(cls, *args, **kwargs):
        model = super().__new__(cls)
        model.__dict__["_kwargs"] = kwargs  # the keyword arguments it is built with, for ``config``
        return model

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, **unknown):
        if unknown:  # a subclass passes on what its own hparams leave: name the class, not this one
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument "
                            f"{next(iter(unknown))!r}")
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

    @property
    def config(self) -> dict:
        """The keyword arguments of ``build_model`` that rebuild this model: its ``name``, the image
        arguments and every hparam it was built with (JSON-ready)."""
        image = dict(channels=self.channels, image_size=list(self.image_size), levels=self.levels,
                     num_classes=self.num_classes)
        return {"name": self.name, **image, **{k: v for k, v in self._kwargs.items() if k not in image}}

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images this model was built for."""
        return (self.channels, *self.image_size)

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
        return torch.arange(channels * height * width)

    def decoder(self, batch_size: int, shape: tuple[int, int, int] | None = None,
                cond: torch.Tensor | None = None) -> Decoder:
        """The fastest exact decoder of this model for ``batch_size`` images of ``shape`` (default
        ``self.shape``): ``decoder_class``, the reference one unless the family caches."""
        return self.decoder_class(self, batch_size, shape or self.shape, cond)

    def reference_decoder(self, batch_size: int, shape: tuple[int, int, int] | None = None,
                          cond: torch.Tensor | None = None) -> Decoder:
        """A decoder that re-runs ``forward`` on the whole canvas at every step."""
        return ReferenceDecoder(self, batch_size, shape or self.shape, cond)


class RasterModel(AutoregressiveModel, ABC):
    """A model whose layers compute the features of a pixel's sub-pixels together, from the sub-pixels
    before the pixel and that pixel's earlier colours (masked convolutions, recurrent layers), in
    raster order. A subclass implements ``features``; ``forward`` and ``step`` come from it."""

    decoder_class = CachedDecoder

    @abstractmethod
    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                 state: DecodingState | None = None) -> torch.Tensor:
        """Scaled images ``(B, C, H, W)`` -> grouped features ``(B, C*F, H, W)`` for the shared head
        (colour group ``c`` of ``F`` features per sub-pixel, see ``masked.py``); with a decoding
        ``state``, pixel ``(state.i, state.j)`` alone, ``(B, C, 1, 1)`` in and ``(B, C*F, 1, 1)`` out."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, K)`` -> logits ``(B, C, H, W, K)``."""
        return self.head(subpixels(self.features(self.scale(x), cond), self.channels))

    def step(self, canvas: torch.Tensor, cond: torch.Tensor | None, state: DecodingState) -> torch.Tensor:
        """Cached decoding: the logits ``(B, K)`` of sub-pixel ``state.t`` (raster order) from the canvas
        ``(B, C*H*W)``: ``features`` of its pixel, from the sub-pixels of that pixel pushed so far (the
        rest blank) and the layers' caches. Every layer's output at a pixel depends only on the sub-pixels
        before the pixel's last colour (mask A, then mask B), so what the last colour's step leaves in the
        caches is final; only the image maps need the completed pixel, written at the next pixel."""
        C, _, W = state.shape
        pixel, c = divmod(state.t, C)
        if c == 0 and pixel:
            state.write_pixel(self.scale(canvas[:, (pixel - 1) * C : pixel * C]))
        state.i, state.j = divmod(pixel, W)
        state.new_row = state.j == 0 and c == 0
        out = self.features(self.scale(canvas[:, pixel * C : (pixel + 1) * C])[:, :, None, None], cond, state)
        return self.head.at(out.view(len(out), C, -1)[:, c], c)
