"""``benchmark.py train``: training speed per family at named configs, images/s and MFU, side by side.

    python scripts/benchmark.py train                          # every case, fp32/bf16 x NCHW/channels_last
    python scripts/benchmark.py train --cases gated_pixelcnn_10x128 cifar10_transformer_1d \\
        --precision bf16 --compile off on --kernel auto reference sdpa
    python scripts/benchmark.py train --config configs/cifar10_row_lstm.yaml --batch-size 16
    python scripts/benchmark.py train --quick                  # smoke test: tiny models, seconds

A *case* is a config's model and train sections at a batch size (``CASES``; or ``--config``). A *variant*
of it is a precision (fp32, or bf16 under ``torch.autocast``), a memory format (channels_last for models
with convolutions), ``torch.compile`` off or on, and for the Image Transformer an attention kernel
(``auto`` is the model's default; the table names the kernel it ran). Every variant starts from the
same weights with its own optimizer, and all of them, with the peak matmuls, run interleaved round-robin
in one process (``bench.common.interleaved``), so drift in a shared machine's speed falls on all alike.

A step is what ``imagegen train`` does per optimizer step minus data loading and EMA: forward, the shared
loss, backward, gradient clipping when the config clips, and the trainer's fused optimizer
(``imagegen.training.make_optimizer``), on random images of the data's shape.

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one forward and
backward of the model on the meta device (shapes only, so it is quick), transformers with the reference
attention kernel (the fused CPU kernel is invisible to the counter). It counts 2 FLOPs per multiply-add
of every matmul, batched matmul and convolution, including the ones a mask zeroes (masked kernel weights,
masked attention scores: they are computed); element-wise work and the optimizer are not counted.
MFU = FLOPs per step / median step time / peak, where peak is the fastest n x n x n ``torch.mm`` of the
same precision (``benchmark.py peak``'s matmul), three timed in every round beside the steps. On a busy
machine a step's median averages the load over seconds while a matmul can catch a quiet moment, so MFU
there is a lower bound; an MFU over 100% means the matmuls never got a quiet moment (rerun quiet).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from imagegen.config import Config, load_config
from imagegen.data import ImageData, dataset
from imagegen.errors import ConfigError
from imagegen.models import AutoregressiveModel
from imagegen.models.attention import resolve_kernel
from imagegen.models.head import loss as nll_loss
from imagegen.training import make_model, make_optimizer

from .common import Report, interleaved, summary, synchronize

HELP = "training images/s and MFU per family: fp32/bf16, NCHW/channels_last, torch.compile, kernels"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: name -> (config file, --set overrides, batch size or None for the config's)
CASES = {
    "gated_pixelcnn_10x128": ("mnist_gated_pixelcnn.yaml", ["model.hidden=128"], 16),
    "cifar10_transformer_1d": ("cifar10_transformer_1d.yaml", [], 4),
    **{stem: (f"{stem}.yaml", [], None) for stem in (  # the configs of the shipped checkpoints
        "mnist_gated_pixelcnn", "mnist_gated_pixelcnn_sr", "mnist_row_lstm", "mnist_diagonal_bilstm",
        "mnist_transformer_1d", "mnist_transformer_2d")},
}
QUICK_CASES = {
    "quick_gated_pixelcnn": ("mnist_gated_pixelcnn.yaml", ["model.hidden=4", "model.num_layers=2",
                                                           "model.out_hidden=4"], 2),
    "quick_transformer_1d": ("mnist_transformer_1d.yaml", ["model.hidden=8", "model.num_layers=1",
                                                           "model.num_heads=2", "model.ffn_hidden=8"], 2),
}
#: The Must-show training targets of issue 14: bf16 MFU of these cases.
TARGETS = {"gated_pixelcnn_10x128": 0.65, "cifar10_transformer_1d": 0.65}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = ["NCHW", "channels_last"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), metavar="CASE",
                   help=f"named cases (default: all of {', '.join(CASES)}; none with --config)")
    p.add_argument("--config", type=Path, help="bench this config instead of the named cases")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override for --config, repeatable")
    p.add_argument("--batch-size", type=int, help="images per step (default: the case's)")
    p.add_argument("--precision", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--layout", nargs="+", choices=LAYOUTS, default=LAYOUTS,
                   help="memory formats, for models with convolutions (default: both)")
    p.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"],
                   help="torch.compile of the model (default: off; 'off on' for both)")
    p.add_argument("--kernel", nargs="+", choices=["auto", "reference", "sdpa", "xformers"], default=["auto"],
                   help="attention kernels, for transformers (default: auto)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=1.0,
                   help="a timed call runs enough steps to last about this long (default: %(default)s)")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the peak n x n x n matmul")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models, 2 rounds, seconds")


@dataclass
class Variant:
    """One setting of one case: its own model copy, optimizer, batch, and the step it times."""

    case: str
    precision: str
    layout: str
    compiled: bool
    kernel: str  # the kernel name asked for ("auto", ...) or "-" for models without attention
    ran: str  # the kernel that ran ("-" likewise)
    steps: int = 1  # steps per timed call
    first: float = 0.0  # seconds of the first step (compilation included)
    step: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        compiled = "compiled" if self.compiled else "eager"
        return f"{self.case} | {self.precision} | {self.layout} | {compiled} | {self.kernel}"


@dataclass
class Case:
    """A model built from a config at a batch size, and what its variants share."""

    name: str
    config: Config
    model: AutoregressiveModel
    batch: int
    flops: float = 0.0
    flops_how: str = ""
    variants: list[Variant] = field(default_factory=list)


def build_case(name: str, path: Path, overrides: list[str], batch: int | None) -> Case:
    """The case's config (with ``overrides``) and its model for the data's shape, built as the trainer
    builds it (``imagegen.training.make_model``) without reading the data."""
    config = load_config(path, overrides)
    entry = dataset(config.data.name, config.data.path)
    if entry.shape is None:
        raise ConfigError(f"{path}: dataset {config.data.name!r} has no fixed image shape to bench")
    c, h, w = entry.shape
    if config.data.image_size:
        h = w = config.data.image_size
    levels = 2 if config.data.binarize else entry.levels
    labels = torch.zeros(1, dtype=torch.long) if config.data.class_conditional else None
    fake = ImageData(torch.zeros(1, c, h, w, dtype=torch.uint8), labels, levels, entry.num_classes)
    batch = batch or config.train.batch_size
    if batch < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch}")
    return Case(name, config, make_model(config, fake), batch)


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def batch_of(model: AutoregressiveModel, batch: int, seed: int, device: torch.device | str
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random training images ``(batch, C, H, W)`` int64 and their ``cond`` (``model.condition``;
    labels 0, 1, ... for a class-conditional model)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.levels, (batch, *model.shape), generator=g)
    labels = torch.arange(batch) % model.num_classes if model.num_classes else None
    cond = model.condition(x, labels)
    return x.to(device), None if cond is None else cond.to(device)


def count_flops(model: AutoregressiveModel, batch: int) -> tuple[float, str]:
    """FLOPs of one forward and backward at ``batch`` (see the module doc) and how they were counted:
    on the meta device, else (a model the meta device cannot run) for real in float32 on CPU."""
    x, cond = batch_of(model, batch, 0, "cpu")
    for device in ("meta", "cpu"):
        m = copy.deepcopy(model).to(device, torch.float32).train()
        if hasattr(m, "kernel"):
            m.kernel = "reference"
        try:
            x, cond = x.to(device), None if cond is None else cond.to(device)
            with FlopCounterMode(display=False) as counter:
                nll_loss(m(x, cond), x).backward()
            return float(counter.get_total_flops()), device
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
    raise AssertionError("unreachable")


def make_step(model: torch.nn.Module, forward, optimizer: torch.optim.Optimizer, x: torch.Tensor,
              cond: torch.Tensor | None, precision: str, grad_clip: float | None):
    """One training step of ``model`` (``forward`` is the model or its compiled version); returns the loss."""
    device_type = x.device.type

    def step() -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = nll_loss(forward(x, cond), x)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def make_variants(case: Case, args: argparse.Namespace, device: torch.device) -> list[Variant]:
    """Every requested variant of ``case`` that applies to its model (memory formats for models with
    convolutions, kernels for models with attention)."""
    layouts = args.layout if has_convolutions(case.model) else ["NCHW"]
    kernels = args.kernel if hasattr(case.model, "kernel") else ["-"]
    x, cond = batch_of(case.model, case.batch, args.seed, device)
    variants = []
    for precision in args.precision:
        for layout in layouts:
            for compiled in (c == "on" for c in args.compile):
                for kernel in kernels:
                    model = copy.deepcopy(case.model).to(device).train()
                    xv = x
                    if layout == "channels_last":
                        model = model.to(memory_format=torch.channels_last)
                        xv = x.contiguous(memory_format=torch.channels_last)
                    ran = "-"
                    if kernel != "-":
                        model.kernel = kernel
                        ran = resolve_kernel(kernel, device, DTYPES[precision])
                    forward = torch.compile(model) if compiled else model
                    optimizer = make_optimizer(case.config, model.parameters())
                    clip = case.config.train.grad_clip
                    step = make_step(model, forward, optimizer, xv, cond, precision, clip)
                    variants.append(Variant(case.name, precision, layout, compiled, kernel, ran, step=step))
    return variants


def warm_up(v: Variant, min_seconds: float, device: torch.device) -> None:
    """Run ``v``'s first step (timed: compilation happens there) and a second, which sets how many steps a
    timed call runs."""
    for i in range(2):
        synchronize(device)
        start = time.perf_counter()
        loss = v.step()
        synchronize(device)
        seconds = time.perf_counter() - start
        if i == 0:
            v.first = seconds
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"{v.name}: the loss is {loss.item()}")
    v.steps = max(1, math.ceil(min_seconds / seconds))


def run_steps(v: Variant) -> None:
    for _ in range(v.steps):
        v.step()


def peak_call(dtype: torch.dtype, n: int, device: torch.device):
    """A call of three n x n x n matmuls (``benchmark.py peak``'s workload), each timed on its own, and the
    FLOP/s of the fastest so far (a function): the limit, whatever share of a busy machine a round got."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in "ab")
    best = [math.inf]

    def call() -> None:
        for _ in range(3):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best[0] = min(best[0], time.perf_counter() - start)

    return call, lambda: 2.0 * n**3 / best[0]


def run(args: argparse.Namespace) -> Report:
    if args.quick:
        args.rounds, args.min_seconds, args.matmul_size = 2, 0.0, 128
    if args.rounds < 1 or args.min_seconds < 0 or args.matmul_size < 1:
        raise ConfigError("--rounds and --matmul-size must be >= 1, --min-seconds >= 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device")
    if "xformers" in args.kernel and device.type != "cuda":
        raise ConfigError("the xformers kernel runs on CUDA only: leave it out of --kernel on CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.config:
        specs = {args.config.stem: (args.config, args.overrides, args.batch_size)}
    else:
        named = QUICK_CASES if args.quick else {k: CASES[k] for k in args.cases or CASES}
        specs = {k: (CONFIGS / f, s, args.batch_size or b) for k, (f, s, b) in named.items()}
    cases = [build_case(name, path, overrides, batch) for name, (path, overrides, batch) in specs.items()]

    peaks = {p: peak_call(DTYPES[p], args.matmul_size, device) for p in args.precision}
    calls = {f"peak {p}": call for p, (call, _) in peaks.items()}
    for case in cases:
        case.flops, case.flops_how = count_flops(case.model, case.batch)
        case.variants = make_variants(case, args, device)
        for v in case.variants:
            warm_up(v, args.min_seconds, device)
            calls[v.name] = partial(run_steps, v)
    times = interleaved(calls, args.rounds, warmup=0, device=device)
    peak = {p: rate() for p, (_, rate) in peaks.items()}
    return report(cases, times, peak, args)


def report(cases: list[Case], times: dict[str, list[float]], peak: dict[str, float],
           args: argparse.Namespace) -> Report:
    """The table (one row per variant), its notes and the raw numbers."""
    rows, results, notes = [], [], []
    for case in cases:
        params = sum(p.numel() for p in case.model.parameters())
        base = None
        for v in case.variants:
            per_step = [t / v.steps for t in times[v.name]]
            s = summary(per_step)
            base = base or s["median"]
            achieved = case.flops / s["median"]
            mfu = achieved / peak[v.precision]
            kernel = v.ran if v.kernel in ("-", v.ran) else f"auto: {v.ran}"
            rows.append([case.name, f"{params:,}", str(case.batch), v.precision, v.layout,
                         "on" if v.compiled else "off", kernel,
                         f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})",
                         f"{case.batch / s['median']:.3g}", f"{achieved / 1e9:.3g}", f"{100 * mfu:.1f}%",
                         f"{base / s['median']:.2f}x"])
            results.append({"case": case.name, "parameters": params, "batch": case.batch,
                            "precision": v.precision, "layout": v.layout, "compile": v.compiled,
                            "kernel": v.kernel, "kernel_ran": v.ran, "steps_per_call": v.steps,
                            "first_step_s": v.first, "step_s": s, "images_per_s": case.batch / s["median"],
                            "flops_per_s": achieved, "mfu": mfu})
            if v.compiled:
                notes.append(f"compile: {v.name}: first step {v.first:.1f} s against {s['median']:.2f} s "
                             f"steady, so about {v.first - s['median']:.1f} s compiling (inductor's cache "
                             "makes a second run start faster)")
        notes.append(f"FLOPs per step of {case.name}: {case.flops / 1e9:.4g} GFLOP (forward + backward, "
                     f"counted on the {case.flops_how} device)")
    for precision, value in peak.items():
        notes.append(f"peak {precision}: {value / 1e9:.4g} GFLOP/s, the fastest of {3 * args.rounds} "
                     f"{args.matmul_size}^3 torch.mm (3 per round, interleaved with the steps)")
    for case_name, target in TARGETS.items():
        got = [r["mfu"] for r in results if r["case"] == case_name and r["precision"] == "bf16"]
        if got:
            notes.append(f"must-show: {case_name} bf16 best MFU {100 * max(got):.1f}% "
                         f"(target >= {100 * target:.0f}%: {'met' if max(got) >= target else 'NOT met'})")
    notes.insert(0, "step = forward, loss, backward, clip, fused optimizer step; seconds per step: median "
                 f"(min-max) of {args.rounds} interleaved rounds; MFU = counted FLOPs / median step / peak "
                 "matmul of the same precision; last column: speed against the case's first variant")
    headers = ["case", "parameters", "batch", "precision", "memory format", "compile", "kernel",
               "s/step", "images/s", "GFLOP/s", "MFU", "vs first"]
    data = {"results": results, "peak_flops_per_s": peak, "rounds": args.rounds,
            "flops_per_step": {c.name: c.flops for c in cases},
            "peak_round_seconds": {k: statistics.median(t) for k, t in times.items() if k.startswith("peak")}}
    return Report("Training: images/s and MFU", headers, rows, notes, data)
