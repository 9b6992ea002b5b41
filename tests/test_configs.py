"""Every shipped config loads and builds its model, and reads its data from the data root (no path)."""

from pathlib import Path

import pytest

from imagegen.config import load_config
from imagegen.data import DATASETS
from imagegen.models import build_model

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path)
    assert cfg.data.path is None  # runs as written on a user's machine; a copy elsewhere is one --data away
    channels, size = DATASETS[cfg.data.name].shape[:2]
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    kwargs.setdefault("channels", channels)
    kwargs.setdefault("image_size", size)
    model = build_model(cfg.model["name"], **kwargs)
    assert sum(p.numel() for p in model.parameters()) > 0
