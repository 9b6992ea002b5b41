"""The sampler: seeds, decoders, temperature, known sub-pixels, conditioning."""

import copy

import pytest
import torch

from imagegen.models import available_models, build_model
from imagegen.models.head import sample as sample_categorical
from imagegen.sampling import sample


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("gated_pixelcnn", channels=3, image_size=(4, 5), levels=6, hidden=6, num_layers=2)


def test_values_in_range_and_not_constant(model):
    x = sample(model, 4, seed=0)
    assert int(x.max()) < 6 and len(x.unique()) > 2


def test_known_subpixels_are_kept(model):
    known = torch.randint(0, 6, (2, 3, 4, 5))
    mask = torch.zeros(2, 3, 4, 5, dtype=torch.bool)
    mask[:, :, :2] = True  # top two rows
    mask[1, 1, 3, 4] = True  # one later sub-pixel (kept by clamping)
    x = sample(model, 2, seed=1, known=known, known_mask=mask)
    assert torch.equal(x[mask], known[mask].to(torch.uint8))


def test_temperature_zero_is_greedy_and_deterministic(model):
    assert torch.equal(sample(model, 2, temperature=0, seed=1), sample(model, 2, temperature=0, seed=2))


def test_categorical_sampling_follows_probabilities():
    logits = torch.log(torch.tensor([[0.1, 0.0, 0.6, 0.3]])).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    draws = sample_categorical(logits, 1.0, g)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.015, rtol=0)
    hot = torch.bincount(sample_categorical(logits, 0.5, g), minlength=4).float() / len(draws)
    assert hot[2] > 0.75  # p^2 renormalised: 0.36 / 0.46


def test_class_conditional_needs_labels():
    m = build_model("pixelcnn", channels=1, image_size=3, levels=4, num_classes=2)
    with pytest.raises(ValueError, match="class-conditional"):
        sample(m, 1)
    assert sample(m, 2, cond=torch.tensor([0, 1]), seed=0).shape == (2, 1, 3, 3)


SMALL = {
    "pixelcnn": dict(hidden=6, num_layers=2),
    "gated_pixelcnn": dict(hidden=6, num_layers=2),
    "gated_pixelcnn_sr": dict(hidden=6, num_layers=2, upscale_factor=2),
    "row_lstm": dict(hidden=6, num_layers=2),
    "diagonal_bilstm": dict(hidden=6, num_layers=2),
    "transformer_1d": dict(hidden=8, num_layers=2, num_heads=2, ffn_hidden=16, block_length=8,
                           memory_length=4),
    "transformer_2d": dict(hidden=8, num_layers=2, num_heads=2, ffn_hidden=16, query_shape=(2, 6),
                           memory_flange=(1, 3)),
    "transformer_sr_1d": dict(hidden=8, num_layers=2, num_heads=2, ffn_hidden=16, block_length=8,
                              memory_length=4, upscale_factor=2),
    "transformer_sr_2d": dict(hidden=8, num_layers=2, num_heads=2, ffn_hidden=16, query_shape=(2, 6),
                              memory_flange=(1, 3), upscale_factor=2),
}


def test_every_model_is_listed_for_bf16():
    assert sorted(SMALL) == available_models()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bf16_cached_decoder_stays_close_to_fp32(name):
    """A model cast to bfloat16 (``--precision bf16``) decodes in bf16, and its next-value log
    probabilities stay within bf16 rounding of the float32 ones at every step."""
    torch.manual_seed(0)
    m = build_model(name, channels=3, image_size=4, levels=8, **SMALL[name]).eval()
    images = torch.randint(0, 8, (2, 3, 4, 4))
    cond = m.condition(images, None)
    half = copy.deepcopy(m).to(torch.bfloat16)
    with torch.no_grad():
        full_dec, half_dec = m.decoder(2, None, cond), half.decoder(2, None, cond)
        for t in range(len(full_dec.order)):
            full, low = full_dec.next_logits(), half_dec.next_logits()
            assert low.dtype == torch.bfloat16
            torch.testing.assert_close(low.float().log_softmax(-1), full.log_softmax(-1), atol=0.05, rtol=0,
                                       msg=f"step {t}")
            values = torch.randint(0, 8, (2,))
            full_dec.push(values)
            half_dec.push(values)
    x = sample(half, 2, seed=0, cond=cond)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4, 4) and int(x.max()) < 8
