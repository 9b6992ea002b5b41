"""Training checkpoints, ``RUN/checkpoints/step_N/``: the full training state as data, never code.

A checkpoint holds ``model.safetensors`` (the weights), ``optimizer.safetensors``, ``ema.safetensors``
(if the run keeps an EMA), ``rng.safetensors`` (every process's generators, one row per process) and
``scaler.safetensors`` (fp16 only), all ``imagegen.statefile`` files but the weights, plus
``trainer.json``: the step, the bookkeeping of the loop and a SHA-256 manifest of the other files. It is
written into a temporary folder, flushed and renamed into place; ``read`` checks the manifest before it
parses a byte, so a truncated, corrupt or swapped file is reported, not loaded.

Checkpoints of the earlier accelerate ``save_state`` layout (``optimizer.bin``, ``custom_checkpoint_*.pkl``,
``random_states_*.pkl``) are read with ``torch.load(weights_only=True)``: tensors and plain containers
only, plus the NumPy array type their RNG files need; nothing in them can run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import durable, statefile
from .errors import ImagegenError

FORMAT = "imagegen.checkpoint/1"
_NAME = re.compile(r"step_(\d+)")


class CheckpointError(ImagegenError):
    """A training checkpoint that cannot be used: incomplete, corrupt, changed or not data."""


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly from ``step``. ``rng`` maps a generator name to a
    ``(processes, n)`` uint8 tensor, row ``r`` for process ``r``; ``loop`` is the trainer's JSON
    bookkeeping (e.g. the metrics window, the last eval)."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    ema: dict[str, torch.Tensor] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    scaler: dict | None = None
    loop: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False  # read from the accelerate layout


def directory_for(root: Path, step: int) -> Path:
    """``root/step_00000N``."""
    return root / f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The checkpoint folders under ``root`` (``step_N``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def write(root: str | os.PathLike, state: TrainingState) -> Path:
    """Write ``state`` to ``root/step_N`` atomically (a kill or a full disk leaves the old checkpoints and
    at most a temporary that ``durable.remove_temporaries`` clears); returns the folder.
    Raises a one-line ``ImagegenError`` if it cannot be written."""
    target = directory_for(Path(root), state.step)
    pieces = {"optimizer": state.optimizer, "ema": state.ema, "rng": state.rng, "scaler": state.scaler}
    with durable.atomic_directory(target) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.model.items()},
                  str(tmp / "model.safetensors"))
        for name, value in pieces.items():
            if value is not None:
                statefile.save(value, tmp / f"{name}.safetensors", step=state.step)
        files = {p.name: _digest(p) for p in sorted(tmp.iterdir())}
        record = {"format": FORMAT, "step": state.step, "files": files, "loop": state.loop}
        (tmp / "trainer.json").write_text(json.dumps(record, indent=1) + "\n")
    return target


def read(directory: str | os.PathLike) -> TrainingState:
    """The state in a checkpoint folder (either layout), tensors on the CPU. Raises a one-line
    ``CheckpointError`` saying what is wrong with it."""
    directory = Path(directory)
    try:
        record = json.loads((directory / "trainer.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"trainer.json is missing or unreadable ({durable.reason(e)})") from None
    except RecursionError:
        raise CheckpointError("trainer.json is nested too deeply") from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise CheckpointError("trainer.json does not record a step")
    if f"step_{record['step']:08d}" != directory.name:
        raise CheckpointError(f"trainer.json says step {record['step']}, not that of {directory.name}")
    if "format" not in record and (directory / "optimizer.bin").exists():
        return _read_legacy(directory, record["step"])
    if record.get("format") != FORMAT or not isinstance(record.get("files"), dict):
        raise CheckpointError(f"trainer.json is of an unknown format {record.get('format')!r}")
    files = record["files"]
    for required in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        if required not in files:
            raise CheckpointError(f"the manifest lacks {required}")
    for name, expected in files.items():
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise CheckpointError(f"the manifest names a bad file {str(name)[:40]!r}")
        if not (directory / name).is_file():
            raise CheckpointError(f"{name} is missing")
        if _digest(directory / name) != expected:
            raise CheckpointError(f"{name} does not match its checksum (truncated, corrupt or replaced)")
    try:
        model = _load_weights(directory / "model.safetensors")
        pieces = {name: statefile.load(directory / f"{name}.safetensors")[0]
                  for name in ("optimizer", "ema", "rng", "scaler") if f"{name}.safetensors" in files}
    except statefile.StateFileError as e:
        raise CheckpointError(str(e)) from None
    loop = record.get("loop")
    state = TrainingState(step=record["step"], model=model, optimizer=pieces["optimizer"],
                          ema=pieces.get("ema"), rng=pieces["rng"], scaler=pieces.get("scaler"),
                          loop=loop if isinstance(loop, dict) else {})
    _check_kinds(state)
    return state


def _check_kinds(state: TrainingState) -> None:
    """``CheckpointError`` unless each piece of ``state`` is what ``write`` stores: the optimizer a
    ``state_dict`` (``state`` and ``param_groups``), the EMA named tensors, each generator state a
    ``(processes, n)`` uint8 tensor, the scaler a dict. (Whether they fit the model is the trainer's
    check.)"""
    opt = state.optimizer
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict)
            and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) for g in opt["param_groups"])):
        raise CheckpointError("the optimizer file does not hold an optimizer state")
    if state.ema is not None and not (isinstance(state.ema, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.ema.items())):
        raise CheckpointError("the EMA file does not hold named tensors")
    rows = state.rng.values() if isinstance(state.rng, dict) else [None]
    if not all(isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.ndim == 2 for v in rows):
        raise CheckpointError("the generator file does not hold generator states (uint8, a row a process)")
    if state.scaler is not None and not isinstance(state.scaler, dict):
        raise CheckpointError("the gradient-scaler file does not hold a scaler state")


def _digest(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A plain safetensors file's tensors; raises ``StateFileError``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors' own errors and OSError
        raise statefile.StateFileError(f"{path.name} is not a readable safetensors file "
                                       f"({durable.reason(e)})") from None


# --- the accelerate layout of earlier versions ---------------------------------------------------------
# np.random.get_state() as accelerate pickled it: an ndarray of uint32 (rebuilt by _reconstruct).
_NUMPY_GLOBALS = [np.ndarray, np.dtype, getattr(np, "_core", np.core).multiarray._reconstruct,
                  type(np.dtype(np.uint32))]


def _torch_load(path: Path, numpy: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of an accelerate file; nothing but tensors, containers,
    numbers (and with ``numpy`` uint32 arrays) is built. Raises ``CheckpointError``."""
    allow = torch.serialization.safe_globals(_NUMPY_GLOBALS) if numpy else contextlib.nullcontext()
    try:
        with allow:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path.name} holds objects other than tensors and numbers; not loaded, "
                              "as loading it could run code") from None
    except Exception as e:  # truncated zip, EOF, bad archive: torch raises many kinds
        raise CheckpointError(f"{path.name} is unreadable ({durable.reason(e)})") from None


def _read_legacy(directory: Path, step: int) -> TrainingState:
    """Convert an accelerate ``save_state`` checkpoint (scheduler state is not needed: the learning rate
    is a function of the step)."""
    try:
        model = _load_weights(directory / "model.safetensors")
    except statefile.StateFileError as e:
        raise CheckpointError(str(e)) from None
    optimizer = _torch_load(directory / "optimizer.bin")
    if not isinstance(optimizer, dict) or "state" not in optimizer:
        raise CheckpointError("optimizer.bin does not hold an optimizer state")
    ema = None
    for path in sorted(directory.glob("custom_checkpoint_*.pkl")):
        content = _torch_load(path)
        if isinstance(content, dict) and "n_averaged" in content:
            ema = content
    rows: dict[str, list[torch.Tensor]] = {}
    files = sorted(directory.glob("random_states_*.pkl"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    for rank, path in enumerate(files):
        states = _torch_load(path, numpy=True)
        if not isinstance(states, dict) or not isinstance(states.get("torch_manual_seed"), torch.Tensor):
            raise CheckpointError(f"{path.name} does not hold random states")
        rows.setdefault("cpu", []).append(states["torch_manual_seed"])
        cuda = states.get("torch_cuda_manual_seed")
        if isinstance(cuda, list) and cuda:
            rows.setdefault("cuda", []).append(cuda[rank % len(cuda)])
    scaler = _torch_load(directory / "scaler.pt") if (directory / "scaler.pt").exists() else None
    try:
        rng = {k: torch.stack(v) for k, v in rows.items()}
    except RuntimeError:
        raise CheckpointError("the random_states files hold generator states of different sizes") from None
    state = TrainingState(step=step, model=model, optimizer=optimizer, ema=ema, rng=rng, scaler=scaler,
                          legacy=True)
    _check_kinds(state)
    return state
