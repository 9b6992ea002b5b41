"""Downsampled ImageNet (32x32 and 64x64) from the official npz batches."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from imagegen.errors import DataError

from .dataset import ImageData, check_count, labels_tensor, uint8_images
from .files import load_npz, require_file

NUM_CLASSES = 1000
NUM_TRAIN_BATCHES = 10
VAL_NAME = "val_data.npz"
_TRAIN_RE = re.compile(r"train_data_batch_(\d+)\.npz")


def expected_files(size: int) -> str:
    """What a user must put in an ImageNet directory, for error messages."""
    return (
        f"Imagenet{size}_train_npz/train_data_batch_1.npz .. _{NUM_TRAIN_BATCHES}.npz and "
        f"Imagenet{size}_val_npz/{VAL_NAME} (from image-net.org, 'Downsampled ImageNet {size}x{size}')"
    )


def _candidates(directory: Path, split: str, size: int) -> list[Path]:
    pattern = "train_data_batch_*.npz" if split == "train" else VAL_NAME
    found = sorted(p for p in directory.rglob(pattern) if p.is_file())
    # A tree may hold both resolutions (Imagenet32_*, Imagenet64_*): prefer the folders naming ours.
    preferred = [p for p in found if str(size) in str(p.parent.relative_to(directory))]
    return preferred or found


def _batch_number(path: Path) -> int:
    m = _TRAIN_RE.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def find_files(directory: Path, split: str, size: int) -> list[Path]:
    """The npz files of a split under `directory` (searched recursively), train batches in number order."""
    files = _candidates(directory, split, size)
    names = [p.name for p in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        clash = [str(p) for p in files if p.name == duplicates[0]]
        raise DataError(
            f"{directory}: found {duplicates[0]} more than once ({', '.join(clash)}); "
            "pass the folder of one set"
        )
    return sorted(files, key=_batch_number)


def locate(directory: Path, split: str, size: int) -> Path | None:
    """`directory` if it holds ImageNet npz files of the split (at any depth), else None."""
    return directory if _candidates(directory, split, size) else None


def _read(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    expected = f"a downsampled-ImageNet npz with 'data' (N, {3 * size * size}) uint8 and 'labels' 1..1000"
    d = load_npz(path, ["data", "labels"], expected)
    data, labels = d["data"], d["labels"]
    if data.ndim != 2 or data.shape[1] != 3 * size * size:
        side = int(round((data.shape[1] / 3) ** 0.5)) if data.ndim == 2 else None
        hint = f" (it holds {side}x{side} images: use imagenet{side})" if side in (32, 64) else ""
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, {3 * size * size}){hint}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' is {labels.dtype} of shape {labels.shape}, expected integers (N,)")
    check_count(data, labels, str(path))
    return data, labels


def load_imagenet(path: Path, split: str, size: int) -> ImageData:
    """Read one split of downsampled ImageNet at `size` (32 or 64) from a folder of npz batches or one npz.

    A single npz file is read as given whatever the split. Labels are converted from the files'
    1..1000 to 0..999. Returns ImageData with images uint8 (N, 3, size, size), labels int64 (N,).
    """
    if path.is_dir():
        files = find_files(path, split, size)
        if not files:
            name = "train_data_batch_<k>.npz" if split == "train" else VAL_NAME
            raise DataError(f"{path}: no {name} found (nor in subfolders); expected {expected_files(size)}")
        numbers = [_batch_number(p) for p in files]
        if split == "train" and numbers != list(range(1, NUM_TRAIN_BATCHES + 1)):
            warnings.warn(
                f"{path}: found train batches {numbers}, not 1..{NUM_TRAIN_BATCHES}; loading only these",
                stacklevel=3,
            )
    else:
        files = [require_file(path, f"a downsampled-ImageNet {size}x{size} npz")]
    # Labels are small: read them first to size one buffer, so the images are never held twice.
    counts = []
    for f in files:
        counts.append(len(load_npz(f, ["labels"], "a downsampled-ImageNet npz with 'labels'")["labels"]))
    images = np.empty((sum(counts), 3 * size * size), dtype=np.uint8)
    labels = np.empty(sum(counts), dtype=np.int64)
    start = 0
    for f, n in zip(files, counts, strict=True):
        data, lab = _read(f, size)
        if len(lab) != n:
            raise DataError(f"{f}: changed while being read; read it again")
        images[start : start + n] = uint8_images(data, str(f))
        labels[start : start + n] = lab
        start += n
    where = str(path) if len(files) > 1 else str(files[0])
    return ImageData(
        images=torch.from_numpy(images).view(-1, 3, size, size),
        labels=labels_tensor(labels, NUM_CLASSES, f"{where} (labels)", offset=1),
        levels=256,
        num_classes=NUM_CLASSES,
    )
