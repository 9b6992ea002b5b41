"""Downsampled ImageNet (32x32 and 64x64) from the official npz batches, one batch file at a time."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from imagegen.errors import DataError

from .dataset import ImageData, labelled
from .files import load_npz

NUM_TRAIN_BATCHES = 10
VAL_NAME = "val_data.npz"
_TRAIN_RE = re.compile(r"train_data_batch_(\d+)\.npz")


def files(side: int) -> str:
    """What a user must put in an ImageNet directory, for error messages."""
    return (
        f"Imagenet{side}_train_npz/train_data_batch_1.npz .. _{NUM_TRAIN_BATCHES}.npz and "
        f"Imagenet{side}_val_npz/{VAL_NAME} (from image-net.org, 'Downsampled ImageNet {side}x{side}')"
    )


def _candidates(directory: Path, split: str, side: int) -> list[Path]:
    pattern = "train_data_batch_*.npz" if split == "train" else VAL_NAME
    found = sorted(p for p in directory.rglob(pattern) if p.is_file())
    # A tree may hold both resolutions (Imagenet32_*, Imagenet64_*): prefer the folders naming ours.
    preferred = [p for p in found if str(side) in str(p.parent.relative_to(directory))]
    return preferred or found


def _batch_number(path: Path) -> int:
    m = _TRAIN_RE.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def locate(directory: Path, split: str, *, side: int) -> Path | None:
    """`directory` if it holds ImageNet npz files of the split (at any depth), else None."""
    return directory if _candidates(directory, split, side) else None


def parts(path: Path, split: str, *, side: int) -> list[tuple[Path, int]]:
    """The npz files of a split (a folder searched recursively, train batches in number order, or one
    file) and the number of images in each."""
    if path.is_dir():
        found = sorted(_candidates(path, split, side), key=_batch_number)
        names = [p.name for p in found]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            clash = ", ".join(str(p) for p in found if p.name == twice[0])
            raise DataError(f"{path}: found {twice[0]} more than once ({clash}); pass the folder of one set")
        numbers = [_batch_number(p) for p in found]
        if split == "train" and numbers != list(range(1, NUM_TRAIN_BATCHES + 1)):
            warnings.warn(
                f"{path}: found train batches {numbers}, not 1..{NUM_TRAIN_BATCHES}; loading only these",
                stacklevel=4,
            )
    else:
        found = [path]
    # Labels are small: counting them first sizes the shared copy before any images are read.
    return [(f, len(load_npz(f, ["labels"], expected="a downsampled-ImageNet npz with 'labels'")["labels"]))
            for f in found]


def read(path: Path, split: str, *_: object, side: int) -> ImageData:
    """One npz batch of downsampled ImageNet at ``side`` (32 or 64): images uint8 (N, 3, side, side),
    labels int64 (N,) converted from the files' 1..1000 to 0..999."""
    expected = f"a downsampled-ImageNet npz with 'data' (N, {3 * side * side}) uint8 and 'labels' 1..1000"
    d = load_npz(path, ["data", "labels"], expected=expected)
    data, labels = d["data"], d["labels"]
    if data.ndim != 2 or data.shape[1] != 3 * side * side:
        found = int(round((data.shape[1] / 3) ** 0.5)) if data.ndim == 2 else None
        hint = f" (it holds {found}x{found} images: use imagenet{found})" if found in (32, 64) else ""
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, {3 * side * side}){hint}")
    return labelled(data.reshape(-1, 3, side, side), labels, 1000, str(path), offset=1)
