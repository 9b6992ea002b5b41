"""What a job does: sample, complete, upscale or explain with one served checkpoint, showing the
canvas as it is written, exactly as the ``imagegen`` command of the same name and seed would.

Each task is a callable ``task(job) -> Result`` that holds its checkpoint's lock while it works. The
sampler's progress callback is ``job.step``, which raises ``Stopped`` when Stop is pressed: the
sampling loop ends there and then. Live frames come from ``imagegen.explain.watch``.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import completion
from ..explain import Animation, watch
from ..imageio import from_uint8, make_grid, nearest_upsample
from ..sampling import sample
from .catalog import Served
from .jobs import Job, Result
from .pictures import grid_png, image_pngs, png

_PLOTTING = threading.Lock()  # matplotlib's pyplot is not thread-safe


def labels(served: Served, label: int | None, num: int) -> torch.Tensor | None:
    """The class labels ``(num,)`` of a class-conditional checkpoint (``label``, or 0, 1, ... cycling,
    as ``imagegen sample`` takes them), else None."""
    model = served.model
    if not model.num_classes:
        return None
    chosen = torch.full((num,), label) if label is not None else torch.arange(num) % model.num_classes
    return chosen.to(next(model.parameters()).device)


def painting(job: Job, served: Served, film: Animation, start: int):
    """A ``watch`` on the checkpoint's model that fills ``film``'s row from column ``start`` with the
    sampler's canvas and shows the whole film to the job's watchers, once per image row."""

    def on_canvas(canvas: torch.Tensor) -> None:
        film.set(0, canvas, start)
        job.show(png(make_grid(film.grid.flatten(0, 1), nrow=film.nrow)))

    return watch(served.model, on_canvas)


def _options(num: int, temperature: float, seed: int) -> str:
    return f"--num {num} --temperature {temperature} --seed {seed}"


@dataclass
class Sample:
    """``imagegen sample --num N --temperature T --seed S [--label L]``."""

    served: Served
    num: int
    temperature: float
    seed: int
    label: int | None = None

    def __call__(self, job: Job) -> Result:
        model = self.served.model
        film = Animation(1, self.num, model.shape, model.levels)
        with self.served.lock, painting(job, self.served, film, 0):
            images = sample(model, self.num, temperature=self.temperature, seed=self.seed,
                            cond=labels(self.served, self.label, self.num), progress=job.step)
        label = "" if self.label is None else f" --label {self.label}"
        return Result({"grid": grid_png(images, model.levels), **image_pngs(images, model.levels)},
                      f"{self.num} samples from {self.served.title}",
                      f"imagegen sample --checkpoint {self.served.key} "
                      f"{_options(self.num, self.temperature, self.seed)}{label} --out samples.png")


@dataclass
class Complete:
    """``imagegen complete``: keep ``keep (C, H, W)`` of ``image (C, H, W)`` (values in ``[0, K)``) and
    sample the rest ``num`` times; the grid is the CLI's row (original, kept part, completions)."""

    served: Served
    image: torch.Tensor
    keep: torch.Tensor
    num: int
    temperature: float
    seed: int
    filename: str
    keep_rows: int | None = None
    label: int | None = None
    resize: bool = False

    def __call__(self, job: Job) -> Result:
        model = self.served.model
        shown = torch.where(self.keep, self.image, from_uint8(torch.tensor(128), model.levels))
        film = Animation(1, self.num + 2, model.shape, model.levels, nrow=self.num + 2)
        film.set(0, torch.stack([self.image, shown]))
        with self.served.lock, painting(job, self.served, film, 2):
            drawn = completion.complete(model, self.image, self.keep, self.num, temperature=self.temperature,
                                        seed=self.seed, cond=labels(self.served, self.label, self.num),
                                        progress=job.step)
        row = torch.cat([self.image[None], shown[None], drawn.long().cpu()])
        clamped = completion.clamped(model, self.keep)
        note = f"; {clamped} kept sub-pixels come after generated ones and are held fixed" if clamped else ""
        pictures = {"grid": grid_png(row, model.levels, nrow=len(row)), **image_pngs(drawn, model.levels)}
        what = f"--keep-rows {self.keep_rows}"
        if self.keep_rows is None:  # a drawn mask, as the file --mask reads (white: kept)
            pictures["mask"] = png(self.keep[:1].to(torch.uint8) * 255)
            what = "--mask imagegen-complete-mask.png"
        extra = f" --label {self.label}" if self.label is not None else ""
        extra += " --resize" if self.resize else ""
        return Result(pictures, f"{self.num} completions of {self.filename} by {self.served.title}{note}",
                      f"imagegen complete --checkpoint {self.served.key} --image {self.filename} {what} "
                      f"{_options(self.num, self.temperature, self.seed)}{extra} --out completions.png")


@dataclass
class Upscale:
    """``imagegen upscale``: ``num`` samples of a super-resolution checkpoint given ``low (C, h, w)``;
    the grid is the CLI's row (the input enlarged, then the samples)."""

    served: Served
    low: torch.Tensor
    num: int
    temperature: float
    seed: int
    filename: str
    resize: bool = False

    def __call__(self, job: Job) -> Result:
        model = self.served.model
        big = nearest_upsample(self.low[None], model.upscale_factor)
        film = Animation(1, self.num + 1, model.shape, model.levels, nrow=self.num + 1)
        film.set(0, big)
        cond = self.low[None].expand(self.num, -1, -1, -1).to(next(model.parameters()).device)
        with self.served.lock, painting(job, self.served, film, 1):
            drawn = sample(model, self.num, temperature=self.temperature, seed=self.seed, cond=cond,
                           progress=job.step)
        row = torch.cat([big, drawn.long().cpu()])
        return Result({"grid": grid_png(row, model.levels, nrow=len(row)), **image_pngs(drawn, model.levels)},
                      f"{self.num} upscalings of {self.filename} by {self.served.title}",
                      f"imagegen upscale --checkpoint {self.served.key} --image {self.filename} "
                      f"{_options(self.num, self.temperature, self.seed)}"
                      f"{' --resize' if self.resize else ''} --out upscaled.png")


@dataclass
class Explain:
    """``imagegen explain nll | attention | receptive-field`` of ``image (C, H, W)`` (values in
    ``[0, K)``): one picture, drawn in ``folder`` and read back. ``pixel``: ``(channel, row, col)``."""

    served: Served
    what: str
    image: torch.Tensor
    filename: str
    folder: Path
    pixel: tuple[int, int, int] | None = None
    label: int | None = None

    def __call__(self, job: Job) -> Result:
        from ..explain.attention import attention_map, plot_attention
        from ..explain.nll import nll_map, plot_nll
        from ..explain.receptive_field import future, plot_receptive_field, receptive_field

        model, image = self.served.model, self.image
        path = self.folder / f"{job.id}.png"
        title = f"{self.served.title} on {self.filename}"
        at = "" if self.pixel is None else f"row {self.pixel[1]}, column {self.pixel[2]}"
        pixel = "" if self.pixel is None else f" --pixel {self.pixel[1]},{self.pixel[2]},{self.pixel[0]}"
        with self.served.lock:
            device = next(model.parameters()).device
            cond = model.condition(image[None].to(device), labels(self.served, self.label, 1))
            if self.what == "nll":
                bits = nll_map(model, image, cond)
                summary = f"{float(bits.mean()):.4f} bits/dim, {float(bits.sum()):.1f} bits in all"
                draw = lambda: plot_nll(image, bits, model.levels, path, title)  # noqa: E731
            elif self.what == "attention":
                amap = attention_map(model, image, self.pixel, cond)
                summary = f"where {at} attends, layer by layer (mean of the heads)"
                draw = lambda: plot_attention(amap, image, model.levels, path, title,  # noqa: E731
                                              list(range(len(model.blocks))), "mean")
            else:
                # A copy takes the gradients: caches the model filled while sampling (in inference mode)
                # cannot take part in them.
                field = receptive_field(copy.deepcopy(model), image[None], self.pixel, cond)
                later = future(model, tuple(image.shape), self.pixel)
                summary = f"what {at} depends on"
                draw = lambda: plot_receptive_field(field, later, self.pixel, path, title,  # noqa: E731
                                                    f"{self.filename} (1 image)")
        with _PLOTTING:
            try:
                draw()
                picture = path.read_bytes()
            finally:
                path.unlink(missing_ok=True)
        label = "" if self.label is None else f" --label {self.label}"
        return Result({self.what: picture}, summary,
                      f"imagegen explain {self.what} --checkpoint {self.served.key} --image {self.filename}"
                      f"{pixel}{label} --out {self.what}.png")
