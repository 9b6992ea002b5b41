"""Exported models: ``model.safetensors`` (weights) plus ``config.json`` (``build_model`` arguments).

``load(path_or_name)`` takes such a directory or the name of a shipped checkpoint (a folder of
``checkpoints/``); ``load()`` with no argument gives the shipped default.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ImagegenError
from .models import AutoregressiveModel, build_model

DEFAULT = "mnist_gated_pixelcnn"
DEFAULT_UPSCALER = "mnist_sr_gated_pixelcnn"
_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_dir() -> Path:
    """The folder of shipped checkpoints: inside the installed package, or the repository's."""
    for candidate in (_PACKAGE_DIR / "checkpoints", _PACKAGE_DIR.parent / "checkpoints"):
        if candidate.is_dir():
            return candidate
    return _PACKAGE_DIR / "checkpoints"


def shipped() -> list[str]:
    """Names of the shipped checkpoints."""
    root = shipped_dir()
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def resolve(path_or_name: str | os.PathLike | None = None) -> Path:
    """A checkpoint directory for a path or shipped name (None: the default)."""
    if path_or_name is None:
        path_or_name = DEFAULT
    path = Path(path_or_name)
    if (path / "config.json").is_file():
        return path
    if (shipped_dir() / str(path_or_name) / "config.json").is_file():
        return shipped_dir() / str(path_or_name)
    names = ", ".join(shipped()) or "none"
    raise ImagegenError(f"no checkpoint at {path_or_name}: give a directory holding model.safetensors and "
                        f"config.json, or a shipped name ({names})")


def read_info(path_or_name: str | os.PathLike | None = None) -> dict:
    """The checkpoint's ``config.json``: ``{"model": build_model kwargs, ...metadata}``."""
    path = resolve(path_or_name) / "config.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImagegenError(f"cannot read {path}: {e}") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict) or "name" not in info["model"]:
        raise ImagegenError(f"{path} is not a checkpoint config: it needs a \"model\" object with a \"name\"")
    return info


def load(path_or_name: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> AutoregressiveModel:
    """Build the checkpoint's model and load its weights; returned in eval mode on ``device``, its
    parameters in ``dtype`` (bfloat16 samples faster; bits/dim are measured in float32)."""
    directory = resolve(path_or_name)
    info = read_info(directory)
    kwargs = dict(info["model"])
    try:
        model = build_model(kwargs.pop("name"), **kwargs)
    except ValueError as e:
        raise ImagegenError(f"{directory / 'config.json'} describes no valid model: {e}") from None
    try:
        state = load_file(directory / "model.safetensors", device=str(device))
    except (OSError, SafetensorError) as e:
        raise ImagegenError(f"cannot read weights {directory / 'model.safetensors'}: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape than the config's model has
        first = next((line.strip() for line in str(e).splitlines() if "mismatch" in line), str(e))
        raise ImagegenError(f"{directory}: the weights do not fit its config.json ({first})") from None
    if missing or unexpected:
        raise ImagegenError(f"{directory} does not match its config (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    return model.to(device, dtype).eval()


def save(model: AutoregressiveModel, directory: str | os.PathLike, **metadata) -> Path:
    """Write ``model`` (weights + config) to ``directory``, replacing it whole or not at all.

    ``metadata`` (JSON-serialisable: dataset, bits/dim, ...) is stored beside the config.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(directory) as tmp:
        save_file(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps({"model": model.config, **metadata}, indent=2) + "\n")
    return Path(directory)


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh sibling folder to fill; on success it replaces ``directory`` by renames,
    so readers see the old or the new contents, never a half-written mix. On error it is removed."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        yield tmp
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
