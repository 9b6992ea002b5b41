"""Receptive fields: zero at the sub-pixel and after it in generation order, non-zero somewhere before."""

import pytest
import torch

from imagegen.explain import future, receptive_field
from tests.explain_helpers import FAMILIES, H, W, images, tiny
from tests.helpers import one_thread


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_zero_at_and_after_the_sub_pixel_and_not_before(name, channels):
    model = tiny(name, channels)
    x = images(4, channels, seed=3)
    order = model.generation_order(channels, H, W)
    with one_thread():
        for p in order[1::5].tolist() + [int(order[-1])]:
            i, rest = divmod(p, W * channels)
            pixel = (rest % channels, i, rest // channels)
            field, later = receptive_field(model, x, pixel), future(model, (channels, H, W), pixel)
            assert field.shape == later.shape == (channels, H, W)
            assert field[later].max() == 0, (name, pixel)
            assert field[~later].max() > 0, (name, pixel)


@pytest.mark.parametrize("name", ["gated_pixelcnn", "transformer_2d"])
def test_future_is_the_generation_order_from_the_sub_pixel_on(name):
    model = tiny(name, 3)
    order = model.generation_order(3, H, W)
    for t in (0, 7, len(order) - 1):
        p = int(order[t])
        i, rest = divmod(p, W * 3)
        later = future(model, (3, H, W), (rest % 3, i, rest // 3))
        expected = torch.zeros(H * W * 3, dtype=torch.bool)
        expected[order[t:]] = True
        assert torch.equal(later, expected.view(H, W, 3).permute(2, 0, 1))


def test_class_conditional_field_is_causal_too():
    model = tiny("row_lstm", num_classes=3)
    x = images(2)
    pixel = (0, 2, 3)
    field = receptive_field(model, x, pixel, torch.tensor([0, 2]))
    later = future(model, (1, H, W), pixel)
    assert field[later].max() == 0 and field[~later].max() > 0


def test_a_pixel_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="outside the 4x6 image"):
        receptive_field(tiny("pixelcnn"), images(1), (0, 4, 0))
