"""Autoregressive image models: ``build_model(name, ...)`` and ``available_models()``."""

from .base import AutoregressiveModel
from .decoding import Decoder, ReferenceDecoder
from .registry import available_models, build_model

__all__ = ["AutoregressiveModel", "Decoder", "ReferenceDecoder", "available_models", "build_model"]
