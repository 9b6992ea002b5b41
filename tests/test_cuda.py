"""What only a CUDA GPU can check (marked ``cuda``, skipped without one; ``scripts/gpu_check.py`` runs
them): the attention kernels equal to the reference on the GPU, every cached decoder equal to its
reference decoder there, a bf16 training run, and 2-GPU data parallel training."""

import pytest
import torch

from imagegen.models import build_model
from imagegen.models.attention import attention, has_xformers, local_1d_pattern, local_2d_pattern
from imagegen.training import Trainer
from tests.decoding import check_cached_matches_reference
from tests.helpers import tiny_config, tiny_mnist
from tests.test_families import MODELS
from tests.test_training import two_process_ranks

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
PATTERNS = {"1d": lambda: local_1d_pattern(40, 8, 8),
            "2d": lambda: local_2d_pattern(4, 10, (2, 4), (1, 2))[1], "full": lambda: None}


@pytest.fixture(autouse=True)
def _exact_float32():
    """float32 products in full precision (cuDNN convolutions default to TF32 on Ampere and later)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _qkv(N=40, D=16):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, N, D, generator=g).cuda().requires_grad_(True) for _ in range(3)]


@pytest.mark.parametrize("kind", list(PATTERNS))
@pytest.mark.parametrize("kernel", ["sdpa", "xformers"])
def test_kernel_matches_reference_forward_and_gradients(kernel, kind):
    if kernel == "xformers" and not has_xformers():
        pytest.skip("xformers is not installed (pip install -e '.[cuda]')")
    pattern = PATTERNS[kind]()
    pattern = pattern and pattern.to("cuda")
    results = []
    for name in ("reference", kernel):
        q, k, v = _qkv()
        out = attention(q, k, v, pattern, name)
        out.backward(torch.linspace(-1, 1, out.numel(), device="cuda").view_as(out))
        results.append((out, q.grad, k.grad, v.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("name", MODELS + ["transformer_1d", "transformer_2d"])
@pytest.mark.parametrize("channels", [1, 3])
def test_cached_decoder_matches_reference_on_cuda(name, channels):
    torch.manual_seed(1)
    transformer = name.startswith("transformer")
    hparams = dict(hidden=16, num_heads=2, ffn_hidden=24) if transformer else dict(hidden=6)
    model = build_model(name, channels=channels, image_size=(4, 5), levels=5, num_classes=2, num_layers=3,
                        **hparams).cuda().eval()
    check_cached_matches_reference(model, 3, cond=torch.tensor([0, 1, 1], device="cuda"))


def test_bf16_training_runs_on_the_gpu(tmp_path):
    data = tiny_mnist(tmp_path / "m.npz")
    trainer = Trainer(tiny_config(data, mixed_precision="bf16", max_steps=4), tmp_path / "run",
                      show_progress=False)
    assert trainer.accelerator.device.type == "cuda"
    trainer.fit()
    assert all(p.is_cuda and torch.isfinite(p).all() for p in trainer.raw_model.parameters())
    x, _ = trainer.batch(0)
    logits = trainer.model(x)
    assert torch.equal(logits, logits.bfloat16().float()), "logits were not computed in bf16"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_data_parallel_ranks_end_identical(tmp_path):
    two_process_ranks(tiny_mnist(tmp_path / "m.npz"), tmp_path, cuda=True)
