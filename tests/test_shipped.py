"""The shipped checkpoints keep their meaning: a few logits, the bits/dim on three MNIST test digits
(tests/images) and a seeded sample, pinned to what the code gave when each checkpoint was shipped
(commit 60a3ae8; the upscaler when it was replaced by one whose conditioning sees the whole input).
A replaced checkpoint is pinned anew.

A refactor that renames a parameter, reorders a layer's features or changes any float32 arithmetic of
``forward`` moves the logits; one that changes the cached decoder or the sampler moves the sample.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from imagegen import checkpoint
from imagegen.models.head import bits_per_dim
from imagegen.sampling import sample
from tests.test_precision import digits

POSITIONS = [(0, 14, 14, 0), (1, 10, 7, 128), (2, 20, 15, 255), (0, 5, 20, 17)]  # (digit, row, column, level)
# logits at POSITIONS, bits/dim of the three digits, first 16 hex digits of the sha256 of a seed-0 sample
PINNED = {
    "mnist_diagonal_bilstm": ([10.016839, 0.944274, -0.691930, 0.669107], 0.864742, "49cf8a93097534a5"),
    "mnist_gated_pixelcnn": ([12.360690, 0.483618, -1.761660, -0.148921], 0.761766, "12c6d5a7b8a04920"),
    "mnist_row_lstm": ([9.733599, 1.233616, 0.045918, 1.034055], 0.838928, "7d4436d066ce7921"),
    "mnist_sr_gated_pixelcnn": ([22.318338, 4.263019, -1.734105, 6.448964], 0.818512, "c3ca1faac9bb8b0d"),
    "mnist_transformer_1d": ([11.275697, 0.522126, -0.019064, 1.171474], 0.835882, "f79d7eaec3dd611b"),
    "mnist_transformer_2d": ([10.699768, 0.445769, -1.435840, 1.664598], 0.875424, "aca23c023352ba8e"),
}


def test_every_shipped_checkpoint_is_pinned():
    assert sorted(PINNED) == checkpoint.shipped()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_logits_and_bits_per_dim_are_pinned(name):
    model = checkpoint.load(name)
    x = digits()
    with torch.no_grad():
        logits = model(x, model.condition(x))
    expected, bpd, _ = PINNED[name]
    got = [float(logits[b, 0, i, j, k]) for b, i, j, k in POSITIONS]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=1e-4, rtol=0)
    assert abs(float(bits_per_dim(logits, x)) - bpd) < 1e-5


@pytest.mark.parametrize("name", sorted(PINNED))
def test_seeded_sample_is_pinned(name):
    model = checkpoint.load(name)
    cond = model.condition(digits()[:1])
    image = sample(model, 1, seed=0, cond=cond)
    assert hashlib.sha256(image.numpy().tobytes()).hexdigest()[:16] == PINNED[name][2]
