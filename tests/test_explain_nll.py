"""The NLL map: the bits of every sub-pixel, in its place; they add up to the image's bits/dim."""

import math

import pytest
import torch

from imagegen.explain import nll_map
from imagegen.metrics import bits_per_dim
from imagegen.models.head import nll
from tests.explain_helpers import FAMILIES, images, tiny


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_map_sums_to_the_total_nll_and_matches_bits_per_dim(name, channels):
    model = tiny(name, channels)
    image = images(1, channels)[0]
    bits = nll_map(model, image)
    assert bits.shape == image.shape and bits.dtype == torch.float64
    bpd = bits_per_dim(model, image[None])
    assert math.isclose(float(bits.sum()), bpd * image.numel(), rel_tol=1e-9)
    assert math.isclose(float(bits.mean()), bpd, rel_tol=1e-9)


@pytest.mark.parametrize("name", ["gated_pixelcnn", "transformer_2d"])
def test_each_sub_pixel_holds_its_own_bits(name):
    """Step by step through the reference decoder: the bits of the sub-pixel generated at step t sit
    at that sub-pixel's place in the map (2D-local transformer: not raster order)."""
    model = tiny(name, 3)
    image = images(1, 3, seed=1)[0]
    bits = nll_map(model, image)
    flat = image.permute(1, 2, 0).reshape(-1)
    dec = model.reference_decoder(1)
    with torch.no_grad():
        for p in dec.order.tolist():
            expected = float(nll(dec.next_logits(), flat[p : p + 1])) / math.log(2)
            i, rest = divmod(p, image.shape[2] * 3)
            j, c = divmod(rest, 3)
            assert math.isclose(float(bits[c, i, j]), expected, rel_tol=1e-5, abs_tol=1e-6), p
            dec.push(flat[p : p + 1])


def test_conditional_models():
    labels = tiny("gated_pixelcnn", num_classes=3)
    upscaler = tiny("gated_pixelcnn_sr", image_size=(4, 8), upscale_factor=2)
    cases = [(labels, images(1)[0], torch.tensor([2])), (upscaler, images(1, size=(4, 8))[0], None)]
    for model, image, label in cases:
        cond = model.condition(image[None], label)
        bpd = bits_per_dim(model, image[None], cond)
        assert math.isclose(float(nll_map(model, image, cond).mean()), bpd, rel_tol=1e-9)
