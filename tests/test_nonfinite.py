"""Garbage never passes silently: non-finite logits stop the sampler and bits/dim, and bits/dim of
no images or of out-of-range values is refused."""

from __future__ import annotations

import pytest
import torch

from imagegen.errors import NonFiniteError
from imagegen.metrics import bits_per_dim
from imagegen.models import build_model
from imagegen.sampling import sample


def tiny(**kw):
    torch.manual_seed(0)
    return build_model("gated_pixelcnn", channels=1, image_size=4, hidden=4, num_layers=2, out_hidden=4, **kw)


def broken():
    model = tiny()
    with torch.no_grad():
        model.head.weight[0, 0, 0] = float("nan")
    return model


def test_sampling_with_nan_weights_raises():
    with pytest.raises(NonFiniteError, match="non-finite logits"):
        sample(broken(), 2, seed=0)


def test_sampling_at_a_temperature_too_small_to_divide_by_raises():
    with pytest.raises(NonFiniteError, match="temperature"):
        sample(tiny(), 2, seed=0, temperature=1e-300)
    assert sample(tiny(), 2, seed=0, temperature=0).shape == (2, 1, 4, 4)  # 0 is argmax, fine


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0])
def test_sampling_refuses_a_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        sample(tiny(), 1, temperature=temperature)


def test_bits_per_dim_with_nan_weights_raises():
    x = torch.randint(0, 256, (3, 1, 4, 4))
    with pytest.raises(NonFiniteError, match="non-finite logits"):
        bits_per_dim(broken(), x)


def test_bits_per_dim_of_no_images_or_out_of_range_values_raises():
    with pytest.raises(ValueError, match="no images"):
        bits_per_dim(tiny(), torch.zeros(0, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        bits_per_dim(tiny(levels=2), torch.full((2, 1, 4, 4), 5))
