"""The one table of datasets that the loader, the CLI, the trainer and the scripts read: each one's
image shape, classes, splits, files, reader and download, and where datasets live on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from imagegen.errors import DataError

from . import celeba, cifar, download, folder, imagenet, mnist
from .dataset import ImageData


@dataclass(frozen=True)
class Dataset:
    """One dataset.

    Its files are found by ``locate(directory, split) -> file or folder, or None`` and read by
    ``read(that, split, image_size, channels) -> ImageData`` for the stored split: "train" or "test",
    or "val" for a dataset with its own (``val_size`` None); image_size and channels matter only to
    datasets decoded from image files (``any_size``). A dataset with ``parts`` is larger than memory:
    ``parts(that, split)`` lists its files and image counts, ``read`` reads one, and the split is
    served from a shared memory-mapped copy (``memmap.load_carved``).
    """

    name: str
    shape: tuple[int, int, int] | None  # (C, H, W) as read by default; None: set by image_size, channels
    num_classes: int | None
    files: str  # what to put in the dataset's folder, for messages
    locate: Callable[[Path, str], Path | None]
    read: Callable[[Path, str, int | None, int | None], ImageData]
    home: str | None  # its folder under data_root(); None: it has none (a path is always given)
    download: Callable[[Path], None] | None = None  # None: fetched by hand (``files`` says from where)
    val_size: int | None = 5000  # images carved out of train for val; None: the dataset has its own val
    binarize: str | None = None  # the binarization it is loaded with unless another is asked for
    any_size: bool = False  # decoded from image files, cropped and resized to any image_size
    parts: Callable[[Path, str], list[tuple[Path, int]]] | None = None

    @property
    def levels(self) -> int:
        """Values per sub-pixel as loaded by default: 2 if binarized, else 256."""
        return 2 if self.binarize else 256


def _imagenet(side: int) -> Dataset:
    return Dataset(f"imagenet{side}", (3, side, side), 1000, imagenet.files(side),
                   partial(imagenet.locate, side=side), partial(imagenet.read, side=side), f"imagenet{side}",
                   val_size=10_000, parts=partial(imagenet.parts, side=side))


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", (1, 28, 28), 10, mnist.FILES, mnist.locate, mnist.read, "mnist", download.mnist),
    Dataset("binarized_mnist", (1, 28, 28), 10, mnist.FILES, mnist.locate, mnist.read, "mnist",
            download.mnist, binarize="threshold"),
    Dataset("cifar10", (3, 32, 32), 10, cifar.FILES, cifar.locate, cifar.read, "cifar10", download.cifar10),
    _imagenet(32),
    _imagenet(64),
    Dataset("celeba", (3, 32, 32), None, celeba.FILES, celeba.locate, celeba.read, "celeba", val_size=None,
            any_size=True),
    Dataset("folder", None, None, folder.FILES, lambda d, split: d, folder.read, None, any_size=True),
)}


def available_datasets() -> list[str]:
    """Names accepted by load_dataset."""
    return list(DATASETS)


def dataset(name: str, where: object = None) -> Dataset:
    """The entry of ``name`` (any case, "-" for "_"); DataError naming ``where`` if there is none."""
    key = str(name).lower().replace("-", "_")
    if key not in DATASETS:
        at = f" (for {where})" if where is not None else ""
        raise DataError(f"unknown dataset {name!r}{at}: use one of {', '.join(DATASETS)}")
    return DATASETS[key]


def data_root() -> Path:
    """Where datasets are looked for and downloaded when no path is given, and where shared copies go:
    ``$IMAGEGEN_DATA``, else imagegen/ in the user's cache folder (``$XDG_CACHE_HOME``, else ~/.cache)."""
    if os.environ.get("IMAGEGEN_DATA"):
        return Path(os.environ["IMAGEGEN_DATA"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "imagegen"


def default_root(name: str) -> Path:
    """data_root()/<its folder>, where a dataset is looked for (and downloaded) when no path is given;
    binarized_mnist shares mnist's."""
    spec = dataset(name)
    return data_root() / (spec.home or spec.name)
