"""Tiny models of every family for the ``imagegen explain`` tests."""

from __future__ import annotations

import torch

from imagegen.models import build_model

FAMILIES = ["pixelcnn", "gated_pixelcnn", "row_lstm", "diagonal_bilstm", "transformer_1d", "transformer_2d"]
TRANSFORMERS = {"transformer_1d": dict(block_length=5, memory_length=3),
                "transformer_2d": dict(query_shape=(2, 4), memory_flange=(1, 2))}
H, W, K = 4, 6, 5


def tiny(name: str, channels: int = 1, seed: int = 0, **hparams):
    """A small random model ``name`` of ``channels x 4 x 6`` images with 5 levels, in eval mode."""
    torch.manual_seed(seed)
    if name in TRANSFORMERS or name.startswith("transformer_sr"):
        hparams = {**TRANSFORMERS.get(name.replace("_sr", ""), {}), "hidden": 16, "num_heads": 2,
                   "ffn_hidden": 24, **hparams}
    else:
        hparams = {"hidden": 12, "num_layers": 3, **hparams}
    size = hparams.pop("image_size", (H, W))
    return build_model(name, channels=channels, image_size=size, levels=K, **hparams).eval()


def images(n: int, channels: int = 1, seed: int = 0, size: tuple[int, int] = (H, W)) -> torch.Tensor:
    """``n`` random images ``(n, channels, *size)`` with values in ``[0, K)``."""
    return torch.randint(0, K, (n, channels, *size), generator=torch.Generator().manual_seed(seed))
