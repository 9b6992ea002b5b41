"""Generation as it happens: the canvas every few sub-pixels, as the frames of an animated image.

``watch(model, on_canvas)`` wraps every decoder the model hands out inside the block, so the sampler
(unchanged) drives a decoder that also keeps the values pushed so far and reports them. ``Animation``
holds a grid of images, as ``imagegen.imageio.save_grid`` lays them out, and turns it into a frame
whenever a canvas in it changes: once every image is finished, the last frame is that grid's PNG.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import durable
from ..errors import ImagegenError
from ..imageio import make_grid, to_uint8
from ..models import AutoregressiveModel, Decoder
from ..outputs import check_output_dir
from .common import Shape, to_image

UNSET = -1  # canvas value of a sub-pixel not generated yet
GREY = 128  # how such a sub-pixel is shown
FORMATS = {".gif": "GIF", ".png": "PNG", ".webp": "WEBP"}  # animated PNG and lossless WebP keep colours exact


class Recorder:
    """A decoder that passes every call to ``inner`` and keeps the values pushed on a canvas
    ``(B, C*H*W)`` (``UNSET`` where none yet); after every ``every`` pushes and after the last it calls
    ``on_canvas`` with a copy, ``(B, C, H, W)`` long."""

    def __init__(self, inner: Decoder, batch_size: int, shape: Shape,
                 on_canvas: Callable[[torch.Tensor], None], every: int):
        self.inner, self.order, self.shape = inner, inner.order, shape
        self.on_canvas, self.every = on_canvas, every
        self.canvas = torch.full((batch_size, len(inner.order)), UNSET, dtype=torch.long,
                                 device=inner.order.device)

    @property
    def step(self) -> int:
        return self.inner.step

    def next_logits(self) -> torch.Tensor:
        return self.inner.next_logits()

    def push(self, values: torch.Tensor) -> None:
        self.canvas[:, self.order[self.inner.step]] = values
        self.inner.push(values)
        if self.inner.step % self.every == 0 or self.inner.step == len(self.order):
            self.on_canvas(to_image(self.canvas, self.shape).cpu().clone())


@contextlib.contextmanager
def watch(model: AutoregressiveModel, on_canvas: Callable[[torch.Tensor], None], every: int | None = None
          ) -> Iterator[AutoregressiveModel]:
    """Inside the block, every decoder ``model`` makes (``decoder`` and ``reference_decoder``) is a
    ``Recorder`` calling ``on_canvas(canvas (B, C, H, W))`` every ``every`` sub-pixels (default: one
    image row, ``W * C``) and after the last."""
    saved = {name: vars(model).get(name) for name in ("decoder", "reference_decoder")}

    def recording(make):
        def made(batch_size: int, shape: Shape | None = None, cond: torch.Tensor | None = None) -> Recorder:
            shape = tuple(shape or (model.channels, *model.image_size))
            return Recorder(make(batch_size, shape, cond), batch_size, shape, on_canvas,
                            every or shape[0] * shape[2])
        return made

    for name in saved:
        setattr(model, name, recording(getattr(model, name)))  # an instance attribute hides the method
    try:
        yield model
    finally:
        for name, before in saved.items():
            if before is None:
                delattr(model, name)
            else:
                setattr(model, name, before)


def check_animation_file(path: Path, option: str) -> None:
    """Raise ``ImagegenError`` (naming ``option``) unless an animation can be written at ``path``."""
    if path.suffix.lower() not in FORMATS:
        raise ImagegenError(f"{option} {path}: name the animation {', '.join(FORMATS)} (GIF keeps 256 "
                            "colours; animated PNG and WebP keep every colour)")
    if path.is_dir():
        raise ImagegenError(f"{option} {path} is a directory: give a file name")
    check_output_dir(path.parent, option)


class Animation:
    """A grid of ``rows x cols`` images of ``shape`` being generated and its frames.

    Images are shown grey until set; ``painting`` fills one row's images from a sampler's canvas,
    adding a frame at every report. Frames are the grid ``make_grid`` lays out (``nrow`` images per
    line), enlarged as ``save_grid`` enlarges it.
    """

    def __init__(self, rows: int, cols: int, shape: Shape, levels: int, nrow: int | None = None):
        self.grid = torch.full((rows, cols, *shape), GREY, dtype=torch.uint8)
        self.levels, self.nrow = levels, nrow
        self.frames: list[np.ndarray] = []

    def set(self, row: int, images: torch.Tensor, start: int = 0) -> None:
        """Show ``images (n, C, H, W)`` (values in ``[0, levels)``, ``UNSET`` grey) from column ``start``
        of ``row``."""
        shown = torch.where(images >= 0, to_uint8(images.clamp_min(0), self.levels), GREY)
        self.grid[row, start : start + len(images)] = shown

    def add_frame(self) -> None:
        """Append the grid as it is now."""
        self.frames.append(make_grid(self.grid.flatten(0, 1), nrow=self.nrow).permute(1, 2, 0).numpy())

    def painting(self, model: AutoregressiveModel, row: int, start: int = 0, every: int | None = None):
        """A ``watch`` on ``model`` whose canvases fill ``row`` from column ``start``, a frame each."""

        def on_canvas(canvas: torch.Tensor) -> None:
            self.set(row, canvas, start)
            self.add_frame()

        return watch(model, on_canvas, every)

    def save(self, path: str | Path, frame_ms: int = 60, last_ms: int = 2000) -> Path:
        """Write the frames as an animated GIF, PNG or WebP (by extension), enlarged like ``save_grid``
        (at least 96 pixels per image), looping, the last frame held ``last_ms``. Whole or not at all."""
        path = Path(path)
        zoom = max(1, 96 // self.grid.shape[-1])
        grey = self.grid.shape[2] == 1
        frames = [Image.fromarray(np.repeat(np.repeat(f[:, :, 0] if grey else f, zoom, 0), zoom, 1))
                  for f in self.frames]
        durations = [frame_ms] * (len(frames) - 1) + [last_ms]
        fmt = FORMATS[path.suffix.lower()]
        with durable.atomic_file(path) as tmp:
            frames[0].save(tmp, format=fmt, save_all=True, append_images=frames[1:], duration=durations,
                           loop=0, **({"lossless": True} if fmt == "WEBP" else {}))
        return path
