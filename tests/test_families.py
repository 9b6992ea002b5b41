"""Contracts every convolutional and recurrent model keeps alike: causality, the cached decoder matches
the reference decoder at every step, both give the same samples for a seed, and labels condition.
A new family joins by its name in ``MODELS`` (docs/adding_a_model.md)."""

import pytest
import torch

from imagegen.models import build_model
from imagegen.sampling import sample
from tests.causality import check_causal
from tests.decoding import check_cached_matches_reference

MODELS = ["pixelcnn", "gated_pixelcnn", "row_lstm", "diagonal_bilstm", "dilated_pixelcnn"]


@pytest.mark.parametrize("name", MODELS)
def test_causal_by_gradients_with_labels(name):
    """The gradient check of tests/causality.py on a class-conditional model, with 1 and 3 colours."""
    for channels in (1, 3):
        torch.manual_seed(0)
        model = build_model(name, channels=channels, image_size=(4, 5), levels=4, num_classes=3, hidden=6,
                            num_layers=2)
        check_causal(model, channels, 4, 5, cond=torch.tensor([1, 2]))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_cached_decoder_matches_reference_every_step(name, channels):
    torch.manual_seed(1)
    K, H, W = 5, 4, 5
    model = build_model(name, channels=channels, image_size=(H, W), levels=K, num_classes=2,
                        hidden=6, num_layers=3).eval()
    check_cached_matches_reference(model, 3, cond=torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_same_samples_from_both_decoders(name, channels):
    torch.manual_seed(0)
    m = build_model(name, channels=channels, image_size=(4, 5), levels=8, hidden=6, num_layers=2)
    a = sample(m, 3, seed=7, decoder="cached")
    b = sample(m, 3, seed=7, decoder="reference")
    assert a.dtype == torch.uint8 and a.shape == (3, channels, 4, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(m, 3, seed=8))


@pytest.mark.parametrize("name", MODELS)
def test_class_label_changes_logits(name):
    torch.manual_seed(0)
    model = build_model(name, channels=1, image_size=4, levels=4, num_classes=3)
    x = torch.randint(0, 4, (1, 1, 4, 4))
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([2])))
