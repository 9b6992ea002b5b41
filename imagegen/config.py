"""Run configuration: dataclasses, YAML loading and ``--set a.b=c`` overrides.

A config file has three sections. ``model:`` is exactly the keyword arguments of
``imagegen.models.build_model`` (``name`` plus hparams; ``channels``, ``image_size``, ``levels``
and ``num_classes`` default to the dataset's). ``data:`` and ``train:`` are ``DataConfig`` and
``TrainConfig`` below.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    """Which dataset to train and evaluate on (see ``imagegen.data.load_dataset``)."""

    name: str = "mnist"
    path: str | None = None  # file or folder; None looks in ~/.cache/imagegen/<name>
    binarize: str | None = None  # None, "threshold" or "stochastic" (re-drawn every batch)
    image_size: int | None = None  # resize (folder datasets)
    download: bool = False
    val_size: int | None = None  # images carved out of train for "val"; None: the dataset's default
    train_split: str = "train"
    eval_split: str = "val"  # periodic eval, early stopping and checkpoint choice; test is for the table
    train_limit: int | None = None  # use only the first N training images (smoke tests)
    class_conditional: bool = False  # feed labels to the model as ``cond``


@dataclass
class TrainConfig:
    """Optimisation, precision and bookkeeping of ``imagegen train``."""

    batch_size: int = 32  # per process, per accumulation micro-step
    grad_accum: int = 1
    max_steps: int = 10_000  # optimiser steps
    optimizer: str = "adamw"  # "adamw" or "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine", "rsqrt" or "constant", each after a linear warmup
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999  # None: no EMA; eval, samples and export use the EMA weights
    mixed_precision: str = "no"  # "no", "bf16" or "fp16" (accelerate)
    channels_last: bool = False
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000
    eval_images: int | None = 2000  # None: the whole eval split
    eval_batch_size: int = 100
    sample_every: int = 1000
    num_samples: int = 16
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2


@dataclass
class Config:
    model: dict[str, Any] = field(default_factory=lambda: {"name": "gated_pixelcnn"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"]["betas"] = list(self.train.betas)
        return d


def _section(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; known keys: {', '.join(sorted(known))}")
    if "betas" in values:
        values = {**values, "betas": tuple(values["betas"])}
    return cls(**values)


def from_dict(d: dict[str, Any]) -> Config:
    """A nested dict (as in YAML) -> ``Config``; unknown sections or keys raise ``ConfigError``."""
    unknown = sorted(set(d) - {"model", "data", "train"})
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; sections are model, data, train")
    model = dict(d.get("model") or {})
    if "name" not in model:
        raise ConfigError("the model section needs a name (see `imagegen models`)")
    return Config(model=model, data=_section(DataConfig, d.get("data") or {}, "data"),
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
        except yaml.YAMLError:
            value = raw
        d.setdefault(section, {})[name] = value
    return d


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or start from defaults if ``path`` is None) and apply overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must hold a mapping with model, data and train sections")
    return from_dict(apply_overrides(d, list(overrides)))


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
