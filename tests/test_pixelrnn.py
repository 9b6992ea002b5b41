"""Row LSTM and Diagonal BiLSTM: causality, receptive fields, conditioning (decoding: test_families.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagegen.models import build_model
from imagegen.models.pixelrnn import skew, unskew
from tests.causality import check_causal, pixels_before, seen_pixels

MODELS = ["row_lstm", "diagonal_bilstm"]


def test_skew_unskew():
    x = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 4, 5)
    y = skew(x)
    assert y.shape == (2, 3, 4, 8)
    for i in range(4):
        assert torch.equal(y[:, :, i, i : i + 5], x[:, :, i])
        assert y[:, :, i, :i].abs().sum() == 0 and y[:, :, i, i + 5 :].abs().sum() == 0
    assert torch.equal(unskew(y), x)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_causal_by_gradients(name, channels):
    torch.manual_seed(0)
    model = build_model(name, channels=channels, image_size=(4, 5), levels=4, hidden=6, num_layers=2,
                        first_kernel_size=3)
    check_causal(model, channels, 4, 5)


@pytest.mark.parametrize("name", MODELS)
def test_causal_class_conditional(name):
    torch.manual_seed(0)
    model = build_model(name, channels=3, image_size=(3, 4), levels=4, num_classes=3, hidden=6, num_layers=2)
    check_causal(model, 3, 3, 4, cond=torch.tensor([1, 2]))


def test_row_lstm_receptive_field_is_a_triangle():
    torch.manual_seed(0)
    H, W, i, j = 5, 13, 4, 6
    model = build_model("row_lstm", channels=1, image_size=(H, W), levels=4, hidden=4, num_layers=2,
                        first_kernel_size=3)
    seen = seen_pixels(model, H, W, i, j)
    assert not (seen & ~pixels_before(H, W, i, j)).any()
    # Widening by one column per row up: the state-to-state convolution's width 3 ...
    assert seen[i - 1, j - 1 : j + 2].all() and seen[i - 3, j - 3 : j + 4].all(), seen.int()
    # ... so the far left and right of the rows above are never seen (pixels before (i, j), and a
    # full-context model would use them).
    missed = pixels_before(H, W, i, j) & ~seen
    for p in [(i - 1, 0), (i - 1, W - 1), (i - 2, W - 1), (i - 1, j + 3), (i - 2, j + 4)]:
        assert missed[p], f"Row LSTM unexpectedly sees {p}:\n{seen.int()}"


def test_diagonal_bilstm_sees_every_earlier_pixel():
    torch.manual_seed(0)
    H, W = 5, 4  # W - 1 <= 3, the 7x7 input convolution's reach (see the next test)
    model = build_model("diagonal_bilstm", channels=1, image_size=(H, W), levels=4, hidden=4, num_layers=2)
    for i in range(H):
        for j in range(W):
            seen = seen_pixels(model, H, W, i, j)
            assert torch.equal(seen, pixels_before(H, W, i, j)), f"pixel {(i, j)}:\n{seen.int()}"


def test_diagonal_bilstm_misses_only_the_last_pixel_of_the_row_above_beyond_the_input_conv():
    """Every state at a pixel excludes that pixel's own value (mask A, then mask B), so the last
    pixel of row i-1 enters the right-to-left pass only on row i, which is shifted to row i+1: pixel
    (i, j) sees it only through the first convolution's window (j + 1 >= W - 1 for a 3x3 here)."""
    torch.manual_seed(0)
    H, W, i = 5, 6, 4
    model = build_model("diagonal_bilstm", channels=1, image_size=(H, W), levels=4, hidden=4, num_layers=3,
                        first_kernel_size=3)
    for j in range(W):
        expected = pixels_before(H, W, i, j)
        expected[i - 1, W - 1] = j + 1 >= W - 1
        seen = seen_pixels(model, H, W, i, j)
        assert torch.equal(seen, expected), f"pixel {(i, j)}:\n{seen.int()}"


@pytest.mark.parametrize("name", MODELS)
def test_any_levels_and_hidden_not_multiple_of_channels(name):
    model = build_model(name, channels=3, image_size=(3, 4), levels=7, hidden=4, num_layers=1)
    assert model(torch.randint(0, 7, (2, 3, 3, 4))).shape == (2, 3, 3, 4, 7)
    with pytest.raises(ValueError, match="at least channels"):
        build_model(name, channels=3, image_size=4, hidden=2)


def test_bench_train_times_both_pixelrnns():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "bench_train.py"), "--quick", "--models", *MODELS,
         "--layouts", "NCHW", "--batch-size", "2", "--shape", "1,5,6", "--sample-shape", "1,3,3",
         "--num-samples", "1", "--sample-config", str(root / "configs" / "mnist_row_lstm.yaml")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [[c.strip() for c in line.split("|")[1:5]] for line in proc.stdout.splitlines()
            if line.startswith("| ")][1:]  # the table's body
    assert {(r[0], r[2]) for r in rows} == {(m, p) for m in MODELS for p in ("fp32", "bf16")}
    for name in MODELS:
        assert f"sampling {name} (" in proc.stdout
