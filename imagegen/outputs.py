"""Checking where a command will write before it does any work (image formats by extension,
writable folders), and naming per-input outputs.

A command checks its output paths first, so that a mistake costs no sampling time and leaves
nothing behind; the checks create nothing (a probe file is made and removed at once).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ImagegenError

#: Output file extensions and the format each writes (JPEG at quality 95, WebP lossless).
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
           ".webp": "WEBP"}


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format named by ``path``'s extension (``x.jpg`` -> ``JPEG``); ValueError listing
    the supported extensions for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {Path(path).name}: name the image file {', '.join(FORMATS)}")
    return FORMATS[suffix]


def check_output_file(path: Path, option: str) -> None:
    """Raise ``ImagegenError`` (naming ``option``) unless an image can be written at ``path``: its
    extension names a supported format and the folder it goes in is, or can be made, writable."""
    try:
        image_format(path)
    except ValueError as e:
        raise ImagegenError(f"{option} {path}: {e}") from None
    check_name(path, option)
    if path.is_dir():
        raise ImagegenError(f"{option} {path} is a directory: give an image file name")
    _check_folder(path.parent, option, path)


def check_name(path: Path, option: str) -> None:
    """Raise ``ImagegenError`` (naming ``option``) if ``path``'s file name is longer than its file system
    takes (255 bytes on most)."""
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists():
        folder = folder.parent
    try:
        most = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        most = 255
    if len(os.fsencode(path.name)) > most:
        raise ImagegenError(f"{option}: the file name {path.name[:40]}... is {len(os.fsencode(path.name))} "
                            f"bytes long, more than the {most} its file system takes: choose a shorter one")


def check_output_dir(path: Path, option: str) -> None:
    """Raise ``ImagegenError`` (naming ``option``) unless ``path`` is, or can be made, a writable
    directory."""
    check_name(path, option)
    if path.exists() and not path.is_dir():
        raise ImagegenError(f"{option} {path} is a file, not a directory: give a directory")
    _check_folder(path, option, path)


def _check_folder(folder: Path, option: str, given: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a directory we can write in."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ImagegenError(f"{option} {given}: {existing} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ImagegenError(f"{option} {given}: cannot write in {existing} ({e.strerror or e}); "
                            f"choose another {option}") from None


def unique_stems(paths: list[Path]) -> list[str]:
    """One output name stem per input path: its file stem, with ``-2``, ``-3``, ... added to
    repeats so that no two coincide, even on a case-insensitive file system
    (``[a/x.png, b/x.jpg, X.png] -> [x, x-2, X-3]``)."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems
