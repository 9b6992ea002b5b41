"""Gradient causality checks shared by every model's tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imagegen.models import AutoregressiveModel
from imagegen.models.layout import to_sequence
from tests.helpers import one_thread


def input_gradients(model: AutoregressiveModel, x: torch.Tensor, position: int,
                    cond: torch.Tensor | None = None) -> torch.Tensor:
    """|d logits[sub-pixel position] / d one-hot input|, summed over K: ``(C*H*W,)`` in flat order.

    The model is fed one-hot inputs through a differentiable embedding of the integer image, so the
    gradient w.r.t. each sub-pixel's one-hot vector is defined whatever the model does with it:
    ``values = sum_k k * onehot_k`` for models that rescale the integers, or, for models with an
    ``input_embedding`` that has ``from_onehot``, that embedding applied to the one-hot vectors.
    """
    K = model.levels
    onehot = F.one_hot(x, K).float().requires_grad_(True)  # (B, C, H, W, K)
    embedding = getattr(model, "input_embedding", None)
    if embedding is not None and hasattr(embedding, "from_onehot"):
        # Models that look their input up in a table (an nn.Embedding cannot take floats) expose it
        # as ``model.input_embedding``: ``forward(x (B, C, H, W) ints) -> (B, C, H, W, d)`` and
        # ``from_onehot(onehot (B, C, H, W, K))``, the same map on one-hot vectors. The hook swaps
        # the looked-up output for the one-hot product, so the gradient reaches the one-hot input.
        hook = embedding.register_forward_hook(lambda module, args, out: module.from_onehot(onehot))
        try:
            logits = model(x, cond)
        finally:
            hook.remove()
    else:
        values = (onehot * torch.arange(K, dtype=torch.float32)).sum(-1)  # == x, but differentiable
        logits = model(values, cond)  # scale() takes float images, so the graph reaches the one-hot input
    to_sequence(logits)[:, position].sum().backward()  # logits (B, C*H*W, K) in flat order
    return to_sequence(onehot.grad.abs().sum(-1)).sum(0)


def check_causal(model: AutoregressiveModel, C: int, H: int, W: int, positions=None,
                 cond: torch.Tensor | None = None, generator_seed: int = 0, inputs: int = 4) -> None:
    """Assert, for each flat position p, zero gradient at p and every later sub-pixel in generation
    order, and a non-zero gradient at some earlier one (for every p but the first).

    Gradients are summed over ``inputs`` random images: a single image can hide a dependence behind a
    dead ReLU or a saturated gate, in either direction. ``cond``, if given, has ``inputs`` rows or is
    repeated to that many.
    """
    g = torch.Generator().manual_seed(generator_seed)
    x = torch.randint(0, model.levels, (inputs, C, H, W), generator=g)
    if cond is not None and len(cond) != inputs:
        cond = cond.repeat_interleave(-(-inputs // len(cond)), 0)[:inputs]
    order = model.generation_order(C, H, W)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    positions = range(C * H * W) if positions is None else positions
    with one_thread():  # hundreds of tiny forwards and backwards
        for p in positions:
            grad = input_gradients(model, x, p, cond)
            later = rank >= rank[p]
            assert grad[later].abs().max() == 0, f"position {p} depends on itself or a later sub-pixel"
            if rank[p] > 0:
                assert grad[~later].abs().max() > 0, f"position {p} sees nothing before it"


def seen_pixels(model: AutoregressiveModel, H: int, W: int, i: int, j: int, inputs: int = 4,
                seed: int = 0) -> torch.Tensor:
    """``(H, W)`` bool: which pixels the logits at pixel ``(i, j)`` of a 1-channel model have a
    gradient from, for any of ``inputs`` random images (one could hide a pixel behind a dead ReLU)."""
    x = torch.randint(0, model.levels, (inputs, 1, H, W), generator=torch.Generator().manual_seed(seed))
    return (input_gradients(model, x, i * W + j) > 0).view(H, W)


def pixels_before(H: int, W: int, i: int, j: int) -> torch.Tensor:
    """``(H, W)`` bool: the pixels before ``(i, j)`` in raster order."""
    before = torch.zeros(H, W, dtype=torch.bool)
    before.view(-1)[: i * W + j] = True
    return before
