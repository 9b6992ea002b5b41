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

# What reading a damaged or wrong file can raise, from numpy, zipfile, gzip, pickle and Pillow (SyntaxError
# for some malformed images).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, SyntaxError, struct.error,
    zlib.error, zipfile.BadZipFile, gzip.BadGzipFile, pickle.UnpicklingError)


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


def load_npz(path: Path, *key_sets: list[str], expected: str) -> dict[str, np.ndarray]:
    """The arrays of the first of ``key_sets`` whose first name the .npz at `path` holds (else of the
    last, so that the error names what it lacks); no pickles. DataError if absent or corrupt."""
    require_file(path, expected)
    with reading(path, expected):
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: is a single .npy array, expected {expected}")
        with z:
            keys = next((ks for ks in key_sets if ks[0] in z.files), key_sets[-1])
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"{path}: has arrays {sorted(z.files)} but lacks {missing}; expected "
                                f"{expected}")
            return {k: z[k] for k in keys}


def read_bytes(path: Path, expected: str) -> bytes:
    """The content of `path`, gunzipped when it starts with the gzip magic bytes."""
    require_file(path, expected)
    with reading(path, expected), open(path, "rb") as f:
        raw = f.read()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
