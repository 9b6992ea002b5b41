"""Pictures as the page gets them: PNG bytes made in memory, grids exactly as the CLI writes them."""

from __future__ import annotations

import base64
import io

import torch

from ..imageio import grid_zoom, make_grid, to_pil, to_uint8


def png(image: torch.Tensor, zoom: int = 1) -> bytes:
    """A uint8 image ``(C, H, W)`` as PNG bytes, enlarged ``zoom`` times."""
    buffer = io.BytesIO()
    to_pil(image.cpu(), zoom).save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(images: torch.Tensor, levels: int, nrow: int | None = None) -> bytes:
    """Images ``(N, C, H, W)`` in ``[0, levels)`` as the PNG ``imagegen.imageio.save_grid`` writes for
    them (same layout and enlargement): the pixels of ``imagegen sample --out grid.png``."""
    grid = make_grid(to_uint8(images.cpu(), levels), nrow=nrow)
    return png(grid, grid_zoom(images.shape[-1]))


def image_pngs(images: torch.Tensor, levels: int) -> dict[str, bytes]:
    """Each image of ``(N, C, H, W)`` (values in ``[0, levels)``) as its own PNG at its own size, named
    ``"0"``, ``"1"``, ...: the files of ``--out-dir``."""
    return {str(k): png(to_uint8(image.cpu(), levels)) for k, image in enumerate(images)}


def data_url(data: bytes) -> str:
    """PNG bytes as a ``data:`` URL an ``<img>`` shows."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
