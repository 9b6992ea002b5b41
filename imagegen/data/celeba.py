"""CelebA, the aligned-and-cropped faces (``img_align_celeba/``), as small square images.

Each 178x218 face is center-cropped to 178x178 and area-resized (32x32 by default, as in the
Image Transformer's super-resolution experiments). Splits follow ``list_eval_partition.txt``
when it is beside the images, otherwise CelebA's standard numbering: images 1-162770 train,
162771-182637 validation, 182638-202599 test.
"""

from __future__ import annotations

from pathlib import Path

from imagegen.errors import DataError

from .dataset import ImageData
from .folder import find_images, read_images

FILES = ("the img_align_celeba folder of CelebA (or its parent; from "
         "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html)")
_PARTITION = {"train": 0, "val": 1, "test": 2}
_LAST = (162770, 182637, 202599)  # last image number of each partition in the standard split


def locate(directory: Path, split: str) -> Path:
    """The folder holding the face images: ``directory`` itself or its ``img_align_celeba/``."""
    nested = directory / "img_align_celeba"
    return nested if nested.is_dir() else directory


def partition_of(images: Path) -> dict[str, int]:
    """File name -> partition (0 train, 1 validation, 2 test) from ``list_eval_partition.txt`` next to
    ``images`` or inside it; empty when there is none."""
    for candidate in (images.parent / "list_eval_partition.txt", images / "list_eval_partition.txt"):
        if candidate.is_file():
            rows = (line.split() for line in candidate.read_text().split("\n"))
            return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}
    return {}


def _standard_partition(name: str) -> int | None:
    stem = Path(name).stem
    n = int(stem) if stem.isdigit() else 0
    return next((p for p, last in enumerate(_LAST) if 1 <= n <= last), None)


def read(images: Path, split: str, image_size: int, channels: int | None) -> ImageData:
    """The ``split`` ("train", "val" or "test") of the CelebA faces in ``images``: uint8
    ``(N, 3, image_size, image_size)``, no labels."""
    wanted, table = _PARTITION[split], partition_of(images)
    files = [f for f in find_images(images) if table.get(f.name, _standard_partition(f.name)) == wanted]
    if not files:
        raise DataError(f"{images}: no CelebA images of the {split} split (expected files like 000001.jpg, "
                        "numbered as in img_align_celeba, or a list_eval_partition.txt)")
    return read_images(files, image_size, 3)
