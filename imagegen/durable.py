"""Writing so that a crash, a full disk or a concurrent reader sees the old contents or the new, never
a mix: fill a temporary sibling, flush it to disk, rename it over the target; on any error remove it.

Temporaries are named ``.<name>.tmp-<pid>-<random><suffix>``, so ``remove_temporaries`` can clear
those a killed process left. Everything is created with the permissions the umask allows (as ``open``
and ``mkdir`` do), not the 0600/0700 of ``tempfile``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from .errors import WriteError

# What a failed serialisation raises: OSError (full disk, permissions), RuntimeError (torch.save's
# "enforce fail at inline_container.cc"), SafetensorError.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)

TEMP_MARK = ".tmp-"


_NAME_ROOM = 100  # bytes of the target's name kept in a temporary's: the rest of the name must fit too


def temp_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """An unused hidden name beside ``path``, ending in ``suffix`` (image writers look at it). A long
    name is shortened in it, so that any name the file system takes has a temporary it takes too."""
    path = Path(path)
    name = path.name
    while len(os.fsencode(name)) > _NAME_ROOM:
        name = name[:-1]
    return path.with_name(f".{name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix[:16]}")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of ``temp_sibling``'s names."""
    return name.startswith(".") and TEMP_MARK in name


def reason(error: BaseException) -> str:
    """A one-line reason for a failed write or read (``OSError``: its strerror, e.g. 'No space left on
    device'; anything else: its message's first line)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def write_error(path: str | os.PathLike, error: BaseException) -> WriteError:
    """The one-line error for a failed write of ``path``, saying so when the disk is full."""
    full = isinstance(error, OSError) and error.errno in _FULL
    hint = " (the disk is full or a size limit is hit)" if full else ""
    return WriteError(f"cannot write {path}: {reason(error)}{hint}")


def fsync(path: str | os.PathLike) -> None:
    """Flush a file's contents, or a directory's entries, to disk (directories: POSIX only)."""
    if Path(path).is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def match_umask(path: str | os.PathLike) -> None:
    """Give a file the permissions ``open`` would under the umask (some writers, e.g. safetensors',
    create files 0600)."""
    os.chmod(path, 0o666 & ~umask())


def remove(path: str | os.PathLike) -> None:
    """Remove a file, a symlink or a folder tree, if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder so that a kill midway leaves no half-deleted folder under its name: rename it to
    a temporary name first (cleared by ``remove_temporaries`` if the removal is cut short)."""
    path = Path(path)
    doomed = temp_sibling(path)
    os.replace(path, doomed)
    remove(doomed)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is flushed and renamed to ``path``.
    Write errors become one-line ``ImagegenError``s and leave nothing behind."""
    path = Path(path)
    tmp = temp_sibling(path, path.suffix)
    try:
        try:
            yield tmp
            match_umask(tmp)
            fsync(tmp)
            os.replace(tmp, path)
            fsync(path.parent)
        except WRITE_ERRORS as e:
            raise write_error(path, e) from None
    finally:
        remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh sibling folder to fill with files; on success they are flushed and it replaces
    ``directory`` by renames (an existing ``directory`` is absent for a moment between two renames; an
    error or Ctrl-C in that moment puts the old one back). On error the new folder is removed; write
    errors become one-line ``WriteError``s."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(directory)
        tmp.mkdir()
    except OSError as e:
        raise write_error(directory, e) from None
    try:
        try:
            yield tmp
            for f in tmp.iterdir():
                match_umask(f)
                fsync(f)
            fsync(tmp)
            _swap_in(tmp, directory)
        except WRITE_ERRORS as e:
            raise write_error(directory, e) from None
    finally:
        remove(tmp)


def _swap_in(new: Path, directory: Path) -> None:
    """Rename ``new`` to ``directory``, replacing what is there; if that fails or is interrupted after
    the old one was moved aside, the old one is put back."""
    old = None
    if directory.exists() or directory.is_symlink():
        old = temp_sibling(directory)
        os.replace(directory, old)
    try:
        os.replace(new, directory)
        fsync(directory.parent)
    except BaseException:
        if old is not None and not (directory.exists() or directory.is_symlink()):
            os.replace(old, directory)
        raise
    if old is not None:
        remove(old)


def remove_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove the temporaries killed writers left directly in ``directory``; returns their names."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = sorted(p for p in directory.iterdir() if is_temporary(p.name))
    for p in found:
        remove(p)
    return [p.name for p in found]
