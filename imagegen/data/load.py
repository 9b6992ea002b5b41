"""`load_dataset`: dataset name + path -> ImageData, finding or downloading the files."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from imagegen.errors import DataError

from . import cifar, imagenet, mnist
from . import download as fetch
from .celeba import load_celeba
from .dataset import ImageData, carve_val, normalize_split
from .folder import load_folder
from .transforms import BINARIZE_MODES, resize_images
from .transforms import binarize as binarize_images

STOCHASTIC_SEED = 0  # the fixed seed of binarize="stochastic" at load time


@dataclass(frozen=True)
class _Source:
    load: Callable[[Path, str], ImageData]  # (file or directory, split) -> data
    locate: Callable[[Path, str], Path | None]  # directory -> what to pass to load, or None
    expected: Callable[[], str]  # what to put in the directory, for error messages
    download: Callable[[Path], None]
    channels: int
    cache: str  # folder name under ~/.cache/imagegen
    val_size: int  # images carved out of train for the val split (the official test split stays test)
    default_binarize: str | None = None
    downloadable: bool = True


_SOURCES: dict[str, _Source] = {
    "mnist": _Source(mnist.load_mnist, mnist.locate, mnist.expected_files, fetch.download_mnist, 1, "mnist",
                     5000),
    "binarized_mnist": _Source(mnist.load_mnist, mnist.locate, mnist.expected_files, fetch.download_mnist, 1,
                               "mnist", 5000, "threshold"),
    "cifar10": _Source(
        cifar.load_cifar10, cifar.locate, cifar.expected_files, fetch.download_cifar10, 3, "cifar10", 5000
    ),
    **{
        f"imagenet{s}": _Source(
            lambda p, split, s=s: imagenet.load_imagenet(p, split, s),
            lambda d, split, s=s: imagenet.locate(d, split, s),
            lambda s=s: imagenet.expected_files(s),
            lambda d, s=s: fetch.download_imagenet(d, s),
            3,
            f"imagenet{s}",
            10_000,
            downloadable=False,
        )
        for s in (32, 64)
    },
}


def available_datasets() -> list[str]:
    """Names accepted by load_dataset."""
    return [*_SOURCES, "celeba", "folder"]


def default_root(name: str) -> Path:
    """~/.cache/imagegen/<name>, where a dataset is looked for (and downloaded) when no path is given.

    binarized_mnist shares ~/.cache/imagegen/mnist with mnist.
    """
    key = str(name).lower().replace("-", "_")
    return Path.home() / ".cache" / "imagegen" / (_SOURCES[key].cache if key in _SOURCES else key)


def load_dataset(
    name: str,
    path: str | os.PathLike | None = None,
    split: str = "train",
    *,
    image_size: int | None = None,
    binarize: str | None = None,
    download: bool = False,
    root: str | os.PathLike | None = None,
    channels: int | None = None,
    val_size: int | None = None,
) -> ImageData:
    """Load one split of a dataset into memory.

    name: one of available_datasets().
    path: a dataset file (.npz) or directory; None looks in `root` (default: default_root(name)).
        A directory without the files is filled by downloading when download=True (MNIST, CIFAR-10).
    split: "train", "val" or "test". "val" is carved out of the training files (a fixed random
        subset of val_size images, see ``carve_val``) and "train" is the rest, so the two never
        overlap; "test" is the official test split (for ImageNet, whose test labels are private, the
        official validation files, as the papers report). CelebA has its own val split. A folder is
        one pool: train and val are carved from it, and test is every image in it (point --data at
        held-out images to evaluate them).
    val_size: images in the val split; None gives the dataset's default (MNIST 5,000, CIFAR-10
        5,000, ImageNet 10,000, a folder 5,000) or a tenth of the training images, whichever is
        fewer; 0 leaves train whole.
    image_size: side to resize to; required for "folder", 32 by default for "celeba" (the
        img_align_celeba folder, split by list_eval_partition.txt or the standard numbering),
        optional elsewhere (a size other than the native one crops/resizes every image with a BOX
        filter down, BICUBIC up).
    binarize: None, "threshold" (pixel > 127) or "stochastic" (Bernoulli(pixel/255), drawn once with
        a fixed seed); "threshold" by default for binarized_mnist. Binarized data has levels 2.
    channels: 1 (grayscale) or 3 (RGB) for folder; other datasets accept only their own count.
    Returns ImageData: images uint8 (N, C, H, W), labels int64 (N,) or None.
    Raises DataError (one line, naming the path) for anything missing, unknown or unreadable.
    """
    key = str(name).lower().replace("-", "_")
    where = path if path is not None else root if root is not None else default_root(key)
    if key not in available_datasets():
        known = ", ".join(available_datasets())
        raise DataError(f"unknown dataset {name!r} (for {where}): use one of {known}")
    if binarize is not None and binarize not in BINARIZE_MODES:
        raise DataError(f"unknown binarize mode {binarize!r}: use one of {', '.join(BINARIZE_MODES)}")
    if image_size is not None:
        image_size = _positive_int(image_size, "image_size", where)

    split = normalize_split(split, key, where)
    if val_size is not None:
        val_size = _non_negative_int(val_size, "val_size", where)
    if key == "celeba":
        if val_size is not None:
            raise DataError(f"celeba has its own val split; val_size does not apply (for {where})")
        directory = path if path is not None else root if root is not None else default_root(key)
        data = load_celeba(Path(directory), split, image_size or 32)
    elif key == "folder":
        directory = path if path is not None else root
        if directory is None:
            raise DataError("the folder dataset needs the path of a directory of images (--data)")
        data = load_folder(Path(directory).expanduser(), image_size, channels)
        if split != "test":
            data = carve_val(data, split, val_size, directory)
    else:
        source = _SOURCES[key]
        if channels is not None and channels != source.channels:
            raise DataError(
                f"{key} at {where} has {source.channels}-channel images; channels={channels} is for folder"
            )
        stored = "test" if split == "test" else "train"
        data = source.load(_resolve(key, source, path, root, stored, download), stored)
        if split != "test":
            data = carve_val(data, split, val_size, where, source.val_size)
        if image_size is not None and image_size != data.image_size:
            data.images = resize_images(data.images, image_size)

    mode = binarize if binarize is not None or key in ("folder", "celeba") else _SOURCES[key].default_binarize
    if mode is not None:
        generator = torch.Generator().manual_seed(STOCHASTIC_SEED)
        data = ImageData(binarize_images(data.images, mode, generator), data.labels, 2, data.num_classes)
    return data


def _positive_int(value: object, what: str, where: object) -> int:
    n = _non_negative_int(value, what, where)
    if n < 1:
        raise DataError(f"{what} must be a positive integer, got {value!r} (for {where})")
    return n


def _non_negative_int(value: object, what: str, where: object) -> int:
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        n = -1
    if n < 0:
        raise DataError(f"{what} must be a non-negative integer, got {value!r} (for {where})")
    return n


def _resolve(
    name: str,
    source: _Source,
    path: str | os.PathLike | None,
    root: str | os.PathLike | None,
    split: str,
    download: bool,
) -> Path:
    """The file or directory to read, downloading into the directory first when allowed and needed."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if p.exists() and not p.is_dir():
            raise DataError(f"{p} is neither a file nor a directory: expected {source.expected()}")
        if not p.exists() and (p.suffix or not download):
            raise DataError(f"{p} not found: expected {source.expected()} there")
        directory = p
    else:
        directory = Path(root).expanduser() if root is not None else default_root(name)
    found = source.locate(directory, split) if directory.is_dir() else None
    if found is None and download:
        source.download(directory)
        found = source.locate(directory, split)
    if found is None:
        fetch_hint = ", or allow downloading (--download)" if source.downloadable else ""
        raise DataError(
            f"{name} not found in {directory}: put {source.expected()} there or pass the path of your copy "
            f"(--data){fetch_hint}"
        )
    return found
