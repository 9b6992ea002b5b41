"""A directory of ordinary image files, cropped and resized to one square size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from imagegen.errors import DataError

from .dataset import ImageData
from .files import READ_ERRORS, one_line
from .transforms import crop_resize

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode


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


def open_image(path: Path, what: str = "image") -> Image.Image:
    """Open and decode one image file, with its EXIF rotation applied (any mode, any size).

    Raises DataError (one line naming the file) when it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            return im
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what} file") from None
    except (*READ_ERRORS, Image.DecompressionBombError) as e:
        raise DataError(
            f"{path}: cannot read this {what} ({type(e).__name__}: {one_line(e)}); remove or replace the file"
        ) from e


def read_image(path: Path, image_size: int, channels: int = 3) -> np.ndarray:
    """Open one image file, apply its EXIF rotation, convert to L or RGB, center-crop and resize.

    Returns uint8 (channels, image_size, image_size).
    """
    im = open_image(path).convert(MODES[channels])
    pixels = np.asarray(crop_resize(im, image_size), dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def load_folder(directory: Path, image_size: int | None, channels: int | None = None) -> ImageData:
    """Read every image under `directory` into one unlabelled dataset.

    Files ending in png/jpg/jpeg/bmp/webp/gif (not hidden) are taken recursively in path order; each is
    center-cropped to a square and resized to image_size (BOX filter down, BICUBIC up).
    channels: 3 (RGB, the default) or 1 (grayscale L).
    Returns ImageData with images uint8 (N, channels, image_size, image_size), labels None, levels 256.
    """
    if image_size is None:
        raise DataError(f"{directory}: the folder dataset needs image_size (the side to resize images to)")
    if int(image_size) < 1:
        raise DataError(f"{directory}: image_size must be a positive integer, got {image_size}")
    channels = 3 if channels is None else channels
    if channels not in MODES:
        raise DataError(f"{directory}: channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "not found"
        raise DataError(f"{directory} {what}: expected a directory of image files ({', '.join(EXTENSIONS)})")
    files = find_images(directory)
    if not files:
        raise DataError(
            f"{directory}: no image files found; expected files ending in {', '.join(EXTENSIONS)}"
        )
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, f in enumerate(files):
        images[i] = read_image(f, int(image_size), channels)
    return ImageData(images=torch.from_numpy(images), labels=None, levels=256, num_classes=None)
