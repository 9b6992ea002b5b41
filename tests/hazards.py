"""What the fault tests throw at files: pickle payloads, a full disk, and a way to see nothing changed."""

from __future__ import annotations

import contextlib
import pickle
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import torch


class Payload:
    """Unpickling this creates ``marker``: the stand-in for code a crafted file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: Path, marker: Path, kind: str) -> None:
    """Replace ``path`` with a payload: a raw pickle, or a ``torch.save`` archive (as accelerate's files)."""
    path.unlink(missing_ok=True)
    if kind == "pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save(Payload(marker), path)


@contextlib.contextmanager
def disk_full_after(nbytes: int) -> Iterator[None]:
    """Writes past ``nbytes`` of any file fail (EFBIG, 'File too large'), as they would on a full disk."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: a file's bytes, a link's target, '<dir>' for a folder."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = f"-> {p.readlink()}" if p.is_symlink() else "<dir>" if p.is_dir() else p.read_bytes()
    return out
