"""The in-memory dataset every reader returns, the carving of val out of train, and array checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imagegen.errors import DataError

VAL_SEED = 0  # numpy's frozen legacy RandomState stream: the same carve on every numpy version


@dataclass
class ImageData:
    """A whole split of a dataset, in memory or memory-mapped.

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


def carved_order(n: int, val_size: int | None, where: object, default: int = 5000) -> tuple[np.ndarray, int]:
    """The rows (n,) of a training set in carved order, the training rows then the ``k`` validation
    rows, each in file order; and ``k``.

    The validation rows are a fixed random subset (seeded, independent of torch and of the numpy
    version) of ``val_size`` rows; None: ``default`` or a tenth of the rows, whichever is fewer.
    """
    k = min(default, n // 10) if val_size is None else val_size
    if not 0 <= k < n:
        raise DataError(f"val_size {k} must lie in 0..{n - 1}: {where} has {n} training images")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.RandomState(VAL_SEED).permutation(n)[:k]] = True
    return np.concatenate([np.flatnonzero(~chosen), np.flatnonzero(chosen)]), k


def carve_val(data: ImageData, split: str, val_size: int | None, where: object, default: int = 5000
              ) -> ImageData:
    """The ``split`` ("train" or "val") of a training set: val is the subset ``carved_order`` picks,
    train every other image; both keep the file's order and never overlap."""
    order, k = carved_order(len(data), val_size, where, default)
    index = torch.from_numpy(order[len(data) - k:] if split == "val" else order[: len(data) - k])
    labels = None if data.labels is None else data.labels[index]
    return ImageData(data.images[index], labels, data.levels, data.num_classes)


def labelled(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str, offset: int = 0
             ) -> ImageData:
    """A labelled 8-bit split from integer arrays: images (N, C, H, W) of values 0..255, labels (N,) in
    ``offset .. num_classes - 1 + offset`` (stored minus ``offset``); DataError naming ``where`` unless
    they are."""
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels; the file is inconsistent")
    if not np.issubdtype(images.dtype, np.integer):
        raise DataError(f"{where}: images must be uint8 pixel values 0..255, got dtype {images.dtype}")
    if images.dtype != np.uint8 and images.size and (images.min() < 0 or images.max() > 255):
        raise DataError(f"{where}: images must hold pixel values 0..255, found "
                        f"{images.min()}..{images.max()}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} of shape "
                        f"{labels.shape}")
    if labels.size and (labels.min() < offset or labels.max() >= num_classes + offset):
        raise DataError(f"{where}: labels must lie in {offset}..{num_classes - 1 + offset}, found "
                        f"{labels.min()}..{labels.max()}")
    pixels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    return ImageData(pixels, torch.from_numpy(labels.astype(np.int64) - offset), 256, num_classes)
