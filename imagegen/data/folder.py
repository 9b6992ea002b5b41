"""A directory of ordinary image files, cropped and resized to one square size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from imagegen.errors import DataError

from .dataset import ImageData
from .files import one_line
from .transforms import crop_resize

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
FILES = f"a directory of image files ({', '.join(EXTENSIONS)})"


def find_images(directory: Path) -> list[Path]:
    """Image files under `directory` (recursively, by extension, case-insensitive), sorted by path.

    Hidden files and folders (names starting with ".", such as macOS "._x.png") are skipped.
    """
    return sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and p.is_file()
    )


def open_image(path: Path, what: str = "image", channels: int | None = None) -> Image.Image:
    """Open and decode one image file, with its EXIF rotation applied; any mode and size, or with
    ``channels`` (1 or 3) converted to 8-bit L or RGB by ``to_8bit``.

    Raises DataError (one line naming the file) when it is missing, not a regular file, larger than
    Pillow's decompression-bomb limit, or cannot be decoded, whatever the decoder raises.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such {what} file")
    if not path.is_file():  # a folder, a pipe or a device: opening would fail or block
        raise DataError(f"{path} is not a regular file: give an image file ({', '.join(EXTENSIONS)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about damaged metadata it skips
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                im.load()
                return im if channels is None else to_8bit(im, channels)
    except Exception as e:  # Pillow's decoders raise many kinds of error on damaged or hostile files
        raise DataError(
            f"{path}: cannot read this {what} ({type(e).__name__}: {one_line(e)}); remove or replace the file"
        ) from e


def to_8bit(im: Image.Image, channels: int) -> Image.Image:
    """An image of any Pillow mode -> 8-bit ``L`` (``channels`` 1) or ``RGB`` (3).

    Integer greys wider than 8 bits (``I;16*``, and ``I``, as which Pillow may open 16-bit PNGs) are
    read as 0..65535 and scaled to 0..255, where Pillow's own conversion would clip them at 255;
    float greys (``F``) are read as 0..1 (NaN or infinite pixels raise ValueError). Transparency
    (RGBA, LA, PA, or a palette or grey with a transparent colour) is composited onto black, the
    background of the datasets' digits. Palette, CMYK, YCbCr, 1-bit and other modes go through
    Pillow's conversion; colour becomes grey by ITU-R 601-2 luma.
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        values = np.asarray(im, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"the {im.mode} image has NaN or infinite pixels")
        values = values * 255 if im.mode == "F" else values / 257
        im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im.convert("RGBA"))
    return im.convert(MODES[channels])


def read_images(files: list[Path], image_size: int, channels: int) -> ImageData:
    """Open image files (``open_image``: EXIF rotation, any mode to L or RGB), center-crop and resize
    them: uint8 (len(files), channels, image_size, image_size), no labels, levels 256."""
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, f in enumerate(files):
        pixels = np.asarray(crop_resize(open_image(f, channels=channels), image_size))
        images[i] = pixels.reshape(image_size, image_size, channels).transpose(2, 0, 1)
    return ImageData(torch.from_numpy(images), None, 256, None)


def read(directory: Path, split: str, image_size: int | None, channels: int | None) -> ImageData:
    """Every image under `directory`, whatever the split, as one unlabelled dataset.

    Files ending in png/jpg/jpeg/bmp/webp/gif (not hidden) are taken recursively in path order; each is
    center-cropped to a square and resized to image_size (BOX filter down, BICUBIC up).
    channels: 3 (RGB, None) or 1 (grayscale L).
    Returns ImageData with images uint8 (N, channels, image_size, image_size), labels None, levels 256.
    """
    if image_size is None:
        raise DataError(f"{directory}: the folder dataset needs image_size (the side to resize images to)")
    channels = 3 if channels is None else channels
    if channels not in MODES:
        raise DataError(f"{directory}: channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory: expected {FILES}")
    files = find_images(directory)
    if not files:
        raise DataError(f"{directory}: no image files found; expected {FILES}")
    return read_images(files, image_size, channels)
