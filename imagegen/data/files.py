"""Opening dataset files so that any failure becomes a one-line DataError naming the file."""

from __future__ import annotations

import contextlib
import gzip
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from imagegen.errors import DataError

# What reading a damaged or wrong file can raise, from numpy, zipfile, gzip, pickle and Pillow.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    pickle.UnpicklingError,
    SyntaxError,  # Pillow raises it for some malformed images
)


def one_line(text: object) -> str:
    """Collapse any whitespace (newlines included) to single spaces."""
    return " ".join(str(text).split())


@contextlib.contextmanager
def reading(path: Path, expected: str) -> Iterator[None]:
    """Turn any read error inside the block into DataError('<path>: cannot read <expected> ...')."""
    try:
        yield
    except DataError:
        raise
    except READ_ERRORS as e:
        raise DataError(
            f"{path}: cannot read {expected} ({type(e).__name__}: {one_line(e)}); "
            "the file is corrupt or of another kind, replace it"
        ) from e


def require_file(path: Path, expected: str) -> Path:
    """Return `path` if it is an existing file, else raise DataError saying what belongs there."""
    if not path.is_file():
        raise DataError(f"{path} not found: expected {expected} there")
    return path


def load_npz(path: Path, keys: list[str], expected: str) -> dict[str, np.ndarray]:
    """Read the arrays `keys` from the .npz at `path` (no pickles); DataError if absent or corrupt."""
    require_file(path, expected)
    with reading(path, expected):
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: is a single .npy array, expected {expected}")
        with z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: has arrays {sorted(z.files)} but lacks {missing}; expected {expected}"
                )
            return {k: z[k] for k in keys}


def npz_keys(path: Path, expected: str) -> list[str]:
    """The array names stored in the .npz at `path`."""
    require_file(path, expected)
    with reading(path, expected), zipfile.ZipFile(path) as zf:
        return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]


def read_bytes(path: Path, expected: str) -> bytes:
    """The content of `path`, gunzipped when it starts with the gzip magic bytes."""
    require_file(path, expected)
    with reading(path, expected):
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            return f.read()
