"""PixelCNN and gated PixelCNN: causality, blind spot, conditioning (decoding: test_families.py)."""

import pytest
import torch

from imagegen.models import build_model
from tests.causality import check_causal, pixels_before, seen_pixels

MODELS = ["pixelcnn", "gated_pixelcnn"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_causal_by_gradients(name, channels):
    torch.manual_seed(0)
    model = build_model(name, channels=channels, image_size=5, levels=4, hidden=6, num_layers=2)
    check_causal(model, channels, 5, 5)


@pytest.mark.parametrize("name", MODELS)
def test_causal_class_conditional(name):
    torch.manual_seed(0)
    model = build_model(name, channels=3, image_size=4, levels=4, num_classes=3, hidden=6, num_layers=2)
    check_causal(model, 3, 4, 4, cond=torch.tensor([1, 2]))


def test_pixelcnn_has_blind_spot_and_gated_has_none():
    torch.manual_seed(0)
    H = W = 8
    i, j = 6, 3
    before = pixels_before(H, W, i, j)
    plain = build_model("pixelcnn", channels=1, image_size=H, levels=4, hidden=4, num_layers=6,
                        first_kernel_size=3)
    gated = build_model("gated_pixelcnn", channels=1, image_size=H, levels=4, hidden=4, num_layers=6,
                        first_kernel_size=3)
    plain_seen = seen_pixels(plain, H, W, i, j)
    gated_seen = seen_pixels(gated, H, W, i, j)
    assert not (plain_seen & ~before).any() and not (gated_seen & ~before).any()
    # The blind spot: pixels above and to the right the stacked 3x3 masks never reach,
    # although the receptive field is deep enough to cover them.
    blind = before & ~plain_seen
    assert blind[i - 1, j + 2] and blind[i - 2, j + 4], f"expected a blind spot, saw:\n{plain_seen.int()}"
    assert gated_seen[before].all(), f"gated PixelCNN misses earlier pixels:\n{gated_seen.int()}"


def test_gated_rejects_hidden_not_multiple_of_channels():
    with pytest.raises(ValueError, match="multiple of channels"):
        build_model("gated_pixelcnn", channels=3, image_size=4, hidden=8)
