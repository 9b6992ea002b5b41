"""The in-memory dataset every reader returns, and split-name handling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imagegen.errors import DataError

SPLITS = ("train", "val", "test")
_VAL_ALIASES = ("validation",)
VAL_SEED = 0  # numpy's frozen legacy RandomState stream: the same carve on every numpy version


@dataclass
class ImageData:
    """A whole split of a dataset held in memory.

    images: uint8 tensor (N, C, H, W) with values in [0, levels).
    labels: int64 tensor (N,) with values in [0, num_classes), or None for unlabelled data.
    levels: 256 for 8-bit images, 2 for binarized ones.
    num_classes: number of classes (10 for MNIST/CIFAR-10, 1000 for ImageNet), None without labels.

    `channels` is C, `image_size` is the side H (every reader yields square images, H == W),
    and `shape` is (C, H, W).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    levels: int
    num_classes: int | None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"ImageData.images must be a uint8 tensor (N, C, H, W), got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.labels is not None and (
            self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],)
        ):
            raise DataError(
                f"ImageData.labels must be an int64 tensor ({self.images.shape[0]},), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """C, the number of channels (1 for grayscale, 3 for RGB)."""
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """H, the side of the square images."""
        return self.images.shape[2]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return c, h, w


def normalize_split(split: str, dataset: str, where: object = None) -> str:
    """Return "train", "val" or "test" for a split name ("validation" means "val").

    `where` (the dataset's path) is named in the error message.
    """
    s = str(split).lower()
    if s in SPLITS:
        return s
    if s in _VAL_ALIASES:
        return "val"
    at = f" at {where}" if where is not None else ""
    raise DataError(f"unknown split {split!r} for dataset {dataset!r}{at}: use train, val or test")


def carve_val(data: ImageData, split: str, val_size: int | None, where: object, default: int = 5000
              ) -> ImageData:
    """The ``split`` ("train" or "val") of a training set from which a validation set is carved.

    The validation images are a fixed random subset of ``val_size`` images (seeded, independent of
    torch and of the numpy version; None: ``default`` or a tenth of the images, whichever is fewer);
    the training split is every other image. Both keep the file's order and never overlap.
    """
    n = len(data)
    if val_size is None:
        val_size = min(default, n // 10)
    if not 0 <= val_size < n:
        raise DataError(f"val_size {val_size} must lie in 0..{n - 1}: {where} has {n} training images")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.RandomState(VAL_SEED).permutation(n)[:val_size]] = True
    index = torch.from_numpy(np.flatnonzero(chosen if split == "val" else ~chosen))
    labels = None if data.labels is None else data.labels[index]
    return ImageData(data.images[index], labels, data.levels, data.num_classes)


def labels_tensor(labels: np.ndarray, num_classes: int, where: str, *, offset: int = 0) -> torch.Tensor:
    """Integer array (N,) -> int64 tensor (N,) minus `offset`, checked to lie in [0, num_classes)."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}"
        )
    out = torch.from_numpy(labels.astype(np.int64)) - offset
    if out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_classes):
        lo, hi = int(out.min()) + offset, int(out.max()) + offset
        raise DataError(f"{where}: labels must lie in {offset}..{num_classes - 1 + offset}, found {lo}..{hi}")
    return out


def uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    """Check that an integer array holds 8-bit pixel values and return it as uint8 (same shape)."""
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where}: images must be uint8 pixel values 0..255, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(f"{where}: images must hold pixel values 0..255, found {x.min()}..{x.max()}")
    return x.astype(np.uint8)


def check_count(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Raise DataError unless there is one label per image."""
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels; the file is inconsistent")
