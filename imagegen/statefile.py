"""Nested training state (dicts, lists, tuples, numbers, strings, None and tensors, e.g. an optimizer's
``state_dict``) as one safetensors file: the tensors as tensors, the structure as JSON in the file's
metadata. Reading builds nothing but those types, so a state file is data, never code (unlike a pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "imagegen.state/1"
_SCALARS = (type(None), bool, int, float, str)


class StateFileError(ValueError):
    """A state file that cannot be read or does not hold what a state file holds."""


def pack(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``obj`` -> (JSON-able structure, tensors by key). Each node of the structure is a one-key dict:
    ``{"t": tensor key}``, ``{"v": scalar}``, ``{"l": [nodes]}``, ``{"u": [nodes]}`` (a tuple) or
    ``{"d": [[scalar key, node], ...]}``. Raises ``TypeError`` for any other type."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().cpu().contiguous()
            return {"t": key}
        if isinstance(x, _SCALARS):
            return {"v": x}
        if isinstance(x, list | tuple):
            return {"l" if isinstance(x, list) else "u": [walk(v) for v in x]}
        if isinstance(x, dict):
            for k in x:
                if not isinstance(k, _SCALARS):
                    raise TypeError(f"cannot store a dict key of type {type(k).__name__} in a state file")
            return {"d": [[k, walk(v)] for k, v in x.items()]}
        raise TypeError(f"cannot store a {type(x).__name__} in a state file")

    return walk(obj), tensors


def unpack(structure: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``pack``; raises ``StateFileError`` for anything ``pack`` does not write."""

    def walk(node: Any) -> Any:
        if not isinstance(node, dict) or len(node) != 1:
            raise StateFileError(f"malformed structure node {str(node)[:60]}")
        (kind, value), = node.items()
        if kind == "t" and isinstance(value, str) and value in tensors:
            return tensors[value]
        if kind == "v" and isinstance(value, _SCALARS):
            return value
        if kind in ("l", "u") and isinstance(value, list):
            items = [walk(v) for v in value]
            return items if kind == "l" else tuple(items)
        if kind == "d" and isinstance(value, list):
            out = {}
            for item in value:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], _SCALARS)):
                    raise StateFileError(f"malformed dict entry {str(item)[:60]}")
                out[item[0]] = walk(item[1])
            return out
        raise StateFileError(f"malformed structure node {str(node)[:60]}")

    try:
        return walk(structure)
    except RecursionError:
        raise StateFileError("structure nested too deeply") from None


def save(obj: Any, path: str | os.PathLike, **info: Any) -> None:
    """Write ``obj`` (see ``pack``) to ``path``; ``info`` (JSON-able) is stored beside it."""
    structure, tensors = pack(obj)
    # One metadata entry: safetensors keeps metadata in a hash map, whose order would vary between runs.
    meta = {"imagegen": json.dumps({"format": FORMAT, "structure": structure, "info": info})}
    save_file(tensors, str(path), metadata=meta)


def load(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """``(obj, info)`` of a file ``save`` wrote, tensors on the CPU. Raises ``StateFileError`` (one
    line) for a file that is not one: truncated, another format, a pickle, a malformed structure."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own errors and OSError; none is worth more than a line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StateFileError(f"{path.name} is not a readable safetensors file ({first})") from None
    try:
        header = json.loads(meta["imagegen"])
    except (KeyError, json.JSONDecodeError, RecursionError):
        raise StateFileError(f"{path.name} is not an imagegen state file") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StateFileError(f"{path.name} is not an imagegen state file")
    structure, info = header.get("structure"), header.get("info")
    if not isinstance(info, dict):
        raise StateFileError(f"{path.name} has malformed metadata")
    try:
        return unpack(structure, tensors), info
    except StateFileError as e:
        raise StateFileError(f"{path.name}: {e}") from None
