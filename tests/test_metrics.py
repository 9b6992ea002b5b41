"""Bits/dim is the exact mean NLL in bits of the categorical head."""

import math

import torch

from imagegen.metrics import BitsPerDim, bits_per_dim
from imagegen.models import build_model
from imagegen.models.head import bits_per_dim as head_bpd


def test_uniform_model_is_log2_k_bits():
    logits = torch.zeros(3, 1, 2, 2, 16)
    x = torch.randint(0, 16, (3, 1, 2, 2))
    m = BitsPerDim()
    m.update(logits, x)
    assert abs(float(m.compute()) - 4.0) < 1e-6


def test_bits_per_dim_matches_hand_computed_nll():
    torch.manual_seed(0)
    model = build_model("pixelcnn", channels=3, image_size=4, levels=8).eval()
    x = torch.randint(0, 8, (5, 3, 4, 4))
    with torch.no_grad():
        logp = torch.log_softmax(model(x), -1)
    expected = -logp.gather(-1, x.unsqueeze(-1)).sum().item() / (x.numel() * math.log(2))
    got = bits_per_dim(model, x, batch_size=2)  # batches of unequal size must still average per sub-pixel
    assert abs(got - expected) < 1e-5
    with torch.no_grad():
        assert abs(float(head_bpd(model(x), x)) - expected) < 1e-5
