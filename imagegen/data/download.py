"""Downloading MNIST and CIFAR-10 with checksum checks; files appear only once complete and verified."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from imagegen.errors import DataError

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
CIFAR10_FOLDER = "cifar-10-batches-py"
_CHUNK = 1 << 20


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
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        log.info("downloading %s to %s", url, dest)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5} (corrupted or changed); "
                f"{manual}"
            )
        os.replace(tmp, dest)
    except DataError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, HTTP, disk full
        raise DataError(f"could not download {url} ({type(e).__name__}: {one_line(e)}); {manual}") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return dest


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_mnist(directory: Path) -> None:
    """Download the four gzipped MNIST IDX files into `directory`."""
    manual = (
        f"put {', '.join(MNIST_MD5)} (from {MNIST_URL}) in {directory} yourself, "
        "or pass the path of your copy (--data)"
    )
    for name, md5 in MNIST_MD5.items():
        fetch(MNIST_URL + name, directory / name, md5, manual)


def _safe_members(tar: tarfile.TarFile, top: str, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: unsafe entry {m.name!r} in the archive; delete the file and retry")
        if parts and parts[0] == top:
            members.append(m)
    return members


def extract_cifar10(archive: Path, directory: Path) -> Path:
    """Extract cifar-10-batches-py/ from the CIFAR-10 tarball into `directory`; return that folder.

    Only plain files and folders inside cifar-10-batches-py/ are extracted, first to a temporary
    folder that is then moved into place.
    """
    target = directory / CIFAR10_FOLDER
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".cifar10-extract."))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _safe_members(tar, CIFAR10_FOLDER, archive)
            if not members:
                raise DataError(f"{archive}: no {CIFAR10_FOLDER}/ inside; expected cifar-10-python.tar.gz")
            # The members are checked above; the "data" filter (Python >= 3.10.12) checks again.
            safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **safety)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / CIFAR10_FOLDER, target)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"{archive}: cannot extract ({type(e).__name__}: {one_line(e)}); delete it and retry"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_cifar10(directory: Path) -> None:
    """Download and extract the CIFAR-10 python batches into `directory`/cifar-10-batches-py."""
    manual = (
        f"download {CIFAR10_URL} yourself and extract its {CIFAR10_FOLDER}/ folder into {directory}, "
        "or pass the path of your copy (--data)"
    )
    archive = fetch(CIFAR10_URL, directory / "cifar-10-python.tar.gz", CIFAR10_MD5, manual)
    extract_cifar10(archive, directory)
    archive.unlink()


def download_imagenet(directory: Path, size: int) -> None:
    """Downsampled ImageNet has no public URL: always raises DataError saying what to fetch by hand."""
    raise DataError(
        f"ImageNet {size}x{size} cannot be downloaded automatically: get Imagenet{size}_train_npz and "
        f"Imagenet{size}_val_npz from https://image-net.org/download-images (Downsampled ImageNet, "
        f"needs an account), unzip them into {directory} or pass their folder (--data)"
    )
