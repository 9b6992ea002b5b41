"""Training throughput of a config's model in fp32/bf16 x NCHW/channels_last, side by side.

    python scripts/bench_train.py                                   # configs/mnist_gated_pixelcnn.yaml
    python scripts/bench_train.py --device cuda --batch-size 64
    python scripts/bench_train.py --models gated_pixelcnn pixelcnn --steps 40
    python scripts/bench_train.py --quick --set model.hidden=4      # smoke test
    # PixelRNN: CIFAR-10 paper size (fp32, bf16), sampling 4 images of 28x28x1 at the shipped MNIST sizes
    python scripts/bench_train.py --config configs/cifar10_row_lstm.yaml --models row_lstm diagonal_bilstm \
        --layouts NCHW --steps 6 --block-steps 2 --warmup 1 \
        --sample-config configs/mnist_row_lstm.yaml --sample-shape 1,28,28 --num-samples 4

Prints a markdown table (median images/s over round-robin blocks of steps, and the ratio to
fp32 NCHW) headed by the machine it ran on, then one line per model timing ``imagegen.sampling.sample``
with the cached decoder against the reference one on a small shape.

A timed step is what ``imagegen train`` does per optimiser step, minus data loading and EMA:
forward, the shared loss ``imagegen.models.head.loss``, backward, gradient clipping when the
config sets ``train.grad_clip``, and an AdamW step. bf16 runs under ``torch.autocast``; channels_last
converts the model and the input batch. The images are random integers of the data's shape (the
dataset is not loaded). All variants start from the same weights and are interleaved block by block,
so that drift in the machine's speed (other jobs, clocks, heat) falls on all of them alike.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import exit_code, markdown_table

from imagegen.config import Config, load_config
from imagegen.data import dataset
from imagegen.errors import ConfigError
from imagegen.models import AutoregressiveModel, build_model
from imagegen.models.head import loss as nll_loss
from imagegen.sampling import sample

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mnist_gated_pixelcnn.yaml"
VARIANTS = (("fp32", "NCHW"), ("fp32", "channels_last"), ("bf16", "NCHW"), ("bf16", "channels_last"))


@dataclass
class Variant:
    """One (precision, memory format) setting of one model, with its own weights and optimiser."""

    precision: str
    layout: str
    model: AutoregressiveModel
    optimizer: torch.optim.Optimizer
    x: torch.Tensor  # (B, C, H, W) int64 batch, in the variant's memory format
    throughputs: list[float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, repeatable, e.g. --set model.hidden=32")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="registry models to bench (default: the config's); hparams come from the config "
                        "when the name matches it, else from configs/<dataset>_<name>.yaml, else defaults")
    p.add_argument("--batch-size", type=int, help="images per step (default: the config's train.batch_size)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (default: %(default)s)")
    p.add_argument("--block-steps", type=int, default=5,
                   help="steps per round-robin block; images/s is their median (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (default: %(default)s)")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", help="C,H,W of the random training images (default: from the dataset name)")
    p.add_argument("--sample-shape", help="C,H,W to time sampling on (default: C,12,12)")
    p.add_argument("--sample-config", help="YAML config whose model sizes the sampling timing uses, "
                   "looked up per model like --models does (default: the training config)")
    p.add_argument("--layouts", nargs="+", choices=["NCHW", "channels_last"],
                   default=["NCHW", "channels_last"], help="memory formats to time (default: both)")
    p.add_argument("--num-samples", type=int, default=16, help="images to sample (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 steps in blocks of 1, 1 warmup step")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.block_steps = 2, 1, 1
    if min(args.steps, args.block_steps, args.num_samples) < 1 or args.warmup < 0:
        p.error("--steps, --block-steps and --num-samples must be >= 1, --warmup >= 0")
    return args


def parse_shape(text: str, what: str) -> tuple[int, int, int]:
    """``"C,H,W"`` -> ``(C, H, W)`` of positive ints."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"{what} must be C,H,W with positive integers, e.g. 1,28,28; got {text!r}")
    return shape  # type: ignore[return-value]


def data_shape(config: Config, text: str | None) -> tuple[int, int, int]:
    """The training image shape: ``--shape`` if given, else the dataset's (resized to data.image_size)."""
    if text:
        return parse_shape(text, "--shape")
    shape = dataset(config.data.name, config.data.path).shape  # from the registry: no data is read
    if shape is None:
        raise ConfigError(f"no fixed image shape for dataset {config.data.name!r}: pass --shape C,H,W")
    c, h, w = shape
    size = config.data.image_size
    return (c, size, size) if size else (c, h, w)


def model_kwargs(config: Config, config_path: Path, name: str | None) -> dict:
    """``build_model`` hparams (with ``name``) for ``name`` (None: the config's own model)."""
    own = dict(config.model)
    if name is None or name == own["name"]:
        return own
    sibling = config_path.parent / f"{config.data.name}_{name}.yaml"
    if sibling.is_file():
        return {**load_config(sibling).model, "name": name}
    return {"name": name}


def make_model(kwargs: dict, config: Config, shape: tuple[int, int, int]) -> AutoregressiveModel:
    """Build the model for ``shape`` images; levels and classes follow ``config.data`` like the trainer."""
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    c, h, w = shape
    kwargs.update(channels=c, image_size=(h, w))
    entry = dataset(config.data.name, config.data.path)
    kwargs.setdefault("levels", 2 if config.data.binarize else entry.levels)
    if config.data.class_conditional:
        kwargs.setdefault("num_classes", entry.num_classes)
    try:
        return build_model(name, **kwargs)
    except ValueError as e:
        raise ConfigError(f"model {name}: {e}") from None


def make_variants(model: AutoregressiveModel, config: Config, batch: int, device: torch.device,
                  seed: int, layouts: tuple[str, ...] = ("NCHW", "channels_last")) -> list[Variant]:
    """The variants of ``model`` (fp32 and bf16 in each of ``layouts``), each a copy of the same
    initial weights with its own AdamW."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *model.shape)
    x = torch.randint(0, model.levels, shape, generator=g).to(device)
    t = config.train
    variants = []
    for precision, layout in VARIANTS:
        if layout not in layouts:
            continue
        m = copy.deepcopy(model).to(device).train()
        xv = x
        if layout == "channels_last":
            m = m.to(memory_format=torch.channels_last)
            xv = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(m.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        variants.append(Variant(precision, layout, m, opt, xv, []))
    return variants


def train_steps(v: Variant, steps: int, cond: torch.Tensor | None, grad_clip: float | None) -> torch.Tensor:
    """Run ``steps`` training steps of variant ``v``; returns the last loss (not synchronised)."""
    device_type = v.x.device.type
    for _ in range(steps):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=v.precision == "bf16"):
            loss = nll_loss(v.model(v.x, cond), v.x)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(v.model.parameters(), grad_clip)
        v.optimizer.step()
        v.optimizer.zero_grad(set_to_none=True)
    return loss


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(variants: list[Variant], args: argparse.Namespace, cond: torch.Tensor | None,
                   grad_clip: float | None) -> None:
    """Warm up every variant, then time round-robin blocks; fills each ``Variant.throughputs``."""
    device = variants[0].x.device
    batch = variants[0].x.shape[0]
    for v in variants:
        if args.warmup:
            train_steps(v, args.warmup, cond, grad_clip)
    synchronize(device)
    blocks = [args.block_steps] * (args.steps // args.block_steps)
    if args.steps % args.block_steps:
        blocks.append(args.steps % args.block_steps)
    for k, steps in enumerate(blocks):
        # Rotate the starting variant so none is always first (or last) in a round.
        for v in variants[k % len(variants):] + variants[: k % len(variants)]:
            synchronize(device)
            start = time.perf_counter()
            loss = train_steps(v, steps, cond, grad_clip)
            synchronize(device)
            v.throughputs.append(batch * steps / (time.perf_counter() - start))
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"{v.precision} {v.layout}: the loss became {loss.item()}")


def conditioning(model: AutoregressiveModel, num: int, device: torch.device, seed: int,
                 images: torch.Tensor | None = None) -> torch.Tensor | None:
    """The ``cond`` of ``num`` images for ``model`` (``model.condition``): labels 0, 1, ... for a
    class-conditional model, the downsampled ``images`` (random ones by default) for an upscaler."""
    if images is None:
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, model.levels, (num, *model.shape), generator=g)
    labels = torch.arange(num) % model.num_classes if model.num_classes else None
    cond = model.condition(images.cpu(), labels)
    return None if cond is None else cond.to(device)


def time_sampling(model: AutoregressiveModel, num: int, decoder: str, seed: int) -> float:
    """Seconds to draw ``num`` images from ``model`` with ``decoder`` ("cached" or "reference"),
    after one untimed single-image draw."""
    device = next(model.parameters()).device
    cond = conditioning(model, num, device, seed)
    sample(model, 1, seed=seed, cond=None if cond is None else cond[:1], decoder=decoder)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    sample(model, num, seed=seed, cond=cond, decoder=decoder)
    synchronize(device)
    return time.perf_counter() - start


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line(device: torch.device) -> str:
    """One line naming the CPU, cores, torch threads, torch version and device."""
    dev = str(device)
    if device.type == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name(device)})"
    return (f"machine: {cpu_name()}, {os.cpu_count()} cores (os.cpu_count), {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, python {platform.python_version()}, device {dev}")


def run(args: argparse.Namespace) -> None:
    """Bench every requested model and print the report."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    config_path = Path(args.config)
    config = load_config(config_path, args.overrides)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device")
    shape = data_shape(config, args.shape)
    sample_shape = (shape[0], 12, 12)
    if args.sample_shape:
        sample_shape = parse_shape(args.sample_shape, "--sample-shape")
    batch = args.batch_size or config.train.batch_size
    if batch < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch}")
    grad_clip = config.train.grad_clip
    blocks = math.ceil(args.steps / args.block_steps)

    print(f"## Training throughput ({' '.join([config_path.name, *args.overrides])})")
    print()
    print(machine_line(device))
    print()
    print(f"batch {batch}, images {'x'.join(map(str, shape))}, {args.warmup} warmup + {args.steps} timed "
          f"steps per variant in {blocks} round-robin block(s) of {args.block_steps}; step = forward, loss, "
          f"backward, {'grad clip, ' if grad_clip else ''}AdamW; images/s is the median of blocks (min-max)")
    print()
    rows, sampling_lines = [], []
    for name in args.models or [None]:
        kwargs = model_kwargs(config, config_path, name)
        model = make_model(kwargs, config, shape)
        params = sum(p.numel() for p in model.parameters())
        variants = make_variants(model, config, batch, device, args.seed, tuple(args.layouts))
        cond = conditioning(model, batch, device, args.seed, images=variants[0].x)
        bench_training(variants, args, cond, grad_clip)
        base = statistics.median(variants[0].throughputs)
        for v in variants:
            med = statistics.median(v.throughputs)
            rows.append([kwargs["name"], f"{params:,}", v.precision, v.layout, f"{med:.1f}",
                         f"{min(v.throughputs):.1f}-{max(v.throughputs):.1f}", f"{med / base:.2f}x"])
        del variants

        if args.sample_config:
            sample_path = Path(args.sample_config)
            sample_cfg = load_config(sample_path)
            sample_kwargs = model_kwargs(sample_cfg, sample_path, kwargs["name"])
            small = make_model(sample_kwargs, sample_cfg, sample_shape)
        else:
            small = make_model(kwargs, config, sample_shape)
        small = small.to(device)
        cached = time_sampling(small, args.num_samples, "cached", args.seed)
        reference = time_sampling(small, args.num_samples, "reference", args.seed)
        sampling_lines.append(
            f"sampling {kwargs['name']} ({sum(p.numel() for p in small.parameters()):,} parameters): "
            f"{args.num_samples} images of {'x'.join(map(str, sample_shape))} "
            f"(fp32, {device.type}): cached decoder {cached:.3f} s, reference decoder {reference:.3f} s "
            f"(reference / cached = {reference / cached:.1f}x; reference decoding re-runs the model for "
            f"every sub-pixel, O(N^2), so it is timed on this small shape only)")

    print(markdown_table(["model", "parameters", "precision", "memory format", "images/s", "min-max",
                          "vs fp32 NCHW"], rows))
    print()
    print("\n".join(sampling_lines))


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 2 (with one ``error:`` line on stderr) for bad input."""
    args = parse_args(argv)
    return exit_code(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
