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


def test_class_bias_reaches_both_stacks_of_every_gated_layer():
    """Paper, equation 4: ``V^T h`` is added inside the gates of the vertical and the horizontal stack
    of every layer. The bias each stack receives differs between labels and reaches the logits."""
    torch.manual_seed(0)
    model = build_model("gated_pixelcnn", channels=1, image_size=4, levels=4, num_classes=3, hidden=4,
                        num_layers=3)
    seen: dict[tuple[int, str], torch.Tensor] = {}

    def recording(layer_index, stack, method):
        def call(*args):
            bias = args[-1]  # vertical(v, bias), horizontal(h, link, bias)
            assert isinstance(bias, torch.Tensor), f"layer {layer_index} {stack}: no class bias"
            bias.retain_grad()
            seen[layer_index, stack] = bias
            return method(*args)
        return call

    for depth, layer in enumerate(model.layers):
        layer.vertical = recording(depth, "vertical", layer.vertical)
        layer.horizontal = recording(depth, "horizontal", layer.horizontal)
    model(torch.randint(0, 4, (2, 1, 4, 4)), torch.tensor([0, 2])).sum().backward()
    assert len(seen) == 2 * len(model.layers)
    for (depth, stack), bias in seen.items():
        assert not torch.allclose(bias[0], bias[1]), f"layer {depth} {stack}: the bias ignores the label"
        assert bias.grad.abs().sum() > 0, f"layer {depth} {stack}: the bias does not reach the logits"


def test_one_gated_layer_sees_the_documented_window():
    """A single 7x7 gated layer: 3 rows up (the vertical stack, see GatedLayer's deviation note) and
    3 pixels to the left (the horizontal stack)."""
    torch.manual_seed(0)
    H = W = 9
    i, j = 8, 4
    model = build_model("gated_pixelcnn", channels=1, image_size=H, levels=4, hidden=4, num_layers=1,
                        first_kernel_size=7)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[i - 3 : i, j - 3 : j + 4] = True
    expected[i, j - 3 : j] = True
    seen = seen_pixels(model, H, W, i, j)
    assert torch.equal(seen, expected), seen.int()
