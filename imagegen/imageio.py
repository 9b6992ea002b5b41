"""Reading a user's image at a model's size; writing PNGs and image grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import durable
from .data.folder import open_image
from .errors import DataError
from .outputs import image_format


def read_image(path: str | os.PathLike, channels: int, size: tuple[int, int], resize: bool = False,
               what: str = "image") -> torch.Tensor:
    """A PNG/JPEG/... file of any mode as uint8 ``(channels, H, W)`` for ``size = (H, W)``.

    Colour, bit depth and transparency are converted by ``imagegen.data.folder.to_8bit`` (16-bit
    greys scaled, alpha composited onto black). An image of another size is an error unless
    ``resize``: then it is resized to fit (area-averaged down, bicubic up).
    Raises ``DataError`` (one line) for a missing, unreadable or damaged file or a size mismatch.
    """
    path = Path(path)
    H, W = size
    im = open_image(path, what, channels)
    if im.size != (W, H):
        if not resize:
            raise DataError(f"{path} is {im.size[0]}x{im.size[1]} pixels but the model takes {W}x{H}: "
                            f"give a {W}x{H} {what}, or pass --resize to fit it")
        shrink = im.size[0] > W or im.size[1] > H
        im = im.resize((W, H), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    array = np.array(im, dtype=np.uint8)
    return torch.from_numpy(array[None] if channels == 1 else array.transpose(2, 0, 1).copy())


def from_uint8(images: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """uint8 grey levels ``(..., C, H, W)`` in ``[0, 255]`` -> long values in ``[0, levels)``."""
    x = images.long()
    return x if levels == 256 else (x * (levels - 1) + 127) // 255


def to_uint8(images: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Images ``(..., C, H, W)`` with values in ``[0, levels)`` -> uint8 in ``[0, 255]``."""
    x = images.long()
    if levels != 256:
        x = (x * 255 + (levels - 1) // 2) // (levels - 1)
    return x.clamp(0, 255).to(torch.uint8)


def nearest_upsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat each pixel ``factor x factor`` times: ``(N, C, h, w) -> (N, C, h*factor, w*factor)``."""
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0
              ) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` -> one uint8 image ``(C, rows*(H+p)+p, nrow*(W+p)+p)``.

    ``nrow`` is the number of images per row (default: a square-ish grid).
    """
    N, C, H, W = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(N)))
    rows = math.ceil(N / nrow)
    grid = torch.full((C, rows * (H + padding) + padding, nrow * (W + padding) + padding), pad_value,
                      dtype=torch.uint8)
    for k in range(N):
        r, c = divmod(k, nrow)
        y, x = padding + r * (H + padding), padding + c * (W + padding)
        grid[:, y : y + H, x : x + W] = images[k]
    return grid


_SAVE_ARGS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}


def save_image(image: torch.Tensor, path: str | os.PathLike, zoom: int = 1) -> Path:
    """Write a uint8 image ``(C, H, W)`` (C = 1 or 3) in the format its extension names
    (``image_format``), enlarged ``zoom`` times with nearest neighbours. The file appears whole or
    not at all (``durable.atomic_file``), with the permissions the umask gives new files; a failed write
    raises ``WriteError``. Returns the path."""
    path = Path(path)
    fmt = image_format(path)
    pil = to_pil(image, zoom)
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable.atomic_file(path) as tmp:
        pil.save(tmp, format=fmt, **_SAVE_ARGS.get(fmt, {}))
    return path


def to_pil(image: torch.Tensor, zoom: int = 1) -> Image.Image:
    """A uint8 image ``(C, H, W)`` (C = 1 or 3) as a Pillow image (L or RGB), enlarged ``zoom`` times
    with nearest neighbours."""
    array = image.permute(1, 2, 0).numpy()
    if zoom > 1:
        array = np.repeat(np.repeat(array, zoom, axis=0), zoom, axis=1)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def grid_zoom(width: int) -> int:
    """How many times ``save_grid`` enlarges images ``width`` pixels wide: to at least 96 pixels."""
    return max(1, 96 // width)


def save_grid(images: torch.Tensor, path: str | os.PathLike, levels: int = 256, nrow: int | None = None,
              zoom: int | None = None) -> Path:
    """Write images ``(N, C, H, W)`` in ``[0, levels)`` as one image grid (the format its extension
    names); small images are enlarged (``zoom``, default so that each image is at least 96 pixels
    wide). Returns the path."""
    grid = make_grid(to_uint8(images, levels), nrow=nrow)
    zoom = zoom or grid_zoom(images.shape[-1])
    return save_image(grid, path, zoom)
