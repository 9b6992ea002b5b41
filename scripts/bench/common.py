"""What every benchmark subcommand shares: the machine it ran on, interleaved timing, the JSON it
writes, and its one markdown table.

A subcommand module (``bench/peak.py``, ``bench/train.py``, ``bench/sample.py``) has ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> Report``; ``scripts/benchmark.py`` prints the report's
table and writes its JSON (``--json``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import markdown_table

#: The lscpu flags that decide which kernels pay on a CPU (reported, never assumed).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "avx_vnni")


@dataclass
class Report:
    """One subcommand's result: a title, the markdown table's ``headers`` and ``rows`` (strings), notes
    printed under it, and ``data``, the raw numbers for the JSON (the machine is added there)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def markdown(self, machine: dict) -> str:
        """The title, the machine line, the table and the notes, as printed."""
        parts = [f"## {self.title}", "", machine_line(machine), "", markdown_table(self.headers, self.rows)]
        if self.notes:
            parts += ["", *self.notes]
        return "\n".join(parts)


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields (``{"Model name": ..., "Flags": ...}``); empty where lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def machine(device: torch.device | str = "cpu") -> dict:
    """The machine a benchmark runs on, JSON-ready: CPU model and the kernel-relevant flags (lscpu),
    cores, torch threads, torch's CPU capability, versions, the device (with the GPU's name) and the
    load average when it was called."""
    device = torch.device(device)
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "cpu": info.get("Model name") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": gpu,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def machine_line(m: dict) -> str:
    """``machine(...)`` as the one line every table is headed by."""
    dev = m["device"] + (f" ({m['gpu']})" if m.get("gpu") else "")
    load = ", ".join(f"{v:.2f}" for v in m["load_average"])
    return (f"machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['cpu_flags']) or 'none of note'}, "
            f"torch {m['torch']} ({m['cpu_capability']}, {m['torch_threads']} threads), "
            f"python {m['python']}, device {dev}, load average {load}")


def synchronize(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work (a no-op off CUDA), so a timer measures the work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Time every variant ``rounds`` times, round-robin, after ``warmup`` untimed calls of each: seconds
    per call, ``{name: [s, ...]}``. Each round starts at the next variant, so on a shared machine drift
    in its speed falls on all of them alike and their ratios stay fair."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            synchronize(device)
            start = time.perf_counter()
            variants[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds: list[float]) -> dict[str, float]:
    """Median, min and max of timings (JSON-ready)."""
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "n": len(seconds)}


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (a temporary file renamed over it), making
    its folder; a failed write leaves any earlier file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
