"""One command for a CUDA machine: the CUDA tests, then the GPU benchmark tables, in one markdown report.

    python scripts/gpu_check.py                       # report: runs/gpu_check/report.md
    python scripts/gpu_check.py --out docs/gpu.md --quick

1. ``pytest -m cuda``: the tests that need a GPU (``tests/test_cuda.py`` and every other test marked
   ``cuda``): the sdpa and xformers kernels equal to the reference (forward and gradients), every
   cached decoder equal to its reference decoder on the GPU (float32), a bf16 training run, and
   2-GPU data parallel training where there are two GPUs.
2. ``scripts/benchmark.py peak``, ``train`` and ``sample`` with ``--device cuda`` (``--quick``: their
   smoke-test sizes), each table as the benchmark printed it, its JSON beside the report.

The report says the GPU, torch and CUDA versions, each part's exit status and output, and is written
whole or not at all. Without CUDA it stops at once with one ``error:`` line (exit 2). Exit status: 0
when every part passed, 1 when one failed (the report says which).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import exit_code  # noqa: E402

from imagegen.errors import ImagegenError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("peak", "train", "sample")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check" / "report.md",
                   help="the markdown report (the benchmarks' JSON goes beside it)")
    p.add_argument("--quick", action="store_true", help="the benchmarks at their smoke-test sizes")
    p.add_argument("--skip-benchmarks", action="store_true", help="the tests only")
    return p.parse_args(argv)


def require_cuda() -> None:
    """``ImagegenError`` unless torch sees a CUDA device."""
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ImagegenError(f"gpu_check needs a CUDA GPU and torch {torch.__version__} ({build}) sees none: "
                            "run it on a machine with an NVIDIA GPU and a CUDA build of torch")


def part(title: str, cmd: list[str], timeout: float) -> tuple[bool, str]:
    """Run ``cmd`` from the repository root: whether it exited 0, and its markdown section."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        ok = proc.returncode == 0
        status, out = f"exit {proc.returncode}", proc.stdout + ("" if ok else proc.stderr[-4000:])
    except subprocess.TimeoutExpired as e:
        status, out, ok = f"timed out after {timeout:.0f} s", str(e.stdout or ""), False
    shown = " ".join(str(c) for c in cmd[1:])
    head = f"## {title}: {'passed' if ok else 'FAILED'} ({status}, {time.perf_counter() - start:.0f} s)"
    return ok, f"{head}\n\n`python {shown}`\n\n{out.strip()}\n"


def report(args: argparse.Namespace) -> bool:
    """Run every part and write the report; True when all passed."""
    require_cuda()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    lines = ["# GPU check", "",
             f"GPUs: {', '.join(names)}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}; {time.strftime('%Y-%m-%d %H:%M %Z')}", ""]
    results = [part("CUDA tests", [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "tests"], 3600)]
    if not args.skip_benchmarks:
        for name in BENCHMARKS:
            cmd = [sys.executable, "scripts/benchmark.py", name, "--device", "cuda",
                   "--json", str(args.out.with_name(f"{name}.json"))] + (["--quick"] if args.quick else [])
            results.append(part(f"benchmark.py {name}", cmd, 3600))
    lines += [section for _, section in results]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, args.out)
    ok = all(passed for passed, _ in results)
    print(f"{'all passed' if ok else 'FAILED: see the report'}; wrote {args.out}")
    return ok


def main(argv: list[str] | None = None) -> int:
    """0 when every part passed, 1 when one failed, 2 (one ``error:`` line) without CUDA."""
    args = parse_args(argv)
    passed: list[bool] = []
    code = exit_code(lambda: passed.append(report(args)))
    return code or (0 if passed[0] else 1)


if __name__ == "__main__":
    sys.exit(main())
