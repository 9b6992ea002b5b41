"""Downloading MNIST and CIFAR-10 with checksum checks; files appear only once complete and verified."""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import tarfile
import urllib.request
from pathlib import Path

from imagegen import durable
from imagegen.errors import DataError

from .cifar import FOLDER_NAME
from .files import one_line

log = logging.getLogger(__name__)

TIMEOUT_S = 60.0
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def fetch(url: str, dest: Path, md5: str, manual: str, timeout: float = TIMEOUT_S) -> Path:
    """Download `url` to the file `dest`, checking its md5; return dest.

    The bytes go to a temporary file next to dest that replaces it only when the checksum
    matches, so dest is never half-written. Any failure raises DataError naming the URL and
    `manual`, a hint on where to put the file by hand.
    """
    if dest.is_file() and _md5(dest) == md5:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest.parent} for the download ({one_line(e)}); {manual}") from e
    log.info("downloading %s to %s", url, dest)
    with durable.atomic_file(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, HTTP, disk full
            raise DataError(f"could not download {url} ({type(e).__name__}: {one_line(e)}); {manual}") from e
        if (got := _md5(tmp)) != md5:
            raise DataError(f"download of {url} has md5 {got}, expected {md5} (corrupted or changed); "
                            f"{manual}")
    return dest


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mnist(directory: Path) -> None:
    """Download the four gzipped MNIST IDX files into `directory`."""
    manual = (
        f"put {', '.join(MNIST_MD5)} (from {MNIST_URL}) in {directory} yourself, "
        "or pass the path of your copy (--data)"
    )
    for name, md5 in MNIST_MD5.items():
        fetch(MNIST_URL + name, directory / name, md5, manual)


def cifar10(directory: Path) -> None:
    """Download the CIFAR-10 python batches and extract them into `directory`/cifar-10-batches-py.

    The folder appears whole or not at all; an entry reaching outside it is refused (tarfile's "data"
    filter)."""
    manual = (
        f"download {CIFAR10_URL} yourself and extract its {FOLDER_NAME}/ folder into {directory}, "
        "or pass the path of your copy (--data)"
    )
    if not hasattr(tarfile, "data_filter"):
        raise DataError(f"extracting CIFAR-10 safely needs Python >= 3.10.12 (tarfile's data filter): "
                        f"{manual}")
    archive = fetch(CIFAR10_URL, directory / "cifar-10-python.tar.gz", CIFAR10_MD5, manual)
    top = FOLDER_NAME + "/"
    with durable.atomic_directory(directory / FOLDER_NAME) as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m.replace(name=m.name[len(top):]) for m in tar if m.name.startswith(top)]
                if not members:
                    raise DataError(f"{archive}: no {top} inside; expected cifar-10-python.tar.gz")
                tar.extractall(tmp, members=members, filter="data")
        except tarfile.FilterError as e:
            raise DataError(f"{archive}: unsafe entry ({one_line(e)}); delete the file and retry") from e
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(
                f"{archive}: cannot extract ({type(e).__name__}: {one_line(e)}); delete it and retry") from e
    archive.unlink()
