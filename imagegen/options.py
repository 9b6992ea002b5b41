"""Option types and checks of the ``imagegen`` command: every numeric option is range-checked when
it is parsed (click's ``FloatRange`` lets NaN through), and ``--device`` before any work."""

from __future__ import annotations

import math

import click

from .errors import ImagegenError

#: Seeds are unsigned 64-bit integers, as torch's generators take them.
SEED = click.IntRange(0, 2**64 - 1)


class Number(click.ParamType):
    """A finite float in ``[low, high]``; with ``tiny``, a positive value must be at least ``tiny``
    (a temperature of 1e-300 cannot be divided by: 0 is the way to ask for the most likely value)."""

    name = "float"

    def __init__(self, low: float, high: float, tiny: float | None = None):
        self.low, self.high, self.tiny = low, high, tiny

    def convert(self, value, param, ctx) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x) or not self.low <= x <= self.high:
            self.fail(f"{value} is not a number between {self.low:g} and {self.high:g}", param, ctx)
        if self.tiny is not None and 0 < x < self.tiny:
            self.fail(f"{value} is too small to compute with: use 0 (the most likely value) or a "
                      f"value >= {self.tiny:g}", param, ctx)
        return x

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{self.low:g}-{self.high:g}]"


TEMPERATURE = Number(0, 100, tiny=1e-4)


def check_device(device: str) -> str:
    """``device`` if torch has it here (cpu; cuda[:N] or mps when present), else ``ImagegenError``."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ImagegenError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if d.type == "cpu":
        return device
    if d.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ImagegenError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        if d.index is not None and d.index >= count:
            raise ImagegenError(f"--device {device}: there are {count} GPUs, cuda:0..cuda:{count - 1}")
        return device
    if d.type == "mps" and torch.backends.mps.is_available():
        return device
    raise ImagegenError(f"--device {device}: not available here; use --device cpu")
