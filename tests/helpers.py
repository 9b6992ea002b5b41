"""Small data and configs the tests make for themselves."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from imagegen.config import from_dict


def tiny_mnist(path: Path, n_train: int = 64, n_test: int = 16, size: int = 8, seed: int = 0) -> Path:
    """Write an MNIST-format npz of ``size x size`` images: blobs on black, so models can learn."""
    rng = np.random.default_rng(seed)

    def images(n):
        x = np.zeros((n, size, size), np.uint8)
        for k in range(n):
            r, c = rng.integers(1, size - 3, 2)
            x[k, r : r + 3, c : c + 2] = rng.integers(128, 256)
        return x

    np.savez(path, x_train=images(n_train), y_train=rng.integers(0, 10, n_train).astype(np.uint8),
             x_test=images(n_test), y_test=rng.integers(0, 10, n_test).astype(np.uint8))
    return path


def tiny_config(data_path: Path, **train):
    """A config for a seconds-long run of a tiny gated PixelCNN on ``tiny_mnist`` data."""
    t = dict(batch_size=4, max_steps=6, lr=3e-3, warmup_steps=2, eval_every=3, eval_images=8,
             sample_every=0, checkpoint_every=3, log_every=1, num_samples=4)
    t.update(train)
    return from_dict({"model": {"name": "gated_pixelcnn", "hidden": 4, "num_layers": 2, "out_hidden": 4},
                      "data": {"name": "mnist", "path": str(data_path)}, "train": t})


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block: loops of tiny ops (decoding steps, per-position
    gradients) only slow down with more, badly so on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


TIMINGS = ("images_per_s", "cpu_hours")  # metrics.jsonl fields no rerun repeats


def metrics_without_timings(text: str) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` without the timing fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in text.splitlines()]


def without_timings(name: str, content: bytes) -> bytes | dict | list:
    """A run file's content for comparing two runs: ``metrics.jsonl`` without its timings, a checkpoint's
    ``trainer.json`` without the CPU time used; any other file as its bytes."""
    if name.endswith("metrics.jsonl"):
        return metrics_without_timings(content.decode())
    if name.endswith("trainer.json"):
        record = json.loads(content)
        assert record["loop"].pop("cpu_s") > 0
        return record
    return content
