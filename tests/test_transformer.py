"""Image Transformer (1D/2D local, super-resolution): causality, locality, cached decoding, sampling."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagegen import checkpoint
from imagegen.data.pairs import area_downsample
from imagegen.models import attention, available_models, build_model
from imagegen.sampling import sample
from tests.causality import check_causal, input_gradients
from tests.decoding import check_cached_matches_reference

H, W, K = 4, 6, 5
LOCAL = {"transformer_1d": dict(block_length=5, memory_length=3),
         "transformer_2d": dict(query_shape=(2, 4), memory_flange=(1, 2))}
SR = {"transformer_sr_1d": dict(block_length=16, memory_length=8),
      "transformer_sr_2d": dict(query_shape=(2, 4), memory_flange=(1, 2))}


def make(name, channels, **kw):
    torch.manual_seed(0)
    hparams = {**LOCAL.get(name, {}), **SR.get(name, {}), **kw}
    size = hparams.pop("image_size", (H, W))
    return build_model(name, channels=channels, image_size=size, levels=K, hidden=16, num_heads=2,
                       ffn_hidden=24, **hparams).eval()


def test_registered():
    names = {"transformer_1d", "transformer_2d", "transformer_sr_1d", "transformer_sr_2d"}
    assert names <= set(available_models())


@pytest.mark.parametrize("name", list(LOCAL))
@pytest.mark.parametrize("channels", [1, 3])
def test_causal_by_gradients(name, channels):
    # Blocks of 5 (1D) and 2x4 (2D) over 4x(6*C) sub-pixels: many positions sit at block edges.
    check_causal(make(name, channels), channels, H, W)


@pytest.mark.parametrize("name", list(LOCAL))
def test_causal_class_conditional(name):
    check_causal(make(name, 3, num_classes=3), 3, H, W, cond=torch.tensor([1, 2]))


@pytest.mark.parametrize("name", list(LOCAL))
@pytest.mark.parametrize("channels", [1, 3])
def test_one_layer_sees_exactly_its_shifted_memory(name, channels):
    """With one layer, the logits at position t depend on the values at t' - 1 for every t' that t
    attends to: the memory window (block edges included), shifted by the input's right shift."""
    model = make(name, channels, num_layers=1)
    order, _, pattern = model.layout(channels, H, W)
    order = model.generation_order(channels, H, W)
    x = torch.randint(0, K, (1, channels, H, W), generator=torch.Generator().manual_seed(3))
    for start, stop, earlier in pattern.decoding_blocks():
        for t in range(start, stop):
            visible = torch.cat([earlier, torch.arange(start, t + 1)])
            expected = torch.zeros(len(order), dtype=torch.bool)
            expected[order[visible[visible > 0] - 1]] = True
            seen = input_gradients(model, x, int(order[t])) > 0
            assert torch.equal(seen, expected), f"position {t}"


@pytest.mark.parametrize("name", list(LOCAL) + list(SR))
@pytest.mark.parametrize("channels", [1, 3])
def test_cached_decoder_matches_reference_every_step(name, channels):
    if name in SR:
        model = make(name, channels, image_size=(8, 8), upscale_factor=4, encoder_layers=1)
        cond = torch.randint(0, K, (3, channels, 2, 2))
        shape = (channels, 8, 8)
    else:
        model, cond, shape = make(name, channels, num_classes=2, num_layers=3), torch.tensor([0, 1, 1]), None
    check_cached_matches_reference(model, 3, cond=cond, shape=shape)


@pytest.mark.parametrize("name", list(LOCAL))
@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_same_samples_from_both_decoders(name, channels):
    model = make(name, channels)
    a = sample(model, 2, seed=5, decoder="cached")
    assert a.shape == (2, channels, H, W) and a.dtype == torch.uint8
    assert torch.equal(a, sample(model, 2, seed=5, decoder="reference"))
    assert torch.equal(a, sample(model, 2, seed=5))
    assert not torch.equal(a, sample(model, 2, seed=6))


@pytest.mark.parametrize("name", list(LOCAL))
def test_kernels_give_the_same_logits(name, monkeypatch):
    """The model with the reference kernel against the same model with SDPA. Each kernel is spied on:
    a model that ignored ``model.kernel`` would compare SDPA with itself."""
    calls = []
    for kernel, fn in list(attention._KERNEL_FUNCS.items()):
        monkeypatch.setitem(attention._KERNEL_FUNCS, kernel,
                            lambda *args, kernel=kernel, fn=fn: calls.append(kernel) or fn(*args))

    def logits(kernel):
        model.kernel = kernel
        calls.clear()
        out = model(x)
        assert set(calls) == {"reference" if kernel == "reference" else "sdpa"}, (kernel, calls)
        return out

    model = make(name, 3, num_layers=2)
    x = torch.randint(0, K, (2, 3, H, W))
    ref = logits("reference")
    torch.testing.assert_close(logits("sdpa"), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits("auto"), ref, atol=1e-5, rtol=1e-5)  # sdpa on CPU
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("name", list(SR))
def test_super_resolution_contract_and_causality(name):
    model = make(name, 3, image_size=(8, 8), upscale_factor=4, encoder_layers=1)
    assert model.upscale_factor == 4 and model.lowres_size == (2, 2)
    high = torch.randint(0, K, (2, 3, 8, 8))
    low = area_downsample(high, 4)
    logits = model(high, low)
    assert logits.shape == (2, 3, 8, 8, K)
    assert not torch.allclose(logits, model(high, (low + 1) % K))
    positions = [0, 1, 2, 15, 16, 17, 47, 96, 191]  # block edges of the 1D (16) and 2D (2x4) layouts
    check_causal(model, 3, 8, 8, positions=positions, cond=low)
    with pytest.raises(ValueError, match="upscales 2x2 low-resolution"):
        model(high)
    with pytest.raises(ValueError, match="got shape"):
        model(high, high)
    assert sample(model, 2, seed=0, cond=low).shape == (2, 3, 8, 8)


def test_super_resolution_trains_with_the_trainer(tmp_path):
    """The trainer makes cond with model.condition (area-downsampling by upscale_factor)."""
    from imagegen.training import Trainer
    from tests.helpers import tiny_config, tiny_mnist

    config = tiny_config(tiny_mnist(tmp_path / "tiny.npz", n_train=8, n_test=4), max_steps=2, eval_every=2,
                         eval_images=4, checkpoint_every=2, sample_every=2, num_samples=2)
    config.model = dict(name="transformer_sr_1d", hidden=16, num_layers=1, num_heads=2, ffn_hidden=16,
                        block_length=16, memory_length=16, encoder_layers=1, upscale_factor=4)
    config.data.val_size = 2
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    trainer.fit()
    model = checkpoint.load(tmp_path / "run" / "model")
    assert model.lowres_size == (2, 2) and model.upscale_factor == 4


def test_hparam_errors_are_value_errors():
    with pytest.raises(ValueError, match="2D hparams"):
        build_model("transformer_1d", channels=1, image_size=4, query_shape=[2, 2])
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_model("transformer_2d", channels=1, image_size=4, hidden=10, num_heads=4)
    with pytest.raises(ValueError, match="upscale_factor"):
        build_model("transformer_sr_1d", channels=1, image_size=6, upscale_factor=4)
    with pytest.raises(ValueError, match="unknown attention kernel"):
        build_model("transformer_1d", channels=1, image_size=4, kernel="nope")


def test_checkpoint_round_trip(tmp_path):
    model = make("transformer_2d", 1, query_shape=[2, 3])  # a list, as YAML gives it
    checkpoint.save(model, tmp_path / "m")
    loaded = checkpoint.load(tmp_path / "m")
    x = torch.randint(0, K, (2, 1, H, W))
    torch.testing.assert_close(loaded(x), model(x))
    assert torch.equal(loaded.generation_order(1, H, W), model.generation_order(1, H, W))



def test_bench_transformer_quick():
    """scripts/bench_transformer.py end to end on a tiny model, as tests/test_scripts.py runs bench_train."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_transformer.py"
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "machine: " in out and f"torch {torch.__version__}" in out
    for text in ("| fp32 |", "| bf16 |", "cached decoder", "| reference |", "| sdpa |"):
        assert text in out, text


@pytest.mark.parametrize("name", ["transformer_1d", "transformer_2d"])
def test_a_model_first_used_for_sampling_still_trains(name):
    """The layout a transformer caches on its first call may be made under inference mode (sampling
    first); it must not be an inference tensor that a later backward pass cannot save."""
    model = make(name, 1)
    sample(model, 1, seed=0)
    x = torch.randint(0, K, (2, 1, H, W))
    model(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
