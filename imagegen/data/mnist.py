"""MNIST from the four IDX files (gzipped or not) or from an .npz with x_train, y_train, x_test, y_test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imagegen.errors import DataError

from .dataset import ImageData, labelled
from .files import load_npz, read_bytes, reading

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
NPZ_NAME = "mnist.npz"
_PREFIX = {"train": "train", "test": "t10k"}
_SUBDIRS = (".", "raw", "MNIST/raw")  # torchvision keeps the files in MNIST/raw


def idx_names(split: str) -> tuple[str, str]:
    """Official (images, labels) IDX file names of a split, without the .gz suffix."""
    p = _PREFIX[split]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


FILES = (f"the MNIST IDX files {', '.join(n + '[.gz]' for s in _PREFIX for n in idx_names(s))} "
         f"(or {NPZ_NAME} with x_train, y_train, x_test, y_test)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not) into a uint8 array of the shape in its header.

    magic: 2051 for images (N, rows, cols), 2049 for labels (N,).
    """
    kind = "IDX images (magic 2051)" if magic == IMAGES_MAGIC else "IDX labels (magic 2049)"
    data = read_bytes(path, f"an MNIST {kind} file")
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else "none"
        raise DataError(f"{path}: magic number {found}, expected {magic}; this is not an MNIST {kind} file")
    header = 4 + 4 * data[3]
    with reading(path, f"an MNIST {kind} file"):
        dims = np.frombuffer(data, ">u4", data[3], offset=4).tolist()
        if len(data) != header + int(np.prod(dims)):
            raise DataError(
                f"{path}: header promises shape {tuple(dims)} ({header + int(np.prod(dims))} bytes) but "
                f"the file has {len(data)} bytes; it is truncated or corrupt, download it again"
            )
        # bytearray: a writable copy, so torch.from_numpy can share it without a warning
        return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(directory: Path, name: str) -> Path | None:
    # The Kaggle copy spells the names with a dot: train-images.idx3-ubyte
    candidates = (base + gz for base in (name, name.replace("-idx", ".idx")) for gz in ("", ".gz"))
    return next((directory / c for c in candidates if (directory / c).is_file()), None)


def locate(directory: Path, split: str) -> Path | None:
    """The folder holding MNIST IDX files, or the mnist.npz file, under `directory`; None if neither."""
    for d in (directory / sub for sub in _SUBDIRS):
        if any(_idx_file(d, n) for s in _PREFIX for n in idx_names(s)):
            return d
    return directory / NPZ_NAME if (directory / NPZ_NAME).is_file() else None


def _from_idx(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, magic in zip(idx_names(split), (IMAGES_MAGIC, LABELS_MAGIC), strict=True):
        path = _idx_file(directory, name)
        if path is None:
            raise DataError(
                f"{directory / name}[.gz] not found: put the MNIST file {name}.gz (or gunzipped) there"
            )
        arrays.append(read_idx(path, magic))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{directory}: IDX shapes {images.shape} and {labels.shape}, expected (N, 28, 28) and (N,)"
        )
    return images, labels


def _from_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xk, yk = f"x_{split}", f"y_{split}"
    d = load_npz(path, [xk, yk], expected="an MNIST .npz with arrays x_train, y_train, x_test, y_test")
    x = d[xk]
    if x.ndim == 4 and 1 in (x.shape[1], x.shape[3]):  # (N, 1, 28, 28) or (N, 28, 28, 1)
        x = x[:, 0] if x.shape[1] == 1 else x[..., 0]
    if x.ndim != 3:
        raise DataError(f"{path}: {xk} has shape {x.shape}, expected (N, 28, 28) grayscale images")
    return x, d[yk]


def read(path: Path, split: str, *_: object) -> ImageData:
    """One split ("train" or "test") of MNIST from a folder of IDX files (or one of them) or an .npz.

    Returns ImageData with images uint8 (N, 1, 28, 28), labels int64 (N,) in 0..9, levels 256.
    """
    if path.is_file() and "idx" in path.name:  # one of the IDX files was named: read the set from its folder
        path = path.parent
    x, y = _from_idx(path, split) if path.is_dir() else _from_npz(path, split)
    return labelled(x[:, None], y, 10, f"{path} ({split})")
