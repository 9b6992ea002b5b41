"""The sampler: seeds, decoders, temperature, known sub-pixels, conditioning."""

import copy

import pytest
import torch

from imagegen.models import available_models, build_model
from imagegen.models.decoding import dense_layout
from imagegen.models.head import sample as sample_categorical
from imagegen.models.layout import to_sequence
from imagegen.sampling import decoding_threads, sample
from tests.decoding import divergence, teacher_forced_log_probs
from tests.test_precision import BOUNDS


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


def assert_argmax_of_own_logits(model, images, where):
    """Each sub-pixel of ``images (B, C, H, W)`` selected by the bool mask ``where`` is the argmax of the
    model's logits there, given the images themselves as context (where the top two logits are not
    within float rounding of each other)."""
    logits = model(images.long())
    top2 = logits.topk(2, -1).values
    decided = where & (top2[..., 0] - top2[..., 1] > 1e-4)
    assert decided.sum() > 0.9 * where.sum()
    assert torch.equal(images.long()[decided], logits.argmax(-1)[decided])


def test_temperature_zero_takes_the_argmax(model):
    x = sample(model, 2, temperature=0, seed=1)
    assert torch.equal(x, sample(model, 2, temperature=0, seed=2))
    assert_argmax_of_own_logits(model, x, torch.ones_like(x, dtype=torch.bool))


def test_completion_conditions_on_the_kept_subpixels(model):
    """At temperature 0 every generated sub-pixel is the argmax given the kept ones: the decoder was fed
    the kept values, not values of its own (which the output would hide by showing the kept ones)."""
    torch.manual_seed(3)
    known = torch.randint(0, 6, (2, 3, 4, 5))
    mask = torch.zeros(2, 3, 4, 5, dtype=torch.bool)
    mask[:, :, :2] = True  # the top two rows
    mask[:, 0, 2, 0] = True  # the red value of the next pixel: its green and blue are generated after it
    mask[0, 1, 3, 1] = True  # a kept sub-pixel after generated ones (clamped)
    x = sample(model, 2, temperature=0, known=known, known_mask=mask)
    assert torch.equal(x[mask], known[mask].to(torch.uint8))
    assert_argmax_of_own_logits(model, x, ~mask)  # (logits depend only on earlier sub-pixels)


def test_unseeded_sampling_leaves_the_global_generator_alone(model):
    """Also on a process's first sampling, when the decoder times its product layouts (``dense_layout``,
    cached per process: a resumed training run samples first at a later step than the run it continues,
    so a draw there would make the two runs' generators differ)."""
    dense_layout.cache_clear()
    state = torch.get_rng_state()
    a, b = sample(model, 2), sample(model, 2)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a, b)


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
    "dilated_pixelcnn": dict(hidden=6, num_layers=3),
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
def test_bf16_cached_decoder_runs_every_model(name):
    """Every model cast to bfloat16 (``--precision bf16``) decodes in bf16 and samples. How close bf16
    stays to float32 is checked where logits have their trained size, on the shipped checkpoints
    (tests/test_precision.py); these tiny random models' logits span about 1-5, too little to tell."""
    torch.manual_seed(0)
    m = build_model(name, channels=3, image_size=4, levels=8, **SMALL[name]).eval()
    images = torch.randint(0, 8, (2, 3, 4, 4))
    cond = m.condition(images, None)
    half = copy.deepcopy(m).to(torch.bfloat16)
    log_p = teacher_forced_log_probs(m, images, cond)
    log_q = teacher_forced_log_probs(half, images, cond)
    d = divergence(log_p, log_q, to_sequence(images))
    assert all(d[k] < bound for k, bound in BOUNDS.items()), d
    assert half.decoder(2, None, cond).next_logits().dtype == torch.bfloat16
    x = sample(half, 2, seed=0, cond=cond)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4, 4) and int(x.max()) < 8


def test_decoding_threads_one_for_small_steps_torchs_for_large_batches():
    """A step of small products decodes on one thread (threads only slow tiny ops down, badly so on a
    busy machine); a large batch leaves torch's thread setting (None)."""
    model = build_model("gated_pixelcnn", channels=1, image_size=8, hidden=48, num_layers=10)
    assert decoding_threads(model, 16) == 1
    assert decoding_threads(model, 1000) is None
    with torch.device("meta"):  # the CIFAR-10 transformer (configs/cifar10_transformer_1d.yaml), no memory
        big = build_model("transformer_1d", channels=3, image_size=32, hidden=512, num_layers=12, num_heads=4,
                          ffn_hidden=2048, block_length=256, memory_length=256)
    assert decoding_threads(big, 4) == 1
