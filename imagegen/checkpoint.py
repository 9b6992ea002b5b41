"""Exported models: ``model.safetensors`` (weights) plus ``config.json`` (``build_model`` arguments).

``load(path_or_name)`` takes such a directory or the name of a shipped checkpoint (a folder of
``checkpoints/``); ``load()`` with no argument gives the shipped default. ``save`` replaces a folder
whole or not at all; ``publish`` (what a run's export uses) swaps versions under a symlink so that a
concurrent reader never finds the model absent. Both files are data: JSON and safetensors.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.nn.modules.module import register_module_parameter_registration_hook

from . import durable
from .config import Range, check_value
from .errors import ConfigError, ImagegenError
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
    if (path / "config.yaml").is_file() or (path / "trainer.json").is_file():
        run = path if (path / "config.yaml").is_file() else path.parent.parent
        raise ImagegenError(f"{path_or_name} is a training {'run' if run == path else 'checkpoint'}, not an "
                            f"exported model: give its run's model folder, {run / 'model'}")
    names = ", ".join(shipped()) or "none"
    raise ImagegenError(f"no checkpoint at {path_or_name}: give a directory holding model.safetensors and "
                        f"config.json, or a shipped name ({names})")


def read_info(path_or_name: str | os.PathLike | None = None) -> dict:
    """The checkpoint's ``config.json``: ``{"model": build_model kwargs, ...metadata}``, checked to hold a
    ``model`` section with a ``name``; a one-line ``ImagegenError`` otherwise."""
    path = resolve(path_or_name) / "config.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImagegenError(f"cannot read {path}: {durable.reason(e)}") from None
    except RecursionError:
        raise ImagegenError(f"cannot read {path}: it is nested too deeply for a checkpoint") from None
    model = info.get("model") if isinstance(info, dict) else None
    if not (isinstance(model, dict) and isinstance(model.get("name"), str)):
        raise ImagegenError(f"{path} has no model section with a name: it is not an imagegen checkpoint")
    for key, hint in _METADATA.items():
        try:
            check_value(info.get(key), hint, key)
        except ConfigError as e:
            raise ImagegenError(f"{path}: {e}") from None
    return info


# What the metadata of config.json (written by a run's export) must be, where commands use it.
_METADATA = {"dataset": str | None, "binarize": Literal["threshold", "stochastic"] | None,
             "val_size": Annotated[int, Range(min=0)] | None, "step": Annotated[int, Range(min=0)] | None}


def load(path_or_name: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> AutoregressiveModel:
    """Build the checkpoint's model and load its weights; returned in eval mode on ``device``, its
    parameters in ``dtype`` (bfloat16 samples faster; bits/dim are measured in float32).

    A symlinked checkpoint (a run's ``model``) is resolved once, so both files come from one version;
    if that version is retired while being read (two newer exports meanwhile), the link is followed again."""
    source = resolve(path_or_name)
    for attempt in range(3):
        directory = source.resolve()
        try:
            return _load_version(directory, device, dtype)
        except ImagegenError:
            if not source.is_symlink() or source.resolve() == directory or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _load_version(directory: Path, device: str | torch.device, dtype: torch.dtype) -> AutoregressiveModel:
    info = read_info(directory)
    weights = directory / "model.safetensors"
    try:
        # One open file for the header and the tensors: a version retired meanwhile stays readable.
        with safe_open(str(weights), framework="pt", device=str(device)) as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
            model = _build(info["model"], shapes, directory)
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as e:
        raise ImagegenError(f"cannot read weights {weights}: {durable.reason(e)}") from None
    problem = mismatch(model.state_dict(), state)
    if problem:
        raise ImagegenError(f"{directory}: the weights do not match config.json ({problem})")
    model.load_state_dict(state)
    return model.to(device, dtype).eval()


def _build(config: dict, shapes: dict[str, list[int]], directory: Path) -> AutoregressiveModel:
    """The model ``config`` describes, built first without memory (on the meta device, stopped once it
    outgrows the weights file) and checked against the file's ``shapes``, then for real."""
    kwargs = dict(config)
    name = kwargs.pop("name")
    try:
        with _bounded_by(shapes, directory), torch.device("meta"):
            skeleton = build_model(name, **kwargs)
        in_file = {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}
        problem = mismatch(skeleton.state_dict(), in_file)
        if problem:
            raise ImagegenError(f"{directory}: the weights do not match config.json ({problem})")
        return build_model(name, **kwargs)
    except ImagegenError:
        raise
    except Exception as e:  # bad values reach the model's constructor; any error there is the file's
        raise ImagegenError(f"{directory / 'config.json'} does not describe a model: "
                            f"{durable.reason(e)}") from None


class _LargerThanTheWeights(Exception):
    pass


@contextlib.contextmanager
def _bounded_by(shapes: dict[str, list[int]], directory: Path) -> Iterator[None]:
    """Stop building a model (``ImagegenError``) once it has far more parameters than the weights file
    has tensors: with the meta device (sizes cost no memory) a config.json of enormous sizes or depth
    then costs neither memory nor time."""
    most, seen, builder = 2 * len(shapes) + 100, [0], threading.get_ident()

    def hook(module, name, param):  # called for every module's parameters, in every thread
        if threading.get_ident() == builder:
            seen[0] += param is not None
            if seen[0] > most:
                raise _LargerThanTheWeights

    handle = register_module_parameter_registration_hook(hook)
    try:
        yield
    except _LargerThanTheWeights:
        raise ImagegenError(f"{directory}: the weights do not match config.json (it describes a model of "
                            f"over {most} parameter tensors; the weights file holds {len(shapes)})") from None
    finally:
        handle.remove()


def mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into a module whose ``state_dict()`` is ``expected`` (missing or
    unexpected names, other shapes, integers where floats belong), in a few words; None if it fits."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [f"{k} is {tuple(state[k].shape)}, not {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    kinds = [f"{k} holds {str(state[k].dtype).removeprefix('torch.')}, not {_kind(v)} values"
             for k, v in expected.items() if k in state and _kind(state[k]) != _kind(v)]
    parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
        ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else []) + shapes[:2] + kinds[:2]
    return "; ".join(parts) or None


def _kind(t: torch.Tensor) -> str:
    """'floating', 'complex', 'boolean' or 'integer': what loading may convert within, never across."""
    return ("complex" if t.is_complex() else "floating" if t.is_floating_point()
            else "boolean" if t.dtype == torch.bool else "integer")


def save(model: AutoregressiveModel, directory: str | os.PathLike, **metadata) -> Path:
    """Write ``model`` (weights + config) to ``directory``, replacing it whole or not at all.

    ``metadata`` (JSON-serialisable: dataset, bits/dim, ...) is stored beside the config. A write that
    fails (a full disk) raises a one-line ``ImagegenError`` and leaves ``directory`` as it was.
    """
    with durable.atomic_directory(directory) as tmp:
        _write(model, tmp, metadata)
    return Path(directory)


def publish(model: AutoregressiveModel, link: str | os.PathLike, **metadata) -> Path:
    """Write ``model`` like ``save`` into a new version folder beside ``link`` (``.<name>.v-<token>``)
    and point the symlink ``link`` at it with one atomic rename: a reader of ``link`` finds a complete
    model at every moment, and the previous version stays for readers already inside it (older ones
    are removed). Where symlinks cannot be made, falls back to ``save(model, link)``."""
    link = Path(link)
    version = link.with_name(f".{link.name}.v-{secrets.token_hex(4)}")
    with durable.atomic_directory(version) as tmp:
        _write(model, tmp, metadata)
    pointer = durable.temp_sibling(link)
    try:
        os.symlink(version.name, pointer, target_is_directory=True)
    except OSError:  # no symlinks here (some filesystems, Windows without the privilege)
        durable.remove(version)
        return save(model, link, **metadata)
    previous = os.readlink(link) if link.is_symlink() else None
    try:
        if link.is_dir() and not link.is_symlink():  # a plain folder (older runs): one moment without it
            durable.remove_tree(link)
        os.replace(pointer, link)
        durable.fsync(link.parent)
    except OSError as e:
        durable.remove(pointer)
        raise durable.write_error(link, e) from None
    keep = {version.name, previous}
    for old in link.parent.glob(f".{link.name}.v-*"):
        if old.name not in keep:
            durable.remove(old)
    return link


def _write(model: AutoregressiveModel, folder: Path, metadata: dict) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model": model.config, **metadata}, indent=2) + "\n")
