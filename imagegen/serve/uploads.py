"""Images a page sends: an uploaded file (base64 in the request) or a shipped test digit, read by the
CLI's own ``imagegen.imageio.read_image`` from a file in the server's temporary directory.

An upload is bounded twice before it is decoded: its size in bytes and its width x height (read
from the file's header). Whatever else is wrong with it, ``read_image`` says, in the CLI's words,
naming the file as the user named it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import shutil
import warnings
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError
from ..imageio import read_image
from .limits import Limits, Refused

DIGITS = Path(__file__).resolve().parent / "static" / "digits"


def digits() -> list[str]:
    """Names of the shipped test digits (``static/digits/<name>.png``)."""
    return sorted((p.stem for p in DIGITS.glob("*.png")), key=lambda name: (len(name), name))


def safe_name(name: object) -> str:
    """A file name from the page, reduced to letters, digits, ``._-`` (at most 64; ``upload`` if empty)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(name or "")).name)[:64].lstrip(".")
    return cleaned or "upload"


def decode(data: object, limits: Limits) -> bytes:
    """The bytes of a base64 upload (a ``data:`` URL or bare base64); ``Refused`` when it is not base64
    (400) or larger than ``limits.max_upload_bytes`` (413)."""
    if not isinstance(data, str):
        raise Refused(400, "the image must be sent as base64 text")
    text = data.split(",", 1)[1] if data.startswith("data:") else data
    if len(text) * 3 // 4 > limits.max_upload_bytes + 3:
        raise Refused(413, too_large(limits))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "the image is not valid base64: upload the file again") from None
    if len(raw) > limits.max_upload_bytes:
        raise Refused(413, too_large(limits))
    return raw


def too_large(limits: Limits) -> str:
    return f"the file is larger than {limits.max_upload_bytes / 2**20:g} MiB, the most this server takes"


def read_upload(request: dict, folder: Path, limits: Limits, channels: int, size: tuple[int, int],
                what: str = "image") -> tuple[torch.Tensor, str]:
    """The image of ``request`` (``{"digit": name}`` or ``{"image": base64, "filename": ...}``, plus
    ``"resize"``) as uint8 ``(channels, H, W)`` for ``size = (H, W)``, and its name. The upload is
    written in a fresh folder under ``folder`` and removed after reading; ``Refused`` (400, 413) with
    the reason when it is not an image of that size (or ``resize`` is off), too big, or missing."""
    resize = bool(request.get("resize"))
    if request.get("digit") is not None:
        name = request["digit"]
        if name not in digits():
            raise Refused(400, f"no test digit {name!r}: choose one of {', '.join(digits())}")
        return _read(DIGITS / f"{name}.png", channels, size, resize, what, DIGITS), f"{name}.png"
    if request.get("image") is None:
        raise Refused(400, f"no {what}: upload a file or pick a test digit")
    raw, name = decode(request["image"], limits), safe_name(request.get("filename"))
    place = folder / secrets.token_hex(8)
    place.mkdir(parents=True)
    try:
        path = place / name
        path.write_bytes(raw)
        _check_pixels(path, limits)
        return _read(path, channels, size, resize, what, place), name
    finally:
        shutil.rmtree(place, ignore_errors=True)


def _check_pixels(path: Path, limits: Limits) -> None:
    """``Refused`` (413) when the file's header says it has more than ``limits.max_pixels`` pixels; a
    file whose header cannot be read is left to ``read_image`` to describe."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                width, height = im.size
    except Exception:  # not an image at all: read_image says so in the CLI's words
        return
    if width * height > limits.max_pixels:
        raise Refused(413, f"{path.name} is {width}x{height} pixels, more than the {limits.max_pixels:,} "
                           "this server decodes: upload a smaller image")


def _read(path: Path, channels: int, size: tuple[int, int], resize: bool, what: str, place: Path
          ) -> torch.Tensor:
    try:
        return read_image(path, channels, size, resize, what)
    except DataError as e:  # name the file as the user named it, not where the server put it
        raise Refused(400, str(e).replace(f"{place}/", "").replace("pass --resize", "tick resize")) from None
