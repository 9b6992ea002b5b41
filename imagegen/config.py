"""Run configuration: dataclasses, YAML loading and ``--set a.b=c`` overrides.

A config file has three sections. ``model:`` is exactly the keyword arguments of
``imagegen.models.build_model`` (``name`` plus hparams; ``channels``, ``image_size``, ``levels``
and ``num_classes`` default to the dataset's). ``data:`` and ``train:`` are ``DataConfig`` and
``TrainConfig`` below.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, as ``Annotated[int, Range(min=1)]``: ``min``/``max`` inclusive,
    ``above``/``below`` exclusive."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None

    def holds(self, x: float) -> bool:
        return ((self.min is None or x >= self.min) and (self.max is None or x <= self.max)
                and (self.above is None or x > self.above) and (self.below is None or x < self.below))

    def __str__(self) -> str:
        pairs = ((">=", self.min), (">", self.above), ("<=", self.max), ("<", self.below))
        return " and ".join(f"{op} {v:g}" if isinstance(v, float) else f"{op} {v}"
                            for op, v in pairs if v is not None)


#: The most values a config may hold, YAML aliases counted each time they are used: a config holds
#: dozens, and a "billion laughs" file of nested aliases would expand to billions.
MAX_VALUES = 10_000
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80


def short(value: Any) -> str:
    """``repr(value)`` cut short (a few items per list, a few levels deep), for messages."""
    return _SHORT.repr(value)


def check_size(d: Any, limit: int = MAX_VALUES) -> None:
    """``ConfigError`` if the nested lists and mappings of ``d`` hold more than ``limit`` values, counting
    a shared (aliased) one each time it appears; stops counting at the limit, without recursion."""
    stack, seen = [d], 0
    while stack:
        x = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(f"the config holds more than {limit} values (nested YAML aliases?): a config "
                              "holds a few dozen settings")
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)


PositiveInt = Annotated[int, Range(min=1)]
Count = Annotated[int, Range(min=0)]
Split = Literal["train", "val", "test"]
Beta = Annotated[float, Range(min=0, below=1)]


class Validated:
    """Mixin for a config section dataclass: on construction every field is checked against its
    type hint (``int``, ``float``, ``bool``, ``str``, ``Literal`` choices, ``Range`` bounds,
    ``tuple[...]``, ``X | None``) and coerced from YAML's lax forms (``3e-4`` is a string to YAML,
    ``[0.9, 0.99]`` a list). A bad value raises ``ConfigError`` naming ``<SECTION>.<field>``."""

    SECTION: ClassVar[str]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self), include_extras=True)
        for f in dataclasses.fields(self):
            key = f"{self.SECTION}.{f.name}"
            setattr(self, f.name, check_value(getattr(self, f.name), hints[f.name], key))


@dataclass
class DataConfig(Validated):
    """Which dataset to train and evaluate on (see ``imagegen.data.load_dataset``)."""

    SECTION: ClassVar[str] = "data"
    name: str = "mnist"
    path: str | None = None  # file or folder; None: $IMAGEGEN_DATA/<name> (default ~/.cache/imagegen/<name>)
    binarize: Literal["threshold", "stochastic"] | None = None  # stochastic: re-drawn every batch
    image_size: PositiveInt | None = None  # resize (folder datasets)
    download: bool = False
    val_size: Count | None = None  # images carved out of train for "val"; None: the dataset's default
    train_split: Split = "train"
    eval_split: Split = "val"  # periodic eval, early stopping and checkpoint choice; test is for the table
    train_limit: PositiveInt | None = None  # use only the first N training images (smoke tests)
    class_conditional: bool = False  # feed labels to the model as ``cond``


@dataclass
class TrainConfig(Validated):
    """Optimisation, precision and bookkeeping of ``imagegen train``."""

    SECTION: ClassVar[str] = "train"
    batch_size: PositiveInt = 32  # per process, per accumulation micro-step
    grad_accum: PositiveInt = 1
    max_steps: PositiveInt = 10_000  # optimiser steps
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: Annotated[float, Range(above=0)] = 1e-3
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    weight_decay: Annotated[float, Range(min=0)] = 0.0
    schedule: Literal["cosine", "rsqrt", "constant"] = "cosine"  # each after a linear warmup
    warmup_steps: Count = 500
    min_lr_ratio: Annotated[float, Range(min=0, max=1)] = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: Annotated[float, Range(above=0)] | None = 1.0  # None: no clipping
    ema_decay: Annotated[float, Range(above=0, below=1)] | None = 0.999  # None: no EMA; eval, samples
    # and export use the EMA weights
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # accelerate
    channels_last: bool = False
    seed: Annotated[int, Range(min=0, max=2**32 - 1)] = 0  # numpy's seeds are 32-bit
    log_every: PositiveInt = 50
    eval_every: PositiveInt = 1000
    eval_images: PositiveInt | None = 2000  # None: the whole eval split
    eval_batch_size: PositiveInt = 100
    sample_every: Count = 1000  # 0: no sample grids
    num_samples: Annotated[int, Range(min=1, max=10_000)] = 16
    checkpoint_every: PositiveInt = 1000
    keep_checkpoints: PositiveInt = 2
    keep_best: bool = True  # also export the eval weights of the best eval so far as RUN/best
    patience: PositiveInt | None = None  # stop after this many evals without a new best (None: never)


@dataclass
class Config:
    model: dict[str, Any] = field(default_factory=lambda: {"name": "gated_pixelcnn"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"]["betas"] = list(self.train.betas)
        return d


def describe(hint: Any) -> str:
    """What a value of type ``hint`` must be, in words: ``int`` with ``Range(min=1)`` -> 'an integer >= 1'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        bounds = " and ".join(str(r) for r in args[1:] if isinstance(r, Range))
        return f"{describe(args[0])} {bounds}".strip()
    if origin in (Union, types.UnionType):
        return " or ".join(["null"] + [describe(a) for a in args if a is not type(None)])
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} values, each {describe(args[0])}"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}[hint]


def check_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` and coerced (see ``Validated``); raises
    ``ConfigError('<key> must be <describe(hint)>, got <value>')``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{key} must be {describe(hint)}, got {short(value)}")
    if origin is Annotated:
        try:
            inner = check_value(value, args[0], key)
        except ConfigError:
            raise bad from None
        if not all(r.holds(inner) for r in args[1:] if isinstance(r, Range)):
            raise bad
        return inner
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return check_value(value, inner, key)
        except ConfigError:
            raise bad from None
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            value = "no"
        if not any(value == a and type(value) is type(a) for a in args):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise bad
        try:
            return tuple(check_value(v, a, key) for v, a in zip(value, args, strict=True))
        except ConfigError:
            raise bad from None
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise bad
        return value
    number = _number(value)
    if number is None or (isinstance(number, float) and not math.isfinite(number)):
        raise bad
    if hint is int:
        if isinstance(number, float) and not number.is_integer():
            raise bad
        return int(number)
    try:
        return float(number)
    except OverflowError:
        raise bad from None


def _number(value: Any) -> float | int | None:
    """An int or float from a number or a numeric string (YAML reads ``3e-4`` as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _section(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"the {where} section must be a mapping of keys to values, got {short(values)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, values)) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0][:80]}; known keys: {', '.join(sorted(known))}")
    return cls(**values)


def from_dict(d: dict[str, Any]) -> Config:
    """A nested dict (as in YAML) -> ``Config``, every value checked; an unknown section or key, or
    a value of the wrong type or out of range, raises ``ConfigError`` (one line naming the key)."""
    check_size(d)
    unknown = sorted(set(map(str, d)) - {"model", "data", "train"})
    if unknown:
        raise ConfigError(f"unknown config section {short(unknown[0])}; sections are model, data, train")
    model = d.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"the model section must be a mapping of keys to values, got {short(model)}")
    name = model.get("name")
    if name is None:
        raise ConfigError("the model section needs a name (see `imagegen models`)")
    from .models import available_models

    if name not in available_models():
        raise ConfigError(f"model.name must be one of {', '.join(available_models())}, got {short(name)}")
    return Config(model=dict(model), data=_section(DataConfig, d.get("data") or {}, "data"),
                  train=_section(TrainConfig, d.get("train") or {}, "train"))


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"bad override {item!r}: write section.key=value, e.g. train.lr=3e-4")
        section, name = parts
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError):
            value = raw
        if not isinstance(d.setdefault(section, {}) or {}, dict):
            raise ConfigError(f"cannot apply {item!r}: the {section} section is not a mapping")
        d[section] = {**(d[section] or {}), name: value}
    return d


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or start from defaults if ``path`` is None), apply overrides and check
    every value (``from_dict``). Raises ``ConfigError`` (one line) for anything wrong."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        if not path.is_file():
            raise ConfigError(f"{path} is not a regular file: give a YAML config file")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        except RecursionError:
            raise ConfigError(f"{path} is nested too deeply to be a config") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text file: give a YAML config file") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must hold a mapping with model, data and train sections")
    return from_dict(apply_overrides(d, list(overrides)))


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
