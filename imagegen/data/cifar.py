"""CIFAR-10 from the official python batches, an .npz of arrays, or an .npz of JPEG byte streams."""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imagegen.errors import DataError

from .dataset import ImageData, check_count, labels_tensor, uint8_images
from .files import READ_ERRORS, load_npz, npz_keys, one_line, reading, require_file

NUM_CLASSES = 10
FOLDER_NAME = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
NPZ_NAMES = ("cifar10.npz", "cifar10_jpeg.npz", "cifar-10.npz")
_EXPECTED_NPZ = (
    "a CIFAR-10 .npz with x_train, y_train, x_test, y_test (NHWC or NCHW uint8) or with "
    "jpeg_train, offsets_train, y_train, jpeg_test, offsets_test, y_test"
)


def expected_files() -> str:
    """What a user must put in a CIFAR-10 directory, for error messages."""
    names = ", ".join(BATCHES["train"] + BATCHES["test"])
    return f"the folder {FOLDER_NAME}/ with {names} (from cifar-10-python.tar.gz) or {NPZ_NAMES[0]}"


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of numpy arrays, lists, bytes) and refuses any other object."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch") from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an official CIFAR-10 python batch: images uint8 (N, 3, 32, 32), labels (N,)."""
    expected = "a pickled CIFAR-10 python batch (a dict with b'data' and b'labels')"
    require_file(path, expected)
    with reading(path, expected):
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise DataError(f"{path}: not a CIFAR-10 python batch (a dict with b'data' and b'labels')")
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072) row-major RGB planes")
    check_count(data, labels, str(path))
    return uint8_images(data, str(path)).reshape(-1, 3, 32, 32), labels


def locate(directory: Path, split: str) -> Path | None:
    """The batches folder or a CIFAR-10 .npz under `directory`; None if neither is there."""
    for d in (directory, directory / FOLDER_NAME):
        if any((d / n).is_file() for names in BATCHES.values() for n in names):
            return d
    for name in NPZ_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def decode_jpegs(buffer: np.ndarray, offsets: np.ndarray, where: str) -> np.ndarray:
    """Decode concatenated JPEG files: image i is buffer[offsets[i]:offsets[i+1]].

    buffer: uint8 (B,); offsets: int (N+1,), non-decreasing from 0 to B.
    Returns uint8 (N, H, W, 3) RGB; every image must have the size of the first.
    """
    if buffer.ndim != 1 or offsets.ndim != 1 or len(offsets) < 1:
        raise DataError(f"{where}: expected a 1-D JPEG byte buffer and 1-D offsets (N+1,)")
    if offsets[0] != 0 or offsets[-1] != len(buffer) or np.any(np.diff(offsets) <= 0):
        raise DataError(f"{where}: offsets must rise strictly from 0 to the buffer length {len(buffer)}")
    raw = buffer.tobytes()
    n = len(offsets) - 1
    out: np.ndarray | None = None
    for i in range(n):
        try:
            with Image.open(io.BytesIO(raw[offsets[i] : offsets[i + 1]])) as im:
                pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except READ_ERRORS as e:
            raise DataError(
                f"{where}: image {i} is not a readable JPEG ({type(e).__name__}: {one_line(e)})"
            ) from e
        if out is None:
            out = np.empty((n, *pixels.shape), dtype=np.uint8)
        if pixels.shape != out.shape[1:]:
            raise DataError(f"{where}: image {i} has shape {pixels.shape}, image 0 has {out.shape[1:]}")
        out[i] = pixels
    return out if out is not None else np.empty((0, 32, 32, 3), dtype=np.uint8)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 4 and x.shape[3] == 3:
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] == 3:
        return x
    raise DataError(f"{where}: images have shape {x.shape}, expected (N, 32, 32, 3) or (N, 3, 32, 32)")


def _from_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    keys = npz_keys(path, _EXPECTED_NPZ)
    if f"jpeg_{split}" in keys:
        jk, ok, yk = f"jpeg_{split}", f"offsets_{split}", f"y_{split}"
        d = load_npz(path, [jk, ok, yk], _EXPECTED_NPZ)
        x = decode_jpegs(d[jk], d[ok], f"{path} ({jk})").transpose(0, 3, 1, 2)
    else:
        xk, yk = f"x_{split}", f"y_{split}"
        d = load_npz(path, [xk, yk], _EXPECTED_NPZ)
        x = uint8_images(_to_nchw(d[xk], f"{path} ({xk})"), f"{path} ({xk})")
    check_count(x, d[yk], f"{path} ({split})")
    return x, d[yk]


def load_cifar10(path: Path, split: str) -> ImageData:
    """Read one split of CIFAR-10 from the batches folder (or its parent) or an .npz file.

    Returns ImageData with images uint8 (N, 3, 32, 32) RGB, labels int64 (N,) in 0..9, levels 256.
    """
    if path.is_dir():
        located = locate(path, split)
        if located is None:
            raise DataError(f"{path}: no CIFAR-10 files found; expected {expected_files()} in this directory")
        path = located
    elif any(path.name in names for names in BATCHES.values()):  # one batch was named: use its folder
        path = path.parent
    if path.is_dir():
        parts = []
        for name in BATCHES[split]:
            batch = path / name
            require_file(batch, f"the CIFAR-10 batch {name} from {FOLDER_NAME}/ (cifar-10-python.tar.gz)")
            parts.append(read_batch(batch))
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([np.asarray(p[1]) for p in parts])
    else:
        x, y = _from_npz(path, split)
    images = torch.from_numpy(np.ascontiguousarray(x))
    labels = labels_tensor(np.asarray(y), NUM_CLASSES, f"{path} ({split} labels)")
    return ImageData(images=images, labels=labels, levels=256, num_classes=NUM_CLASSES)
