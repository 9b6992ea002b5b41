"""The cached-decoder check shared by every model family's tests."""

from __future__ import annotations

import torch

from imagegen.models import AutoregressiveModel
from imagegen.models.layout import to_sequence
from tests.helpers import one_thread


def check_cached_matches_reference(model: AutoregressiveModel, batch_size: int,
                                   cond: torch.Tensor | None = None,
                                   shape: tuple[int, int, int] | None = None,
                                   atol: float = 1e-4) -> None:
    """Push the same random values into ``model``'s cached and reference decoders and assert their
    logits agree (float32, ``atol``) at every step of the generation order, on the model's device."""
    C, H, W = shape or model.shape
    values = torch.randint(0, model.levels, (C * H * W, batch_size)).to(next(model.parameters()).device)
    with torch.no_grad(), one_thread():
        ref, cached = model.reference_decoder(batch_size, shape, cond), model.decoder(batch_size, shape, cond)
        assert type(cached) is not type(ref)
        assert torch.equal(cached.order, ref.order)
        for t in range(C * H * W):
            torch.testing.assert_close(cached.next_logits(), ref.next_logits(), atol=atol, rtol=0,
                                       msg=f"step {t}")
            ref.push(values[t])
            cached.push(values[t])


def teacher_forced_log_probs(model: AutoregressiveModel, images: torch.Tensor,
                             cond: torch.Tensor | None = None) -> torch.Tensor:
    """The log-probabilities ``(B, N, K)`` (float32) that ``model``'s cached decoder gives each sub-pixel
    of ``images (B, C, H, W)``, pushing the images' own values; the N sub-pixels in flat order."""
    B, C, H, W = images.shape
    flat = to_sequence(images).long()
    out = torch.empty(B, C * H * W, model.levels)
    with torch.no_grad(), one_thread():
        dec = model.decoder(B, (C, H, W), cond)
        for p in dec.order.tolist():
            out[:, p] = dec.next_logits().float().log_softmax(-1)
            dec.push(flat[:, p])
    return out


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """How far the categorical distributions ``log_q (..., K)`` lie from ``log_p (..., K)`` (log-probs):
    the mean and the largest total variation distance over sub-pixels, and the mean absolute change
    of the log-probability (nats) of the ``targets (...)`` values."""
    tv = 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    t = targets.long().unsqueeze(-1)
    change = (log_p.gather(-1, t) - log_q.gather(-1, t)).abs()
    return {"mean_tv": float(tv.mean()), "max_tv": float(tv.max()), "mean_logp_change": float(change.mean())}
