"""`load_dataset`: dataset name + path -> ImageData, finding or downloading the files."""

from __future__ import annotations

import operator
import os
from pathlib import Path

import torch

from imagegen.errors import DataError

from . import memmap
from .dataset import ImageData, carve_val
from .registry import Dataset, data_root, dataset, default_root
from .transforms import BINARIZE_MODES, resize_images
from .transforms import binarize as binarize_images

STOCHASTIC_SEED = 0  # the fixed seed of binarize="stochastic" at load time


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
    """One split of the dataset ``name`` (see ``DATASETS``) as ImageData: images uint8 (N, C, H, W),
    labels int64 (N,) or None. DataError (one line, naming the path) for anything missing, unknown or
    unreadable.

    path: a dataset file or directory; None: `root`, by default ``default_root(name)`` (under
        $IMAGEGEN_DATA or ~/.cache/imagegen), filled by downloading when `download` and the dataset
        allows (MNIST, CIFAR-10, checked against their md5).
    split: "train", "val" or "test". Unless the dataset has its own val (CelebA), val is a fixed random
        subset of val_size training images (``carve_val``; None: the dataset's ``val_size`` or a tenth
        of the images, whichever is fewer; 0 leaves train whole) and train the rest. Test is the
        official test split (ImageNet: the official validation files, as the papers report); a folder
        is one pool, and its test is every image in it.
    image_size: side to resize to (BOX filter down, BICUBIC up, center-cropped to a square first);
        required for "folder", 32 by default for "celeba".
    binarize: None, "threshold" (pixel > 127) or "stochastic" (Bernoulli(pixel/255), drawn once with
        a fixed seed); the dataset's own by default (threshold for binarized_mnist). Levels become 2.
    channels: 1 (grayscale) or 3 (RGB) for folder; other datasets accept only their own count.
    ImageNet's images are memory-mapped from a copy made once (``memmap.load_carved``).
    """
    where = path if path is not None else root
    spec = dataset(name, where)
    if where is None:
        where = default_root(spec.name) if spec.home else spec.name
    if binarize is not None and binarize not in BINARIZE_MODES:
        raise DataError(f"unknown binarize mode {binarize!r}: use one of {', '.join(BINARIZE_MODES)}")
    if image_size is not None:
        image_size = _count(image_size, "image_size", where, least=1)
    if val_size is not None:
        val_size = _count(val_size, "val_size", where)
        if spec.val_size is None:
            raise DataError(f"{spec.name} has its own val split; val_size does not apply (for {where})")
    if channels is not None and spec.shape is not None and channels != spec.shape[0]:
        raise DataError(f"{spec.name} at {where} has {spec.shape[0]}-channel images; channels={channels} is "
                        "for folder")
    split = normalize_split(split, spec.name, where)
    stored = split if spec.val_size is None or split == "test" else "train"
    located = _find(spec, path, root, stored, download)
    if spec.parts is not None:
        data = memmap.load_carved(spec, located, split, val_size, where, data_root() / "memmap")
    else:
        side = image_size or (spec.shape[1] if spec.shape else None)
        data = spec.read(located, stored, side, channels)
        if spec.val_size is not None and split != "test":
            data = carve_val(data, split, val_size, where, spec.val_size)
    if image_size is not None and image_size != data.image_size:
        data.images = resize_images(data.images, image_size)
    mode = binarize or spec.binarize
    if mode is not None:
        generator = torch.Generator().manual_seed(STOCHASTIC_SEED)
        data = ImageData(binarize_images(data.images, mode, generator), data.labels, 2, data.num_classes)
    return data


def normalize_split(split: str, name: str, where: object = None) -> str:
    """Return "train", "val" or "test" for a split name ("validation" means "val")."""
    s = {"validation": "val"}.get(str(split).lower(), str(split).lower())
    if s not in ("train", "val", "test"):
        at = f" at {where}" if where is not None else ""
        raise DataError(f"unknown split {split!r} for dataset {name!r}{at}: use train, val or test")
    return s


def _count(value: object, what: str, where: object, least: int = 0) -> int:
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        n = -1
    if n < least:
        kind = "positive" if least else "non-negative"
        raise DataError(f"{what} must be a {kind} integer, got {value!r} (for {where})")
    return n


def _find(spec: Dataset, path: str | os.PathLike | None, root: str | os.PathLike | None, split: str,
          download: bool) -> Path:
    """The file or directory to read, downloading into the directory first when allowed and needed."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if p.exists() and not p.is_dir():
            raise DataError(f"{p} is neither a file nor a directory: expected {spec.files}")
        if not p.exists() and (p.suffix or not download or spec.download is None):
            raise DataError(f"{p} not found: expected {spec.files} there")
        directory = p
    elif root is not None or spec.home is not None:
        directory = Path(root).expanduser() if root is not None else default_root(spec.name)
    else:
        raise DataError(f"the {spec.name} dataset needs the path of {spec.files} (--data)")
    found = spec.locate(directory, split) if directory.is_dir() else None
    if found is None and download and spec.download is not None:
        spec.download(directory)
        found = spec.locate(directory, split)
    if found is None:
        fetch_hint = ", or allow downloading (--download)" if spec.download else ""
        raise DataError(f"{spec.name} not found in {directory}: put {spec.files} there or pass the path of "
                        f"your copy (--data){fetch_hint}")
    return found
