"""``benchmark.py peak``: the machine's limits, the denominators of MFU and of the sampling floor.

Dense matmul and 3x3 convolution FLOP/s in fp32 and bf16, and memory bandwidth: reading a buffer far
larger than the caches (the floor of a decoding step that streams its weights from memory), reading one
that fits in them, and copying. Each at 1 thread and at all of torch's threads, every variant
interleaved round-robin; ``best`` is the fastest round (the limit), ``median`` the typical one.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from .common import Report, interleaved, summary

HELP = "fp32/bf16 matmul and conv FLOP/s, memory bandwidth (the limits)"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, nargs="+", help="thread counts to measure (default: 1 and all)")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n x n matmul")
    p.add_argument("--memory-mib", type=int, default=1024, help="the large buffer, MiB (beyond the caches)")
    p.add_argument("--cache-mib", type=int, default=4, help="the small buffer, MiB (within the caches)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smoke test: small sizes, 2 rounds")


def threaded(threads: int, fn, *args) -> None:
    """``fn(*args)`` with ``threads`` intra-op threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fn(*args)
    finally:
        torch.set_num_threads(before)


def workloads(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[str, float, object]]:
    """``{name: (unit, amount per call, fn)}``: FLOPs for compute, bytes for memory."""
    n = args.matmul_size
    out: dict[str, tuple[str, float, object]] = {}
    for label, dtype in DTYPES.items():
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in "ab")
        out[f"matmul {label}"] = ("FLOP/s", 2.0 * n**3, partial(torch.mm, a, b))
        # A 3x3 convolution at a PixelCNN's width: batch 16, 128 -> 128 features, 32 x 32.
        x = torch.randn(16, 128, 32, 32, device=device).to(dtype)
        w = torch.randn(128, 128, 3, 3, device=device).to(dtype)
        flops = 2.0 * 16 * 128 * 32 * 32 * 128 * 9
        out[f"conv3x3 {label}"] = ("FLOP/s", flops, partial(torch.nn.functional.conv2d, x, w, padding=1))
    big = torch.ones(args.memory_mib * 2**18, device=device)  # float32: 4 bytes each
    small = torch.ones(args.cache_mib * 2**18, device=device)
    dst = torch.empty_like(big)
    out["read (large buffer)"] = ("B/s", big.numel() * 4.0, big.sum)
    out["read (cache-sized buffer)"] = ("B/s", small.numel() * 4.0, small.sum)
    out["copy (large buffer)"] = ("B/s", big.numel() * 8.0, partial(dst.copy_, big))
    return out


def run(args: argparse.Namespace) -> Report:
    if args.quick:
        args.matmul_size, args.memory_mib, args.cache_mib, args.rounds = 256, 16, 1, 2
    device = torch.device(args.device)
    threads = args.threads or sorted({1, torch.get_num_threads()})
    loads = workloads(args, device)
    fns = {f"{name} | {t}": partial(threaded, t, fn) for name, (_, _, fn) in loads.items() for t in threads}
    times = interleaved(fns, args.rounds, warmup=1, device=device)
    rows, results = [], []
    for name, (unit, amount, _) in loads.items():
        for t in threads:
            s = summary(times[f"{name} | {t}"])
            best, median = amount / s["min"], amount / s["median"]
            rows.append([name, str(t), f"{best / 1e9:.1f} G{unit}", f"{median / 1e9:.1f} G{unit}"])
            results.append({"name": name, "threads": t, "unit": unit, "best": best, "median": median,
                            "seconds": s})
    notes = [f"matmul {args.matmul_size}^3; conv3x3 = batch 16, 128 -> 128 features, 32x32, padding 1 "
             f"(NCHW); large buffer {args.memory_mib} MiB, cache-sized {args.cache_mib} MiB of float32 "
             "(read = sum, copy counts bytes read and written); "
             f"{args.rounds} interleaved rounds, best = fastest round."]
    return Report("Peak: the machine's limits", ["work", "threads", "best", "median"], rows, notes,
                  {"results": results, "rounds": args.rounds})


def peak(results: list[dict], name: str, threads: int) -> float:
    """The ``best`` rate of ``name`` at ``threads`` from a peak report's ``results`` (FLOP/s or B/s)."""
    for r in results:
        if r["name"] == name and r["threads"] == threads:
            return r["best"]
    raise KeyError(f"no peak measurement of {name!r} at {threads} threads")
