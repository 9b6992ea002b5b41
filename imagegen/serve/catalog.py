"""The checkpoints a server offers: each loaded once, with a lock so that one job at a time uses it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import checkpoint as ckpt
from ..explain.attention import is_local_transformer
from ..models import AutoregressiveModel
from ..options import check_device
from .limits import Refused


@dataclass
class Served:
    """One checkpoint: ``key`` (what ``--checkpoint`` was given, and what the page sends back), its
    loaded ``model`` and the ``lock`` a job holds while it uses the model."""

    key: str
    model: AutoregressiveModel
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return Path(self.key).name

    @property
    def family(self) -> str:
        return self.model.config.get("name") or type(self.model).__name__

    @property
    def title(self) -> str:
        """``name (family)``, as ``imagegen explain`` titles its pictures."""
        return f"{self.name} ({self.family})"

    def info(self) -> dict:
        """What the page needs to build its forms, as JSON."""
        m = self.model
        return {"key": self.key, "name": self.name, "title": self.title, "family": self.family,
                "shape": list(m.shape),
                "levels": m.levels, "num_classes": m.num_classes or 0,
                "upscale_factor": m.upscale_factor or 0,
                "lowres_size": list(m.lowres_size) if m.upscale_factor else None,
                "attention": is_local_transformer(m)}


class Catalog:
    """The served checkpoints by key, in the order given (None: every shipped one)."""

    def __init__(self, checkpoints: list[str] | None = None, device: str = "cpu"):
        device = check_device(device)
        keys = list(dict.fromkeys(checkpoints or ckpt.shipped()))
        self.served = {key: Served(key, ckpt.load(key, device=device)) for key in keys}

    def get(self, key: object) -> Served:
        served = self.served.get(key) if isinstance(key, str) else None
        if served is None:
            what = "checkpoint: missing" if key in (None, "") else f"checkpoint {key!r} is not served here"
            raise Refused(400, f"{what}: choose one of {', '.join(self.served)}")
        return served

    def first(self, upscaler: bool) -> Served | None:
        """The first checkpoint that is (or is not) a super-resolution model."""
        return next((s for s in self.served.values() if bool(s.model.upscale_factor) == upscaler), None)
