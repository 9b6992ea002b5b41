"""Image Transformer benchmark, side by side in one run: training throughput (fp32 and bf16),
attention kernel timings, and cached sampling time.

    python scripts/bench_transformer.py                          # configs/cifar10_transformer_1d.yaml
    python scripts/bench_transformer.py --config configs/cifar10_transformer_2d.yaml
    python scripts/bench_transformer.py --device cuda
    python scripts/bench_transformer.py --quick                  # smoke test: a tiny model, seconds

1. Training: images/s of the config's model at its dataset's shape (default batch 4 of 3x32x32),
   fp32 and bf16 (``torch.autocast``) from the same initial weights, interleaved step by step so that
   drift in a shared machine's speed falls on both alike; a step is forward, the shared loss,
   backward, and an Adam step with the config's betas (dropout on, as in training).
2. Kernels: forward and forward+backward time of ``imagegen.models.attention.attention`` at the
   model's size (batch, heads, C*H*W positions, its local pattern), for every kernel this device
   has (reference and sdpa; xformers on CUDA when installed), fp32 and bf16.
3. Sampling: seconds for ``imagegen.sampling.sample`` to draw ``--num-samples`` images from the
   randomly initialised model with the key/value-cached decoder, with fp32 weights and with the
   model cast to bf16; plus the reference decoder (re-runs the model for every sub-pixel) timed over
   a few steps and extrapolated to the whole image, which is labelled as such.

Prints markdown, headed by the machine it ran on (``machine:`` line as in ``bench_train.py``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import data_shape, machine_line, synchronize  # noqa: E402
from common import exit_code, markdown_table  # noqa: E402

from imagegen.config import Config, load_config  # noqa: E402
from imagegen.errors import ConfigError  # noqa: E402
from imagegen.models import build_model  # noqa: E402
from imagegen.models.attention import attention, has_xformers  # noqa: E402
from imagegen.models.head import loss as nll_loss  # noqa: E402
from imagegen.sampling import sample  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cifar10_transformer_1d.yaml"
QUICK_MODEL = dict(hidden=32, num_layers=2, num_heads=2, ffn_hidden=64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="a transformer config (model + data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="timed training steps per precision")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps per precision first")
    p.add_argument("--kernel-repeats", type=int, default=3, help="timed calls per kernel (median)")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--reference-steps", type=int, default=3,
                   help="reference-decoder steps to time (then extrapolated); 0 skips it")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a 2-layer width-32 model on 3x8x8 images, 1 step each")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.kernel_repeats, args.reference_steps = 1, 0, 1, 2
    if min(args.steps, args.batch_size, args.num_samples, args.kernel_repeats) < 1 or args.warmup < 0:
        p.error("--steps, --batch-size, --num-samples and --kernel-repeats must be >= 1, --warmup >= 0")
    return args


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, dict, Config]:
    """The config's model (tiny with ``--quick``), its hparams, and the config."""
    config = load_config(args.config)
    kwargs = dict(config.model)
    name = kwargs.pop("name")
    if not name.startswith("transformer_") or name.startswith("transformer_sr"):
        raise ConfigError(f"{args.config}: bench_transformer takes a transformer_1d/2d config, not {name!r}")
    c, *size = data_shape(config, None)
    if args.quick:
        kwargs.update(QUICK_MODEL, dropout=0.0)
        kwargs.update(dict(block_length=16, memory_length=16) if name == "transformer_1d"
                      else dict(query_shape=[2, 8], memory_flange=[1, 4]))
        c, size = 3, (8, 8)
    torch.manual_seed(args.seed)
    model = build_model(name, channels=c, image_size=tuple(size), **kwargs)
    return model, {"name": name, **kwargs}, config


def train_steps(model, opt, x, steps: int, bf16: bool) -> float:
    for _ in range(steps):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = nll_loss(model(x), x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.item()


def bench_training(model, config, args, device) -> list[list[str]]:
    """Images/s (median over timed steps) of fp32 and bf16, interleaved step by step."""
    x = torch.randint(0, model.levels, (args.batch_size, *model.shape),
                      generator=torch.Generator().manual_seed(args.seed)).to(device)
    variants = []
    for bf16 in (False, True):
        m = copy.deepcopy(model).to(device).train()
        opt = torch.optim.Adam(m.parameters(), lr=config.train.lr, betas=tuple(config.train.betas))
        variants.append((bf16, m, opt, []))
    for bf16, m, opt, _ in variants:
        if args.warmup:
            train_steps(m, opt, x, args.warmup, bf16)
    for _ in range(args.steps):
        for bf16, m, opt, rates in variants:
            synchronize(device)
            start = time.perf_counter()
            train_steps(m, opt, x, 1, bf16)
            synchronize(device)
            rates.append(args.batch_size / (time.perf_counter() - start))
    base = statistics.median(variants[0][3])
    rows = []
    for bf16, _, _, rates in variants:
        med = statistics.median(rates)
        rows.append(["bf16" if bf16 else "fp32", f"{med:.3f}", f"{args.batch_size / med:.2f}",
                     f"{min(rates):.3f}-{max(rates):.3f}", f"{med / base:.2f}x"])
    return rows


def time_call(fn, repeats: int, device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kernels(model, args, device) -> list[list[str]]:
    """Forward and forward+backward ms of each kernel at the model's attention size."""
    C, (H, W) = model.channels, model.image_size
    N, heads, dh = C * H * W, model.num_heads, model.hidden // model.num_heads
    _, _, pattern = model.layout(C, H, W, device)
    kernels = ["reference", "sdpa"] + (["xformers"] if device.type == "cuda" and has_xformers() else [])
    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        qkv = [torch.randn(args.batch_size, heads, N, dh, generator=g).to(device, dtype) for _ in range(3)]
        grads = [t.clone().requires_grad_(True) for t in qkv]
        for kernel in kernels:
            forward = partial(attention, *qkv, pattern, kernel)
            backward = partial(lambda *a: attention(*a).sum().backward(), *grads, pattern, kernel)
            fwd, both = (time_call(f, args.kernel_repeats, device) for f in (forward, backward))
            rows.append([kernel, str(dtype).removeprefix("torch."), f"{fwd * 1e3:.1f}", f"{both * 1e3:.1f}"])
    return rows


def bench_sampling(model, args, device) -> list[str]:
    """Lines timing the cached decoder (fp32 and bf16 weights) and the reference decoder."""
    C, (H, W) = model.channels, model.image_size
    N = C * H * W
    lines = []
    for dtype in (torch.float32, torch.bfloat16):
        m = copy.deepcopy(model).to(device, dtype).eval()
        sample(m, 1, seed=args.seed, shape=(C, min(H, 2), W))  # warm-up
        synchronize(device)
        start = time.perf_counter()
        sample(m, args.num_samples, seed=args.seed)
        synchronize(device)
        seconds = time.perf_counter() - start
        lines.append(f"sampling, cached decoder, {str(dtype).removeprefix('torch.')} weights: "
                     f"{args.num_samples} images of {C}x{H}x{W} ({N} steps) in {seconds:.1f} s "
                     f"({seconds / N * 1e3:.1f} ms per step)")
    if args.reference_steps:
        m = copy.deepcopy(model).to(device).eval()
        with torch.inference_mode():
            dec = m.reference_decoder(args.num_samples)
            dec.next_logits()  # warm-up (step 0 costs what every step costs: a full forward pass)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.reference_steps):
                dec.next_logits()
            synchronize(device)
        per_step = (time.perf_counter() - start) / args.reference_steps
        lines.append(f"sampling, reference decoder (re-runs the model for every sub-pixel), fp32: "
                     f"{per_step * 1e3:.1f} ms per step over {args.reference_steps} timed steps -> "
                     f"{per_step * N:.0f} s = {per_step * N / 3600:.2f} h for {N} steps "
                     "(extrapolated, not run)")
    return lines


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA device")
    model, hparams, config = build(args)
    params = sum(p.numel() for p in model.parameters())
    C, (H, W) = model.channels, model.image_size
    described = ", ".join(f"{k}={v}" for k, v in hparams.items())
    print(f"## Image Transformer ({Path(args.config).name}{', --quick' if args.quick else ''})")
    print()
    print(machine_line(device))
    print()
    print(f"model: {described}; {params / 1e6:.2f} M parameters; images {C}x{H}x{W}, batch {args.batch_size}")
    print()
    print(f"### Training ({args.warmup} warmup + {args.steps} timed steps per precision, interleaved; "
          "step = forward, loss, backward, Adam)")
    print()
    print(markdown_table(["precision", "images/s", "s/step", "min-max images/s", "vs fp32"],
                         bench_training(model, config, args, device)))
    print()
    print(f"### Attention kernels (batch {args.batch_size}, {model.num_heads} heads, {C * H * W} positions, "
          f"head width {model.hidden // model.num_heads}, {model.attention} local pattern; median of "
          f"{args.kernel_repeats})")
    print()
    rows = bench_kernels(model, args, device)
    print(markdown_table(["kernel", "dtype", "forward ms", "forward+backward ms"], rows))
    print()
    print("### Sampling")
    print()
    print("\n".join(bench_sampling(model, args, device)))


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 2 (with one ``error:`` line on stderr) for bad input."""
    args = parse_args(argv)
    return exit_code(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
