"""The one sampler for every model: generation order, cached decoding, temperature, known
sub-pixels (completion) and conditioning (class labels, low-resolution images).

It is the only place that draws random numbers at generation time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .models import AutoregressiveModel
from .models.head import sample as sample_categorical


@torch.inference_mode()
def sample(model: AutoregressiveModel, num: int, *, temperature: float = 1.0, seed: int | None = None,
           cond: torch.Tensor | None = None, known: torch.Tensor | None = None,
           known_mask: torch.Tensor | None = None, decoder: str = "cached",
           shape: tuple[int, int, int] | None = None,
           progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Draw ``num`` images from ``model``: uint8 ``(num, C, H, W)``.

    Args:
        temperature: divides the logits; 0 takes the most likely value.
        seed: seeds the sampler's own generator (same seed, same images, whichever decoder).
        cond: the model's conditioning, batch-first with ``num`` rows (labels ``(num,)``, ...).
        known, known_mask: ``(num, C, H, W)`` values and a bool mask of sub-pixels to keep; those
            sub-pixels are pushed instead of drawn. Every sub-pixel that comes after a known one in
            generation order is conditioned on it exactly; a known sub-pixel that comes after
            unknown ones is kept as given but the ones before it did not see it.
        decoder: "cached" (the model's fast decoder) or "reference" (re-runs the model each step).
        shape: ``(C, H, W)`` to generate, default the model's own.
        progress: called as ``progress(step, total)`` after every sub-pixel.
    """
    if decoder not in ("cached", "reference"):
        raise ValueError(f"decoder must be 'cached' or 'reference', not {decoder!r}")
    if model.num_classes and cond is None:
        raise ValueError("this model is class-conditional: pass cond, a label per image")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    make = model.decoder if decoder == "cached" else model.reference_decoder
    dec = make(num, shape, cond)
    C, H, W = shape or (model.channels, *model.image_size)
    if known is not None:
        if known_mask is None:
            raise ValueError("known needs known_mask")
        known_flat = known.to(device).long().permute(0, 2, 3, 1).reshape(num, -1)
        mask_flat = known_mask.to(device).bool().permute(0, 2, 3, 1).reshape(num, -1)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    out = torch.zeros(num, H * W * C, dtype=torch.long, device=device)
    total = len(dec.order)
    for t in range(total):
        p = int(dec.order[t])
        logits = dec.next_logits()
        values = sample_categorical(logits, temperature, generator)
        if known is not None:
            values = torch.where(mask_flat[:, p], known_flat[:, p], values)
        dec.push(values)
        out[:, p] = values
        if progress is not None:
            progress(t + 1, total)
    model.train(was_training)
    return out.view(num, H, W, C).permute(0, 3, 1, 2).to(torch.uint8).contiguous()
