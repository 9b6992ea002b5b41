"""The one sampler for every model: generation order, cached decoding, temperature, known
sub-pixels (completion) and conditioning (class labels, low-resolution images).

It is the only place that draws random numbers at generation time. ``sample`` draws images in one
call; ``Sampling`` is the same run one step at a time (what ``sample`` iterates, and what
``scripts/benchmark.py sample`` interleaves to time decoders side by side).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .errors import NonFiniteError
from .models import AutoregressiveModel
from .models.head import sample as sample_categorical
from .models.layout import to_image, to_sequence

#: Multiply-adds per matrix product of a decoding step from which splitting it across threads pays. The
#: CIFAR-10 transformer's 4-image step (2.5 M) gained 4% from a second thread on an idle 2-core CPU and
#: ran 33x slower with it while other processes held the cores (docs/benchmarks.md, "Sampling"); a
#: 1,000-image step of the default model (10 M) is where threads are worth that risk.
THREADED_PRODUCT = 2**23


@torch.inference_mode()
def sample(model: AutoregressiveModel, num: int, *, temperature: float = 1.0, seed: int | None = None,
           cond: torch.Tensor | None = None, known: torch.Tensor | None = None,
           known_mask: torch.Tensor | None = None, decoder: str = "cached",
           shape: tuple[int, int, int] | None = None,
           progress: Callable[[int, int], None] | None = None, cpu_threads: int | str | None = "auto"
           ) -> torch.Tensor:
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
        cpu_threads: torch intra-op threads while decoding on CPU: "auto" (``decoding_threads``: 1 for a
            step of small products, torch's setting for large ones), a number, or None (torch's setting).
    """
    run = Sampling(model, num, temperature=temperature, seed=seed, cond=cond, known=known,
                   known_mask=known_mask, decoder=decoder, shape=shape, cpu_threads=cpu_threads)
    with run.threads():
        for t in run:
            if progress is not None:
                progress(t + 1, run.total)
    return run.images()


def decoding_threads(model: nn.Module, batch: int) -> int | None:
    """The CPU intra-op threads for decoding ``batch`` images with ``model``: 1 when its step's matrix
    products are small (under ``THREADED_PRODUCT`` multiply-adds on average: a step is then many tiny
    ops, which threads only slow down, badly so on a busy machine), else None (torch's setting: a
    large batch, or wide layers, split well)."""
    params = sum(p.numel() for p in model.parameters())
    products = sum(isinstance(m, nn.Linear | nn.Conv2d) for m in model.modules())
    return None if batch * params / max(products, 1) >= THREADED_PRODUCT else 1


@contextlib.contextmanager
def cpu_threads_set(threads: int | None) -> Iterator[None]:
    """Inside the block torch uses ``threads`` intra-op threads (None: unchanged); restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Sampling:
    """One sampling run (``sample``'s arguments), step by step: iterating it decodes one sub-pixel per
    step and yields the step's index; ``images()`` is the result once every step is done. Decode inside
    ``threads()``. Its buffers (the decoder's canvas and caches, the uniforms) are made here, once."""

    def __init__(self, model: AutoregressiveModel, num: int, *, temperature: float = 1.0,
                 seed: int | None = None, cond: torch.Tensor | None = None, known: torch.Tensor | None = None,
                 known_mask: torch.Tensor | None = None, decoder: str = "cached",
                 shape: tuple[int, int, int] | None = None, cpu_threads: int | str | None = "auto"):
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, not {temperature}")
        if decoder not in ("cached", "reference"):
            raise ValueError(f"decoder must be 'cached' or 'reference', not {decoder!r}")
        if model.num_classes and cond is None:
            raise ValueError("this model is class-conditional: pass cond, a label per image")
        if known is not None and known_mask is None:
            raise ValueError("known needs known_mask")
        self.model, self.temperature = model, temperature
        self.shape = shape or model.shape
        self.device = next(model.parameters()).device
        self.cpu_threads = None
        if self.device.type == "cpu":
            self.cpu_threads = decoding_threads(model, num) if cpu_threads == "auto" else cpu_threads
        self.known = self.known_mask = None
        if known is not None:
            self.known = to_sequence(known.to(self.device).long())
            self.known_mask = to_sequence(known_mask.to(self.device).bool())
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()  # a fresh non-deterministic seed; torch's global generator is untouched
        else:
            self.generator.manual_seed(seed)
        make = model.decoder if decoder == "cached" else model.reference_decoder
        with self.threads():  # caches are laid out for the threads they run on
            self.decoder = make(num, shape, cond)
        self.positions = self.decoder.order.tolist()
        self.total = len(self.positions)
        self.uniform = torch.empty(num, 1, device=self.device)
        self.finite = torch.ones((), dtype=torch.bool, device=self.device)  # checked at the end: no sync

    def threads(self) -> contextlib.AbstractContextManager:
        """The context to decode in: the run's CPU threads, and the model in eval mode."""
        return _decoding(self.model, self.cpu_threads)

    def __iter__(self) -> Iterator[int]:
        dec, temperature = self.decoder, self.temperature
        for t, p in enumerate(self.positions[self.decoder.step :], start=self.decoder.step):
            with torch.inference_mode():
                logits = dec.next_logits().float()
                if temperature not in (0, 1):
                    logits = logits / temperature
                self.finite &= torch.isfinite(logits).all()
                values = sample_categorical(logits, 1 if temperature else 0, self.generator, self.uniform)
                if self.known is not None:
                    values = torch.where(self.known_mask[:, p], self.known[:, p], values)
                dec.push(values)
            yield t

    def images(self) -> torch.Tensor:
        """The drawn images, uint8 ``(num, C, H, W)``; raises ``NonFiniteError`` if any step's tempered
        logits were not finite."""
        if self.decoder.step < self.total:
            raise RuntimeError(f"sampling stopped at step {self.decoder.step} of {self.total}")
        if not self.finite:
            raise NonFiniteError(f"the model gave non-finite logits (NaN or inf) at temperature "
                                 f"{self.temperature:g}: its weights are broken or overflow, or the "
                                 "temperature is too small")
        return to_image(self.decoder.canvas, *self.shape).to(torch.uint8).contiguous()


@contextlib.contextmanager
def _decoding(model: nn.Module, threads: int | None) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with cpu_threads_set(threads):
            yield
    finally:
        model.train(was_training)
