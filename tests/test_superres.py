"""Super-resolution: area-downsampled pairs and the conditional gated PixelCNN."""

import pytest
import torch

from imagegen.data.pairs import area_downsample
from imagegen.models import build_model
from imagegen.sampling import sample
from tests.causality import check_causal
from tests.decoding import check_cached_matches_reference


def sr_model(channels=1, size=(4, 6), levels=6, seed=0):
    torch.manual_seed(seed)
    return build_model("gated_pixelcnn_sr", channels=channels, image_size=size, levels=levels,
                       upscale_factor=2, hidden=12, num_layers=3, cond_features=6, cond_layers=2)


def test_area_downsample_rounds_block_means():
    x = torch.tensor([[[[0, 1, 10, 10], [1, 1, 10, 11], [255, 255, 0, 0], [255, 254, 0, 1]]]],
                     dtype=torch.uint8)
    assert area_downsample(x, 2).tolist() == [[[[1, 10], [255, 0]]]]  # 0.75 -> 1, 10.25 -> 10, 254.75 -> 255
    with pytest.raises(ValueError, match="multiple"):
        area_downsample(x[:, :, :3], 2)


def test_condition_is_the_downsampled_image():
    m = sr_model()
    x = torch.randint(0, 6, (2, 1, 4, 6))
    assert torch.equal(m.condition(x), area_downsample(x, 2))
    assert m.lowres_size == (2, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_causal_in_the_high_resolution_image(channels):
    m = sr_model(channels)
    low = torch.randint(0, 6, (2, channels, 2, 3))
    check_causal(m, channels, 4, 6, cond=low)


def test_every_pixel_sees_its_low_resolution_pixel():
    m = sr_model().eval()
    x = torch.randint(0, 6, (1, 1, 4, 6))
    low = torch.randint(0, 6, (1, 1, 2, 3))
    changed = low.clone()
    changed[0, 0, 1, 2] = (low[0, 0, 1, 2] + 3) % 6
    diff = (m(x, low) - m(x, changed)).abs().sum(-1)[0, 0]  # (4, 6)
    assert (diff[2:, 4:] > 0).all()  # the 2x2 block under the changed low-res pixel, first pixel included


@pytest.mark.parametrize("channels", [1, 3])
def test_cached_decoder_matches_reference_every_step(channels):
    m = sr_model(channels, levels=5).eval()
    low = torch.randint(0, 5, (3, channels, 2, 3))
    check_cached_matches_reference(m, 3, cond=low)
    a = sample(m, 3, cond=low, seed=3)
    assert torch.equal(a, sample(m, 3, cond=low, seed=3, decoder="reference"))


def test_wrong_low_resolution_size_is_rejected():
    m = sr_model()
    with pytest.raises(ValueError, match="upscales"):
        m(torch.zeros(1, 1, 4, 6, dtype=torch.long), torch.zeros(1, 1, 4, 6, dtype=torch.long))
