"""Benchmarks, side by side in one process: the machine's limits, training and sampling.

    python scripts/benchmark.py peak                  # fp32/bf16 matmul and conv FLOP/s, memory bandwidth
    python scripts/benchmark.py train                 # images/s and MFU per family (scripts/bench/train.py)
    python scripts/benchmark.py sample                # latency and throughput of the decoders
    python scripts/benchmark.py sample --quick        # smoke test: tiny models, seconds

Each subcommand prints one markdown table headed by the machine it ran on (CPU model and flags, torch
threads, load average) and writes the same numbers as JSON (``--json``, default
``runs/benchmark/<subcommand>.json``). Within a subcommand every variant runs interleaved, round-robin,
so that ratios stay fair on a shared machine. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench.common import machine, write_json  # noqa: E402
from common import exit_code  # noqa: E402

SUBCOMMANDS = ("peak", "train", "sample")
ROOT = Path(__file__).resolve().parent.parent


def subcommand(name: str):
    """The module ``bench/<name>.py``, or None where it is not there (yet)."""
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"bench.{name}":
            raise
        return None


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subs = p.add_subparsers(dest="command", required=True)
    modules = {}
    for name in SUBCOMMANDS:
        module = modules[name] = subcommand(name)
        sp = subs.add_parser(name, help=module.HELP if module else f"(scripts/bench/{name}.py is missing)")
        sp.add_argument("--json", type=Path, default=ROOT / "runs" / "benchmark" / f"{name}.json",
                        help="where the JSON goes (default: runs/benchmark/%(prog)s.json)".replace(
                            "%(prog)s", name))
        if module:
            module.add_arguments(sp)
    args = p.parse_args(argv)
    if modules[args.command] is None:
        p.error(f"the {args.command} subcommand needs scripts/bench/{args.command}.py, which is not there")
    return args, modules[args.command]


def run(args: argparse.Namespace, module) -> None:
    report = module.run(args)
    info = machine(getattr(args, "device", "cpu"))
    print(report.markdown(info))
    write_json(args.json, {"command": args.command, "machine": info, "title": report.title,
                           "headers": report.headers, "rows": report.rows, "notes": report.notes,
                           **report.data})
    print(f"\nwrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 2 (with one ``error:`` line on stderr) for bad input."""
    args, module = parse_args(argv)
    return exit_code(lambda: run(args, module))


if __name__ == "__main__":
    sys.exit(main())
