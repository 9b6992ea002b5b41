"""Model names -> classes, and ``build_model``, the one way models are made."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .base import AutoregressiveModel
from .dilated import DilatedPixelCNN
from .pixelcnn import GatedPixelCNN, PixelCNN, UpscalingGatedPixelCNN
from .pixelrnn import DiagonalBiLSTMModel, RowLSTMModel
from .transformer import ImageTransformer

MODELS: dict[str, Callable[..., AutoregressiveModel]] = {
    "pixelcnn": PixelCNN,
    "gated_pixelcnn": GatedPixelCNN,
    "gated_pixelcnn_sr": UpscalingGatedPixelCNN,
    "row_lstm": RowLSTMModel,
    "diagonal_bilstm": DiagonalBiLSTMModel,
    "dilated_pixelcnn": DilatedPixelCNN,
    "transformer_1d": partial(ImageTransformer, attention="1d"),
    "transformer_2d": partial(ImageTransformer, attention="2d"),
    "transformer_sr_1d": partial(ImageTransformer, attention="1d", upscale_factor=4, encoder_layers=2),
    "transformer_sr_2d": partial(ImageTransformer, attention="2d", upscale_factor=4, encoder_layers=2),
}


def available_models() -> list[str]:
    """Names accepted by ``build_model``."""
    return sorted(MODELS)


def build_model(name: str, *, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                num_classes: int | None = None, **hparams) -> AutoregressiveModel:
    """Build model ``name`` for ``(channels, image_size)`` images with ``levels`` intensities.

    ``num_classes`` makes it class-conditional (``cond`` is then a label tensor ``(B,)``); every
    other hparam has a small default. Raises ``ValueError`` for an unknown name or hparam, or hparams
    that make another registered model (``transformer_1d`` with an ``upscale_factor``, say).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    try:
        model = MODELS[name](channels=channels, image_size=image_size, levels=levels, num_classes=num_classes,
                             **hparams)
    except TypeError as e:
        raise ValueError(f"bad hyperparameter for model {name!r}: {e}") from None
    if model.name != name:
        raise ValueError(f"bad hyperparameter for model {name!r}: these hparams make a {model.name}")
    return model
