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


# MNIST's 7x7 -> 28x28 at the shipped depth, and a 16x16 grid wider than one residual block reaches.
@pytest.mark.parametrize("channels, size, factor, cond_layers", [(1, 28, 4, 3), (3, 28, 4, 3), (1, 32, 2, 1)])
def test_first_pixel_sees_the_whole_low_resolution_image(channels, size, factor, cond_layers):
    """The logits of high-resolution pixel (0, 0), which sees the least of the image, have a gradient
    from every low-resolution sub-pixel (summed over several random inputs, as one could hide a
    dependence behind a dead ReLU)."""
    torch.manual_seed(0)
    m = build_model("gated_pixelcnn_sr", channels=channels, image_size=size, levels=6, upscale_factor=factor,
                    hidden=6, num_layers=2, cond_features=8, cond_layers=cond_layers)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (4, channels, size, size), generator=g)
    low = torch.randint(0, 6, (4, channels, size // factor, size // factor), generator=g).float()
    low.requires_grad_(True)
    m(x, low)[:, :, 0, 0].sum().backward()  # scale_levels is differentiable in float inputs
    seen = low.grad.abs().sum(0) > 0  # (C, h, w)
    assert seen.all(), f"pixel (0, 0) sees {int(seen.sum())} of {seen.numel()} low-resolution sub-pixels"


@pytest.mark.parametrize("channels", [1, 3])
def test_cached_decoder_matches_reference_every_step(channels):
    m = sr_model(channels, levels=5).eval()
    low = torch.randint(0, 5, (3, channels, 2, 3))
    check_cached_matches_reference(m, 3, cond=low)
    a = sample(m, 3, cond=low, seed=3)
    assert torch.equal(a, sample(m, 3, cond=low, seed=3, decoder="reference"))


def test_class_labels_are_refused():
    with pytest.raises(ValueError, match="not on class labels"):
        build_model("gated_pixelcnn_sr", channels=1, image_size=8, num_classes=10, upscale_factor=2)


def test_wrong_low_resolution_size_is_rejected():
    m = sr_model()
    with pytest.raises(ValueError, match="upscales"):
        m(torch.zeros(1, 1, 4, 6, dtype=torch.long), torch.zeros(1, 1, 4, 6, dtype=torch.long))
