"""The one sampler for every model: generation order, cached decoding, temperature, known
sub-pixels (completion) and conditioning (class labels, low-resolution images).

It is the only place that draws random numbers at generation time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import NonFiniteError
from .models import AutoregressiveModel
from .models.head import sample as sample_categorical
from .models.layout import to_image, to_sequence


@torch.inference_mode()
def sample(model: AutoregressiveModel, num: int, *, temperature: float = 1.0, seed: int | None = None,
           cond: torch.Tensor | None = None, known: torch.Tensor | None = None,
           known_mask: torch.Tensor | None = None, decoder: str = "cached",
           shape: tuple[int, int, int] | None = None,
           progress: Callable[[int, int], None] | None = None, cpu_threads: int | None = 1) -> torch.Tensor:
    """Draw ``num`` images from ``model``: uint8 ``(num, C, H, W)``.

    Args:
        temperature: divides the logits; 0 takes the most likely value. NaN, infinite or negative
            raises ValueError; non-finite tempered logits at any step (broken weights, overflow, a
            temperature too small to divide by) raise ``NonFiniteError`` after the loop.
        seed: seeds the sampler's own generator (same seed, same images, whichever decoder); None
            draws a fresh seed for it. Torch's global random state is never read or changed.
        cond: the model's conditioning, batch-first with ``num`` rows (labels ``(num,)``, ...).
        known, known_mask: ``(num, C, H, W)`` values and a bool mask of sub-pixels to keep; those
            sub-pixels are pushed instead of drawn. Every sub-pixel that comes after a known one in
            generation order is conditioned on it exactly; a known sub-pixel that comes after
            unknown ones is kept as given but the ones before it did not see it.
        decoder: "cached" (the model's fast decoder) or "reference" (re-runs the model each step).
        shape: ``(C, H, W)`` to generate, default the model's own.
        progress: called as ``progress(step, total)`` after every sub-pixel.
        cpu_threads: torch intra-op threads while decoding on CPU. A cached step is many tiny ops that
            threads only slow down (badly so on a busy machine), hence 1; None keeps torch's setting.
    """
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, not {temperature}")
    if decoder not in ("cached", "reference"):
        raise ValueError(f"decoder must be 'cached' or 'reference', not {decoder!r}")
    if model.num_classes and cond is None:
        raise ValueError("this model is class-conditional: pass cond, a label per image")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    make = model.decoder if decoder == "cached" else model.reference_decoder
    dec = make(num, shape, cond)
    C, H, W = shape or model.shape
    known_flat = mask_flat = None
    if known is not None:
        if known_mask is None:
            raise ValueError("known needs known_mask")
        known_flat = to_sequence(known.to(device).long())
        mask_flat = to_sequence(known_mask.to(device).bool())
    threads = torch.get_num_threads()
    if cpu_threads and device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    try:
        flat = _decode(dec, temperature, seed, known_flat, mask_flat, progress, device)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return to_image(flat, C, H, W).to(torch.uint8).contiguous()


def _decode(dec, temperature, seed, known_flat, mask_flat, progress, device) -> torch.Tensor:
    """The sampling loop: draws or copies every sub-pixel in ``dec.order``; ``(B, H*W*C)`` long."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # a fresh non-deterministic seed for this generator; torch's global one is untouched
    else:
        generator.manual_seed(seed)
    total = len(dec.order)
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked once at the end: no sync per step
    for t in range(total):
        p = int(dec.order[t])
        logits = dec.next_logits()
        finite &= torch.isfinite(logits.float() / (temperature or 1.0)).all()
        values = sample_categorical(logits, temperature, generator)
        if known_flat is not None:
            values = torch.where(mask_flat[:, p], known_flat[:, p], values)
        dec.push(values)
        if progress is not None:
            progress(t + 1, total)
    if not finite:
        raise NonFiniteError(f"the model gave non-finite logits (NaN or inf) at temperature {temperature:g}: "
                             "its weights are broken or overflow, or the temperature is too small")
    return dec.canvas
