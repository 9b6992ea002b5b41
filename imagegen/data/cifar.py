"""CIFAR-10 from the official python batches, an .npz of arrays, or an .npz of JPEG byte streams."""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from imagegen.errors import DataError

from .dataset import ImageData, labelled
from .files import READ_ERRORS, load_npz, one_line, reading, require_file

FOLDER_NAME = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
NPZ_NAMES = ("cifar10.npz", "cifar10_jpeg.npz", "cifar-10.npz")
FILES = (f"the folder {FOLDER_NAME}/ with {', '.join(BATCHES['train'] + BATCHES['test'])} "
         f"(from cifar-10-python.tar.gz) or {NPZ_NAMES[0]}")
_EXPECTED_NPZ = (
    "a CIFAR-10 .npz with x_train, y_train, x_test, y_test (NHWC or NCHW uint8) or with "
    "jpeg_train, offsets_train, y_train, jpeg_test, offsets_test, y_test"
)


try:
    from numpy._core import multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray
# What a CIFAR batch pickle may name: numpy arrays and dtypes (under numpy 1's or 2's module names).
_ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode}
_ALLOWED |= {(module, name): getattr(multiarray, name) for name in ("_reconstruct", "scalar")
             for module in ("numpy.core.multiarray", "numpy._core.multiarray")}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of numpy arrays, lists, bytes) and refuses any other object."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return _ALLOWED[(module, name)]


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
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels; the file is inconsistent")
    return data.reshape(-1, 3, 32, 32), labels


def locate(directory: Path, split: str) -> Path | None:
    """The batches folder or a CIFAR-10 .npz under `directory`; None if neither is there."""
    for d in (directory, directory / FOLDER_NAME):
        if any((d / n).is_file() for names in BATCHES.values() for n in names):
            return d
    return next((directory / n for n in NPZ_NAMES if (directory / n).is_file()), None)


def decode_jpegs(buffer: np.ndarray, offsets: np.ndarray, where: str) -> np.ndarray:
    """Decode concatenated JPEG files: image i is buffer[offsets[i]:offsets[i+1]].

    buffer: uint8 (B,); offsets: int (N+1,), rising strictly from 0 to B.
    Returns uint8 (N, H, W, 3) RGB; every image must have the size of the first.
    """
    if buffer.ndim != 1 or offsets.ndim != 1 or len(offsets) < 1:
        raise DataError(f"{where}: expected a 1-D JPEG byte buffer and 1-D offsets (N+1,)")
    if offsets[0] != 0 or offsets[-1] != len(buffer) or np.any(np.diff(offsets) <= 0):
        raise DataError(f"{where}: offsets must rise strictly from 0 to the buffer length {len(buffer)}")
    raw, images = buffer.tobytes(), []
    for i, (start, end) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        try:
            with Image.open(io.BytesIO(raw[start:end])) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except READ_ERRORS as e:
            raise DataError(
                f"{where}: image {i} is not a readable JPEG ({type(e).__name__}: {one_line(e)})"
            ) from e
        if images[i].shape != images[0].shape:
            raise DataError(f"{where}: image {i} has shape {images[i].shape}, image 0 has {images[0].shape}")
    return np.stack(images) if images else np.empty((0, 32, 32, 3), dtype=np.uint8)


def _from_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    jk, ok, xk, yk = (f"{name}_{split}" for name in ("jpeg", "offsets", "x", "y"))
    d = load_npz(path, [jk, ok, yk], [xk, yk], expected=_EXPECTED_NPZ)
    if jk in d:
        return decode_jpegs(d[jk], d[ok], f"{path} ({jk})").transpose(0, 3, 1, 2), d[yk]
    x = d[xk]
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise DataError(f"{path} ({xk}): images have shape {x.shape}, expected (N, 32, 32, 3) or "
                        "(N, 3, 32, 32)")
    return (x.transpose(0, 3, 1, 2) if x.shape[3] == 3 else x), d[yk]


def read(path: Path, split: str, *_: object) -> ImageData:
    """One split ("train" or "test") of CIFAR-10 from the batches folder (or one batch in it) or an .npz.

    Returns ImageData with images uint8 (N, 3, 32, 32) RGB, labels int64 (N,) in 0..9, levels 256.
    """
    if any(path.name in names for names in BATCHES.values()):  # one batch was named: use its folder
        path = path.parent
    if path.is_dir():
        parts = [read_batch(require_file(path / name, f"the CIFAR-10 batch {name} from {FOLDER_NAME}/ "
                                                      "(cifar-10-python.tar.gz)")) for name in BATCHES[split]]
        x, y = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    else:
        x, y = _from_npz(path, split)
    return labelled(x, y, 10, f"{path} ({split})")
