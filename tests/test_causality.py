"""The causality helper itself: it must not call a model blind because one input hid a dependence."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imagegen.models import AutoregressiveModel
from imagegen.models.layout import to_image, to_sequence
from tests.causality import check_causal, seen_pixels


class PreviousThroughReLU(AutoregressiveModel):
    """A toy causal model: the logits of each sub-pixel are ``w * ReLU(s + 0.5)`` of the scaled value
    ``s`` of the sub-pixel before it in raster order, so the dependence is invisible to the gradient
    whenever that value lies in the lowest quarter (the ReLU is dead there)."""

    def __init__(self, channels: int, size: int, levels: int = 256):
        super().__init__(channels, size, levels)
        self.w = nn.Parameter(torch.linspace(-1, 1, levels))

    def forward(self, x, cond=None):
        _, C, H, W = x.shape
        flat = to_sequence(self.scale(x))
        previous = F.pad(flat, (1, 0))[:, :-1]
        logits = F.relu(previous + 0.5)[..., None] * self.w
        return to_image(logits, C, H, W)


def test_several_inputs_see_through_dead_relus():
    model = PreviousThroughReLU(1, 4)
    check_causal(model, 1, 4, 4)
    before = torch.zeros(4, 4, dtype=torch.bool)
    before[2, 1] = True
    assert torch.equal(seen_pixels(model, 4, 4, 2, 2), before)


def test_one_input_would_call_this_model_blind():
    """The reason for several inputs: with one image, some sub-pixel's predecessor is in the dead range."""
    with pytest.raises(AssertionError, match="sees nothing before it"):
        check_causal(PreviousThroughReLU(1, 4), 1, 4, 4, inputs=1)
