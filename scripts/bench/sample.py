"""``benchmark.py sample``: latency and throughput of the decoders, side by side in one process.

Cases (``--cases``, default all):

* ``gated``: gated PixelCNN 10 layers x 128 (random weights), 4 images of 1x28x28: cached fp32 and bf16,
  and the reference decoder (re-runs the whole model for every sub-pixel).
* ``default``: the default checkpoint (``imagegen.checkpoint.DEFAULT``), 16 images.
* ``throughput``: the default checkpoint, 1,000 images, against one forward pass over 1,000 images at the
  same precision and threads (what sampling would cost if it were one pass).
* ``transformer``: ``configs/cifar10_transformer_1d.yaml`` (12 x 512, blocks of 256), 4 images of 3x32x32.
* ``row_lstm``, ``diagonal_bilstm``: ``configs/cifar10_row_lstm.yaml``,
  ``configs/cifar10_diagonal_bilstm.yaml`` (12 layers, h = 128), 4 images of 3x32x32.

Every variant is a ``Sampling`` run (``imagegen.sampling``, the sampler itself, set-up included) and all
of them advance together, a slice of each run's steps at a time in turn, so that a shared machine's
drift falls on all alike. A reference decoder's step costs the same at every position (a whole forward
pass), so where it is slow it runs ``--reference-steps`` steps and its time is extrapolated to the image,
which the table says. ``floor`` is the weight bytes a step multiplies by (counted over one image row)
over the memory bandwidth (``--peak``'s JSON, else measured here): the time a step would take if it did
nothing but stream its weights from memory once.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from imagegen import checkpoint
from imagegen.config import load_config
from imagegen.data import dataset
from imagegen.errors import ConfigError
from imagegen.models import AutoregressiveModel, build_model
from imagegen.models import decoding as decoding_module
from imagegen.sampling import Sampling, cpu_threads_set, decoding_threads

from .common import Report, synchronize

HELP = "latency and throughput of the decoders (cached vs reference, fp32/bf16, per family)"
ROOT = Path(__file__).resolve().parents[2]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
FORWARD_RUNS = 3  # timed forward passes of a throughput case (their median is reported)


@dataclass
class Case:
    """One model and batch: ``make(quick)`` builds it (fp32, eval); which precisions and decoders to run."""

    label: str
    make: Callable[[bool], AutoregressiveModel]
    images: int
    precisions: tuple[str, ...] = ("fp32", "bf16")
    reference: bool = False
    forward: bool = False  # time one forward pass over the batch beside sampling it


@dataclass
class Variant:
    """One timed run: a ``Sampling`` (or a forward pass) of one case at one precision, thread setting and
    decoder, advanced in slices; ``seconds`` sums its slices."""

    case: str
    precision: str
    decoder: str
    threads: int | None  # None: torch's setting
    auto: bool  # the threads are the sampler's own choice
    model: AutoregressiveModel
    images: int
    steps: int  # steps it runs (a reference decoder: maybe fewer than the image has)
    total: int  # steps the image has
    run: Sampling | None = None
    done: int = 0
    seconds: float = 0.0
    forward_times: list[float] = field(default_factory=list)
    setup: Callable[[], Sampling] | None = None
    weight_bytes: float = 0.0  # per step

    @property
    def finished(self) -> bool:
        return self.done >= self.steps


def config_model(name: str, **small) -> Callable[[bool], AutoregressiveModel]:
    """A factory of ``configs/<name>.yaml``'s model at its dataset's shape (``quick``: ``small`` hparams on
    3x8x8 images), random weights (seed 0), fp32, eval."""

    def make(quick: bool) -> AutoregressiveModel:
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        kwargs = dict(config.model)
        model_name = kwargs.pop("name")
        entry = dataset(config.data.name)
        c, h, w = entry.shape
        if quick:
            kwargs.update(small)
            h = w = 8
        torch.manual_seed(0)
        return build_model(model_name, channels=c, image_size=(h, w), levels=entry.levels, **kwargs).eval()

    return make


def gated(quick: bool) -> AutoregressiveModel:
    torch.manual_seed(0)
    size = dict(hidden=8, num_layers=2) if quick else dict(hidden=128, num_layers=10)
    return build_model("gated_pixelcnn", channels=1, image_size=8 if quick else 28, **size).eval()


def default_checkpoint(quick: bool) -> AutoregressiveModel:
    """The shipped default checkpoint (fp32, eval); ``quick``: a tiny random model of its family."""
    model = checkpoint.load(checkpoint.DEFAULT)
    if not quick:
        return model
    torch.manual_seed(0)
    name = model.config["name"]
    tiny = TINY_TRANSFORMER if name.startswith("transformer") else TINY
    return build_model(name, channels=1, image_size=8, **tiny).eval()


TINY = dict(hidden=8, num_layers=2, out_hidden=8)
TINY_TRANSFORMER = dict(hidden=16, num_layers=2, num_heads=2, ffn_hidden=32, block_length=16,
                        memory_length=16)
CASES = {
    "gated": Case("gated PixelCNN 10x128, 1x28x28", gated, 4, reference=True),
    "default": Case(f"default checkpoint ({checkpoint.DEFAULT}), 1x28x28", default_checkpoint, 16),
    "throughput": Case(f"default checkpoint ({checkpoint.DEFAULT}), 1x28x28", default_checkpoint, 1000,
                       forward=True),
    "transformer": Case("Image Transformer 1D, CIFAR-10 size, 3x32x32",
                        config_model("cifar10_transformer_1d", **TINY_TRANSFORMER), 4, reference=True),
    "row_lstm": Case("Row LSTM, CIFAR-10 size, 3x32x32", config_model("cifar10_row_lstm", **TINY), 4,
                     ("fp32",), reference=True),
    "diagonal_bilstm": Case("Diagonal BiLSTM, CIFAR-10 size, 3x32x32",
                            config_model("cifar10_diagonal_bilstm", **TINY), 4, ("fp32",),
                            reference=True),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", nargs="+", default=["auto"],
                   help="CPU thread settings to run each cached variant at: auto (the sampler's choice) "
                        "and/or numbers (default: auto)")
    p.add_argument("--reference-steps", type=int, default=0,
                   help="steps of each reference decoder to time, extrapolated to the image (default: 16 "
                        "for images of at most 1,000 sub-pixels, else 3; --quick: the whole image)")
    p.add_argument("--slices", type=int, default=16, help="slices each run is cut into for the round-robin")
    p.add_argument("--peak", type=Path, help="a `benchmark.py peak` JSON for the memory bandwidth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models on 8x8 images, seconds")


def thread_settings(values: list[str]) -> list[int | str]:
    out: list[int | str] = []
    for v in values:
        if v != "auto" and not (v.isdigit() and int(v) >= 1):
            raise ConfigError(f"--threads takes 'auto' or positive numbers, not {v!r}")
        out.append(v if v == "auto" else int(v))
    return out


def cast(model: AutoregressiveModel, precision: str, device: torch.device) -> AutoregressiveModel:
    """``model`` on ``device`` in ``precision`` (a copy for bf16, as ``checkpoint.load(dtype=...)`` gives)."""
    import copy

    dtype = PRECISIONS[precision]
    return (copy.deepcopy(model) if dtype != torch.float32 else model).to(device, dtype).eval()


def weight_bytes_per_step(model: AutoregressiveModel, images: int, seed: int) -> float:
    """The bytes of the ``Dense`` weights a cached step multiplies by, averaged over the steps of the
    image's second row (the first has no row above; every later row repeats the second's work)."""
    C, _, W = model.shape
    counted = [0]
    call = decoding_module.Dense.__call__

    def counting(self, x, base=None):
        counted[0] += self.weight.numel() * self.weight.element_size()
        return call(self, x, base)

    run = Sampling(model, min(images, 2), seed=seed, cpu_threads=1)  # the bytes do not depend on the batch
    row = C * W
    with run.threads():
        steps = iter(run)
        for _ in range(row):
            next(steps)
        decoding_module.Dense.__call__ = counting
        try:
            for _ in range(row):
                next(steps)
        finally:
            decoding_module.Dense.__call__ = call
    return counted[0] / row


def bandwidth(args: argparse.Namespace, threads: int, device: torch.device) -> tuple[float, str]:
    """Bytes/s a large buffer on ``device`` is read at (with ``threads`` CPU threads), and where the number
    comes from."""
    if args.peak:
        import json

        from .peak import peak

        results = json.loads(args.peak.read_text())["results"]
        return peak(results, "read (large buffer)", threads), str(args.peak)
    big = torch.ones((16 if args.quick else 512) * 2**18, device=device)
    with cpu_threads_set(threads):
        big.sum()
        best = math.inf
        for _ in range(3):
            synchronize(device)
            start = time.perf_counter()
            big.sum()
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return big.numel() * 4 / best, "measured here (read of a large buffer)"


def make_variants(args: argparse.Namespace, device: torch.device) -> list[Variant]:
    variants = []
    for name in args.cases:
        case = CASES[name]
        base = case.make(args.quick)
        images = 2 if args.quick and case.images > 16 else case.images
        total = math.prod(base.shape)
        cond = None
        for precision in case.precisions:
            model = cast(base, precision, device)
            for threads in args.threads:
                t = decoding_threads(model, images) if threads == "auto" else threads
                v = Variant(name, precision, "cached", t, threads == "auto", model, images, total, total)
                v.setup = partial(Sampling, model, images, seed=args.seed, cond=cond, cpu_threads=t)
                variants.append(v)
                if case.forward:
                    variants.append(Variant(name, precision, "forward", t, threads == "auto", model, images,
                                            1, total))
        if case.reference:
            model = cast(base, "fp32", device)
            steps = args.reference_steps or (total if args.quick else 16 if total <= 1000 else 3)
            steps = min(steps, total)
            v = Variant(name, "fp32", "reference", 1, False, model, images, steps, total)
            v.setup = partial(Sampling, model, images, seed=args.seed, cond=cond, decoder="reference",
                              cpu_threads=1)
            variants.append(v)
    return variants


def advance(v: Variant, steps: int, device: torch.device) -> None:
    """Run ``steps`` more steps of ``v`` (its set-up on the first call), adding the time to ``v.seconds``."""
    synchronize(device)
    start = time.perf_counter()
    if v.decoder == "forward":
        images = torch.randint(0, v.model.levels, (v.images, *v.model.shape), device=device)
        with torch.inference_mode(), cpu_threads_set(v.threads):
            synchronize(device)
            start = time.perf_counter()
            v.model(images)
        v.done += 1
    else:
        if v.run is None:
            v.run = v.setup()
        with v.run.threads():
            for _, _ in zip(range(steps), v.run, strict=False):
                pass
        v.done = v.run.decoder.step
    synchronize(device)
    elapsed = time.perf_counter() - start
    if v.decoder == "forward":
        v.forward_times.append(elapsed)
    else:
        v.seconds += elapsed


def run(args: argparse.Namespace) -> Report:
    device = torch.device(args.device)
    args.threads = thread_settings(args.threads)
    if args.quick:
        args.slices = min(args.slices, 4)
    variants = make_variants(args, device)
    for v in variants:
        if v.decoder == "cached":
            v.weight_bytes = weight_bytes_per_step(v.model, v.images, args.seed)
    # Round-robin: every run advances by 1/slices of its steps in turn, the first variant rotating; a
    # forward pass runs FORWARD_RUNS times, spread over the slices.
    forward_slices = {round(i * args.slices / FORWARD_RUNS) for i in range(FORWARD_RUNS)}
    for k in range(args.slices):
        live = [v for v in variants if not v.finished or (v.decoder == "forward" and k in forward_slices)]
        for v in live[k % max(len(live), 1):] + live[: k % max(len(live), 1)]:
            if v.decoder == "forward":
                advance(v, 1, device)
            elif not v.finished:
                advance(v, math.ceil(v.steps / args.slices), device)
        timed = sum(v.seconds + sum(v.forward_times) for v in variants)
        print(f"slice {k + 1} of {args.slices}: {timed:.0f} s timed so far", file=sys.stderr, flush=True)
    for v in variants:
        if v.decoder != "forward" and not v.finished:
            advance(v, v.steps - v.done, device)
        if v.decoder == "cached":
            v.run.images()  # raises if anything was non-finite
    return report(args, variants)


def report(args: argparse.Namespace, variants: list[Variant]) -> Report:
    rows, results, bw_cache = [], [], {}
    reference = {v.case: v.seconds * v.total / v.steps for v in variants if v.decoder == "reference"}
    forward = {(v.case, v.precision, v.threads): sorted(v.forward_times)[len(v.forward_times) // 2]
               for v in variants if v.decoder == "forward"}
    for v in variants:
        case = CASES[v.case]
        threads = v.threads or torch.get_num_threads()
        params = sum(p.numel() for p in v.model.parameters())
        row = {"case": v.case, "model": case.label, "parameters": params, "images": v.images,
               "precision": v.precision, "decoder": v.decoder, "threads": threads, "auto_threads": v.auto}
        if v.decoder == "forward":
            seconds = forward[(v.case, v.precision, v.threads)]
            row.update(seconds=seconds, forward_runs=len(v.forward_times))
            cells = [f"{seconds:.2f} s (median of {len(v.forward_times)})", "", "", "", ""]
        else:
            seconds = v.seconds * v.total / v.steps
            per_step = seconds / v.total
            row.update(seconds=seconds, timed_steps=v.steps, steps=v.total, per_step=per_step)
            extrapolated = v.steps < v.total
            text = f"{seconds:.2f} s" + (f" (extrapolated from {v.steps} steps)" if extrapolated else "")
            cells = [text, f"{per_step * 1e3:.2f}", "", "", ""]
            if v.decoder == "cached":
                if threads not in bw_cache:
                    bw_cache[threads] = bandwidth(args, threads, torch.device(args.device))
                bw, source = bw_cache[threads]
                floor = v.weight_bytes / bw
                row.update(weight_bytes_per_step=v.weight_bytes, bandwidth=bw, bandwidth_source=source,
                           floor_per_step=floor)
                cells[2] = f"{floor * 1e6:.0f} ({v.weight_bytes / 2**20:.2f} MiB)"
                cells[3] = f"{per_step / floor:.1f}x"
                if v.case in reference:
                    row["vs_reference"] = reference[v.case] / seconds
                    cells[4] = f"{reference[v.case] / seconds:.0f}x faster than reference"
                key = (v.case, v.precision, v.threads)
                if key in forward:
                    row["vs_forward"] = seconds / forward[key]
                    cells[4] = f"{seconds / forward[key]:.2f}x one forward pass"
        rows.append([case.label, f"{row['parameters'] / 1e6:.2f} M", str(v.images), v.precision, v.decoder,
                     f"{threads}{' (auto)' if v.auto else ''}", *cells])
        results.append(row)
    source = next(iter(bw_cache.values()))[1] if bw_cache else "not measured"
    notes = ["per step = seconds / sub-pixels of the image; floor = the weight bytes a cached step "
             f"multiplies by / memory bandwidth ({source}); "
             "gap = per step / floor. Reference decoders run fp32 at 1 thread; 'extrapolated' rows timed the "
             "first steps only (every step of a reference decoder is a full forward pass). All variants ran "
             f"interleaved in {args.slices} round-robin slices."]
    headers = ["model", "parameters", "images", "precision", "decoder", "threads", "time", "per step ms",
               "floor µs/step (weights)", "gap", "ratio"]
    title = "Sampling: latency and throughput"
    if args.quick:
        title += " (--quick: tiny models, not the sizes named)"
    return Report(title, headers, rows, notes, {"results": results})
