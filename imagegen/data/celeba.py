"""CelebA, the aligned-and-cropped faces (``img_align_celeba/``), as small square images.

Each 178x218 face is center-cropped to 178x178 and area-resized (32x32 by default, as in the
Image Transformer's super-resolution experiments). Splits follow ``list_eval_partition.txt``
when it is beside the images, otherwise CelebA's standard numbering: images 1-162770 train,
162771-182637 validation, 182638-202599 test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imagegen.errors import DataError

from .dataset import ImageData
from .folder import find_images, read_image

_PARTITION = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
_FIRST = {0: 1, 1: 162771, 2: 182638}  # first image number of each partition in the standard split
_LAST = {0: 162770, 1: 182637, 2: 202599}


def locate(directory: Path) -> Path:
    """The folder holding the face images: ``directory`` itself or its ``img_align_celeba/``."""
    nested = directory / "img_align_celeba"
    if nested.is_dir():
        return nested
    if directory.is_dir():
        return directory
    raise DataError(f"{directory} not found: give the img_align_celeba folder of CelebA (or its parent)")


def partition_of(images: Path) -> dict[str, int]:
    """File name -> partition (0 train, 1 validation, 2 test) from ``list_eval_partition.txt`` next to
    ``images`` or inside it; empty when there is none."""
    for candidate in (images.parent / "list_eval_partition.txt", images / "list_eval_partition.txt"):
        if candidate.is_file():
            out = {}
            for line in candidate.read_text().split("\n"):
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    out[parts[0]] = int(parts[1])
            return out
    return {}


def _standard_partition(name: str) -> int | None:
    stem = Path(name).stem
    if not stem.isdigit():
        return None
    n = int(stem)
    return next((p for p in (0, 1, 2) if _FIRST[p] <= n <= _LAST[p]), None)


def load_celeba(path: Path, split: str, image_size: int = 32, limit: int | None = None) -> ImageData:
    """The ``split`` ("train", "val" or "test") of CelebA at ``path``: uint8 ``(N, 3, S, S)``, no labels.
    ``limit`` reads only the first images of the split."""
    if split.lower() not in _PARTITION:
        raise DataError(f"unknown split {split!r} for celeba: use train, val or test")
    wanted = _PARTITION[split.lower()]
    images = locate(Path(path).expanduser())
    table = partition_of(images)
    files = [f for f in find_images(images)
             if table.get(f.name, _standard_partition(f.name)) == wanted]
    if not files:
        raise DataError(f"{images}: no CelebA images of the {split} split (expected files like 000001.jpg, "
                        "numbered as in img_align_celeba, or a list_eval_partition.txt)")
    files = files[:limit] if limit else files
    out = np.empty((len(files), 3, image_size, image_size), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = read_image(f, image_size, 3)
    return ImageData(images=torch.from_numpy(out), labels=None, levels=256, num_classes=None)
