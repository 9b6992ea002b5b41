"""One writer per run directory.

``RUN/run.lock`` holds an exclusive ``flock`` for as long as a trainer writes to ``RUN``, and names the
holder (pid, host, start time) so that a second trainer can say who is there. The operating system
drops a ``flock`` when its holder dies, however it dies, so a lock file whose lock is free but that
still names a holder was left by a trainer that was killed: the next trainer takes it over and says so.
Needs a POSIX system (``fcntl``); on network filesystems, one whose ``flock`` works across hosts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import time
from pathlib import Path

from .durable import reason
from .errors import ImagegenError

NAME = "run.lock"

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


class RunBusyError(ImagegenError):
    """Another live process holds the run directory."""


class RunLock:
    """An acquired lock on a run directory; ``release()`` (or process death) gives it up."""

    def __init__(self, path: Path, fd: int, stale: dict | None):
        self.path, self._fd = path, fd
        self.stale = stale  # the holder record a killed trainer left, if any

    @classmethod
    def acquire(cls, directory: str | os.PathLike) -> RunLock:
        """Lock ``directory`` (which must exist) for this process, or raise ``RunBusyError`` naming the
        live holder."""
        if fcntl is None:
            raise ImagegenError("run directories are locked with fcntl.flock, which this system lacks")
        path = Path(directory) / NAME
        while True:
            fd = _open(path, os.O_RDWR | os.O_CREAT)
            try:
                _flock_exclusive(fd)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise busy(directory, holder) from None
            except OSError as e:
                os.close(fd)
                raise ImagegenError(f"cannot lock {path}: {reason(e)}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released (unlinked) the file between our open and flock: again
        stale = _read(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(path, fd, stale or None)

    @staticmethod
    def holder(directory: str | os.PathLike) -> dict | None:
        """The record of a live process holding ``directory``'s lock, or None if no one holds it.
        Writes nothing (a shared probe of an existing lock file)."""
        if fcntl is None:
            return None
        try:
            fd = _open(Path(directory) / NAME, os.O_RDONLY)
        except ImagegenError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read(fd) or {}
        finally:
            os.close(fd)  # also drops the probe's shared lock
        return None

    def release(self) -> None:
        """Remove the lock file and give up the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding it, so no one locks a file about to vanish
        os.close(self._fd)
        self._fd = None

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _open(path: Path, flags: int) -> int:
    """Open the lock file as a plain file: never through a symlink (a run directory from elsewhere must
    not make us write into the file it points at), never blocking on a FIFO. One-line ``ImagegenError``."""
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImagegenError(f"{path} is a symbolic link, not a lock file: remove the link (nothing was "
                                "written through it)") from None
        raise ImagegenError(f"cannot create the lock {path}: {reason(e)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImagegenError(f"{path} is not a plain file, so it cannot be the run's lock: remove it")
    return fd


def _flock_exclusive(fd: int, tries: int = 4) -> None:
    """Lock ``fd`` exclusively without waiting on a holder; a few short retries let a ``holder()`` probe
    (a shared lock held for microseconds) pass. Raises ``BlockingIOError`` if it stays locked."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.05)


def busy(directory: str | os.PathLike, holder: dict) -> RunBusyError:
    """The error for a run directory that ``holder`` has locked."""
    return RunBusyError(f"{directory} is in use by {describe(holder)}: wait for it to finish or choose "
                        "another --output-dir")


def _read(fd: int) -> dict:
    """The holder record in the lock file, or {} if it is empty or unreadable."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def describe(holder: dict) -> str:
    """'pid 123 on host since 2024-01-01 12:00:00 +0000' (or 'another process' if unknown)."""
    if not holder.get("pid"):
        return "another process"
    return f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"
