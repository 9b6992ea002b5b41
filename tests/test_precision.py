"""bf16 against float32 where the logits have their trained size: the shipped checkpoints on three
MNIST test digits (tests/images). Trained logits span 20-50 (a random tiny model's barely 1), so
rounding errors, and missing parts of a model, show at their real size.

The check compares next-value distributions sub-pixel by sub-pixel: mean and largest total
variation distance, and the mean change of the log-probability of the digit's own value (which is
what bits/dim averages). Measured with ``python -m tests.test_precision`` (2-core AMD EPYC, torch
2.13): bf16 reaches at most mean TV 0.0023, largest TV 0.10 and mean log-prob change 0.0040 nats
over the shipped checkpoints, both for an autocast forward and for a bf16 model's cached decoder.
A Diagonal BiLSTM without its right-to-left direction lies at mean TV 0.08, largest TV 0.99 and
0.35 nats. The bounds sit a few times above the first and far below the second.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen import checkpoint
from imagegen.models import AutoregressiveModel
from imagegen.models.layout import to_sequence
from tests.decoding import divergence, teacher_forced_log_probs

CHECKPOINTS = ["mnist_gated_pixelcnn", "mnist_row_lstm", "mnist_diagonal_bilstm", "mnist_transformer_1d",
               "mnist_transformer_2d"]  # + SR later
BOUNDS = {"mean_tv": 0.01, "max_tv": 0.25, "mean_logp_change": 0.02}


def digits() -> torch.Tensor:
    """The three 28x28 MNIST test digits shipped with the tests: ``(3, 1, 28, 28)`` long."""
    folder = Path(__file__).parent / "images"
    images = [np.array(Image.open(folder / f"mnist_test_{k}.png")) for k in range(3)]
    return torch.from_numpy(np.stack(images))[:, None].long()


def without_right_to_left(model: AutoregressiveModel) -> AutoregressiveModel:
    """A copy of a Diagonal BiLSTM whose right-to-left LSTMs output zeros (all their weights zero)."""
    broken = copy.deepcopy(model)
    for layer in broken.layers:
        for p in layer.right_to_left.parameters():
            p.data.zero_()
    return broken


def forward_divergence(full: AutoregressiveModel, other: AutoregressiveModel, autocast: bool) -> dict:
    """``divergence`` of ``other``'s forward logits (under bf16 autocast if asked) from ``full``'s."""
    x = digits()
    cond = full.condition(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = other(x, cond).float()
    with torch.no_grad():
        reference = full(x, cond)
    return divergence(reference.log_softmax(-1), logits.log_softmax(-1), x)


def decoder_divergence(full: AutoregressiveModel, other: AutoregressiveModel) -> dict:
    """``divergence`` of ``other``'s cached-decoder distributions on the digits from ``full``'s forward
    (float32 cached decoding equals the forward to 1e-4: tests/test_families.py)."""
    x = digits()
    cond = full.condition(x)
    with torch.no_grad():
        reference = to_sequence(full(x, cond).log_softmax(-1))  # (B, N, K)
    targets = to_sequence(x)
    return divergence(reference, teacher_forced_log_probs(other, x, cond), targets)


def within_bounds(d: dict) -> bool:
    return all(d[k] < bound for k, bound in BOUNDS.items())


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_bf16_autocast_forward_close_to_fp32(name):
    """The training path: a forward under bf16 autocast."""
    model = checkpoint.load(name).eval()
    d = forward_divergence(model, model, autocast=True)
    assert within_bounds(d), d


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_bf16_cached_decoder_close_to_fp32(name):
    """The ``--precision bf16`` path: the checkpoint loaded in bf16, decoded by its cached decoder."""
    half = checkpoint.load(name, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    d = decoder_divergence(checkpoint.load(name).eval(), half)
    assert within_bounds(d), d


def test_a_bilstm_missing_its_right_to_left_direction_is_rejected():
    """The same check on a bf16 Diagonal BiLSTM whose right-to-left direction is gone fails clearly."""
    full = checkpoint.load("mnist_diagonal_bilstm").eval()
    broken = without_right_to_left(full)
    for d in (forward_divergence(full, broken, autocast=True),
              decoder_divergence(full, without_right_to_left(checkpoint.load("mnist_diagonal_bilstm",
                                                                             dtype=torch.bfloat16)))):
        assert all(d[k] > 3 * bound for k, bound in BOUNDS.items()), d  # (TV cannot exceed 1)


if __name__ == "__main__":  # the measurement behind BOUNDS
    torch.set_num_threads(1)
    print("| checkpoint | path | mean TV | largest TV | mean log-prob change (nats) |\n|---|---|---|---|---|")
    for name in CHECKPOINTS + ["mnist_diagonal_bilstm without right-to-left"]:
        full = checkpoint.load(name.split()[0]).eval()
        half = checkpoint.load(name.split()[0], dtype=torch.bfloat16)
        other, other_half = (full, half) if " " not in name else (without_right_to_left(full),
                                                                  without_right_to_left(half))
        for path, d in (("bf16 autocast forward", forward_divergence(full, other, autocast=True)),
                        ("bf16 cached decoder", decoder_divergence(full, other_half))):
            cells = " | ".join(f"{d[k]:.4f}" for k in ("mean_tv", "max_tv", "mean_logp_change"))
            print(f"| {name} | {path} | {cells} |")
