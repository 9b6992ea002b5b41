"""Model names -> classes, and ``build_model``, the one way models are made."""

from __future__ import annotations

from .base import AutoregressiveModel
from .pixelcnn import GatedPixelCNN, PixelCNN, UpscalingGatedPixelCNN
from .pixelrnn import DiagonalBiLSTMModel, RowLSTMModel
from .transformer import (
    SuperResolutionTransformer1D,
    SuperResolutionTransformer2D,
    Transformer1D,
    Transformer2D,
)

MODELS: dict[str, type[AutoregressiveModel]] = {
    "pixelcnn": PixelCNN,
    "gated_pixelcnn": GatedPixelCNN,
    "transformer_1d": Transformer1D,
    "transformer_2d": Transformer2D,
    "transformer_sr_1d": SuperResolutionTransformer1D,
    "transformer_sr_2d": SuperResolutionTransformer2D,
    "row_lstm": RowLSTMModel,
    "diagonal_bilstm": DiagonalBiLSTMModel,
    "gated_pixelcnn_sr": UpscalingGatedPixelCNN,
}


def available_models() -> list[str]:
    """Names accepted by ``build_model``."""
    return sorted(MODELS)


def build_model(name: str, *, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                num_classes: int | None = None, **hparams) -> AutoregressiveModel:
    """Build model ``name`` for ``(channels, image_size)`` images with ``levels`` intensities.

    ``num_classes`` makes it class-conditional (``cond`` is then a label tensor ``(B,)``); every
    other hparam has a small default. ``model.config`` records the arguments for checkpoints.
    Raises ``ValueError`` for an unknown name or hparam.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    try:
        model = MODELS[name](channels=channels, image_size=image_size, levels=levels,
                             num_classes=num_classes, **hparams)
    except TypeError as e:
        raise ValueError(f"bad hyperparameter for model {name!r}: {e}") from None
    size = list(image_size) if isinstance(image_size, tuple | list) else image_size
    model.config = dict(name=name, channels=channels, image_size=size, levels=levels,
                        num_classes=num_classes, **hparams)
    return model
