"""Attention maps: the weights are the model's own (weights @ values is what its SDPA kernel computed),
each row sums to one over the query's memory and is zero everywhere else."""

import pytest
import torch

from imagegen.explain import attention as explain
from tests.explain_helpers import TRANSFORMERS, H, W, images, tiny


@pytest.mark.parametrize("name", list(TRANSFORMERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_weights_times_values_is_what_the_sdpa_kernel_computed(name, channels):
    model = tiny(name, channels, num_layers=3, kernel="sdpa")
    order, pattern = explain.local_layout(model, (channels, H, W))
    outputs = explain.capture(model, images(1, channels)[0])
    assert len(outputs) == 3
    with torch.no_grad():
        for block, (x, out) in zip(model.blocks, outputs, strict=True):
            weights = explain.attention_weights(block.attn, x, pattern)
            torch.testing.assert_close(explain.layer_output(block.attn, weights, x, pattern), out, atol=1e-5,
                                       rtol=1e-5)


def allowed(name, model, channels, pixel):
    """``(C, H, W)`` bool: the sub-pixels the query may attend to, from the paper's definition of the
    memory (section 3.2) rather than from the model's pattern."""
    c, i, j = pixel
    cols = W * channels
    p = (i * W + j) * channels + c
    order = model.generation_order(channels, H, W)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    grid = torch.zeros(H, cols, dtype=torch.bool)
    if name == "transformer_1d":
        block, memory = model.block_length, model.memory_length
        start = p // block * block
        grid.view(-1)[max(0, start - memory) : p + 1] = True
    else:
        (qr, qc), (fr, fc) = model.query_shape, model.memory_flange
        r0, c0 = i // qr * qr, (j * channels + c) // qc * qc
        grid[max(0, r0 - fr) : r0 + qr, max(0, c0 - fc) : c0 + qc + fc] = True
        grid &= (rank <= rank[p]).view(H, cols)
    return grid.view(H, W, channels).permute(2, 0, 1)


@pytest.mark.parametrize("name", list(TRANSFORMERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_rows_sum_to_one_over_the_memory_and_are_zero_outside(name, channels):
    model = tiny(name, channels, num_layers=2)
    image = images(1, channels, seed=2)[0]
    for pixel in [(0, 0, 0), (channels - 1, 1, 3), (0, 2, 0), (channels - 1, 3, 5), (channels // 2, 2, 4)]:
        amap = explain.attention_map(model, image, pixel)
        assert amap.weights.shape == (2, 2, channels, H, W)
        torch.testing.assert_close(amap.weights.sum((2, 3, 4)), torch.ones(2, 2))
        inside = allowed(name, model, channels, pixel)
        assert torch.equal(amap.visible, inside), pixel
        assert amap.weights[:, :, ~inside].abs().max() == 0, pixel
        assert (amap.weights[:, :, inside] > 0).all(), pixel
        assert (amap.memory >= amap.visible).all() and (amap.memory >= amap.block).all()


def test_super_resolution_transformer_self_attention():
    model = tiny("transformer_sr_2d", image_size=(4, 8), upscale_factor=2)
    image = images(1, size=(4, 8))[0]
    amap = explain.attention_map(model, image, (0, 3, 6), model.condition(image[None]))
    torch.testing.assert_close(amap.weights.sum((2, 3, 4)), torch.ones(2, 2))
    assert amap.weights[:, :, ~amap.visible].abs().max() == 0


def test_only_transformers_have_attention():
    assert explain.is_local_transformer(tiny("transformer_1d"))
    assert not explain.is_local_transformer(tiny("gated_pixelcnn"))
    assert not explain.is_local_transformer(tiny("row_lstm"))
