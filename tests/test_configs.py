"""Every shipped config loads and builds its model (at a tiny stand-in image size where large)."""

from pathlib import Path

import pytest

from imagegen.config import load_config
from imagegen.models import build_model

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
SHAPES = {"mnist": (1, 28), "binarized_mnist": (1, 28), "cifar10": (3, 32), "imagenet32": (3, 32),
          "imagenet64": (3, 64), "folder": (3, 32)}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path)
    channels, size = SHAPES[cfg.data.name]
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    kwargs.setdefault("channels", channels)
    kwargs.setdefault("image_size", size)
    model = build_model(cfg.model["name"], **kwargs)
    assert sum(p.numel() for p in model.parameters()) > 0
