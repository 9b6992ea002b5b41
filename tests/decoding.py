"""The cached-decoder check shared by every model family's tests."""

from __future__ import annotations

import torch

from imagegen.models import AutoregressiveModel


def check_cached_matches_reference(model: AutoregressiveModel, batch_size: int,
                                   cond: torch.Tensor | None = None,
                                   shape: tuple[int, int, int] | None = None,
                                   atol: float = 1e-4) -> None:
    """Push the same random values into ``model``'s cached and reference decoders and assert their
    logits agree (float32, ``atol``) at every step of the generation order."""
    C, H, W = shape or (model.channels, *model.image_size)
    values = torch.randint(0, model.levels, (C * H * W, batch_size))
    with torch.no_grad():
        ref, cached = model.reference_decoder(batch_size, shape, cond), model.decoder(batch_size, shape, cond)
        assert type(cached) is not type(ref)
        assert torch.equal(cached.order, ref.order)
        for t in range(C * H * W):
            torch.testing.assert_close(cached.next_logits(), ref.next_logits(), atol=atol, rtol=0,
                                       msg=f"step {t}")
            ref.push(values[t])
            cached.push(values[t])
