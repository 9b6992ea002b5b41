"""A dataset larger than memory, copied once into a memory-mapped ``.npy`` that every process on a node
shares (the operating system keeps one copy of its pages), instead of being loaded by each process.

The copy of a training set is laid out in carved order (``carved_order``: the training images, then the
validation images), so that both splits are slices of it, never gathered into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from imagegen import durable
from imagegen.errors import DataError

from .dataset import ImageData, carved_order

if TYPE_CHECKING:
    from .registry import Dataset

try:
    import fcntl
except ImportError:  # not POSIX: conversions are not serialised
    fcntl = None


def load_carved(spec: Dataset, path: Path, split: str, val_size: int | None, where: object, directory: Path
                ) -> ImageData:
    """The ``split`` of the labelled dataset ``spec`` at ``path`` (what ``spec.locate`` found): "test"
    whole, "train" and "val" carved out of the training files as ``carve_val`` carves them.

    The copy lives in ``directory``/<name>-<hash of the files' paths, sizes and times, and the carve>/;
    the first process makes it (the others wait), later loads only map it.
    Returns ImageData whose images (N, C, H, W) are a copy-on-write memory map of the copy.
    """
    stored = "test" if split == "test" else "train"
    parts = spec.parts(path, stored)
    n = sum(count for _, count in parts)
    order, k = (np.arange(n), 0) if split == "test" else carved_order(n, val_size, where, spec.val_size)
    source = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p, _ in parts]
    home = directory / f"{spec.name}-{hashlib.sha256(json.dumps([source, k]).encode()).hexdigest()[:16]}"
    with _exclusive(home):
        if not (home / "labels.npy").is_file():
            _convert(parts, lambda p: spec.read(p, stored, None, None), order, home)
    images = np.load(home / "images.npy", mmap_mode="c")
    labels = torch.from_numpy(np.load(home / "labels.npy"))
    rows = slice(n - k, n) if split == "val" else slice(0, n - k)
    return ImageData(torch.from_numpy(images[rows]), labels[rows], 256, spec.num_classes)


@contextlib.contextmanager
def _exclusive(home: Path) -> Iterator[None]:
    """Hold ``home``/.lock (an exclusive flock, dropped when the holder dies) for the block."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = open(home / ".lock", "a")  # noqa: SIM115  (closed below)
    except OSError as e:
        raise DataError(f"cannot create the shared copy {home}: {durable.reason(e)}; set IMAGEGEN_DATA to "
                        "a writable folder") from None
    with lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _convert(parts: list[tuple[Path, int]], read: Callable[[Path], ImageData], order: np.ndarray,
             home: Path) -> None:
    """Write the labelled parts' images and labels to ``home``/images.npy and labels.npy, row
    ``order[i]`` of the parts' concatenation as row ``i``; one part in memory at a time."""
    durable.remove_temporaries(home)  # left by a conversion that was killed
    where = np.empty_like(order)
    where[order] = np.arange(len(order))  # the row of the copy each row of the parts goes to
    labels = np.empty(len(order), dtype=np.int64)
    with durable.atomic_file(home / "images.npy") as tmp:
        images, start = None, 0
        for path, count in parts:
            part = read(path)
            if len(part) != count:
                raise DataError(f"{path}: changed while being read; read it again")
            if images is None:
                images = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(order), *part.shape))
            rows = where[start : start + count]
            images[rows], labels[rows] = part.images.numpy(), part.labels.numpy()
            start += count
        images.flush()
        del images
    with durable.atomic_file(home / "labels.npy") as tmp:
        np.save(tmp, labels)
