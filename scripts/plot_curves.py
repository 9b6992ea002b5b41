"""Validation bits/dim of training runs, side by side, against images seen and CPU hours.

    python scripts/plot_curves.py RUN_DIR [RUN_DIR ...] [--label NAME ...] [--out docs/images/curves.png]

Reads each run directory's ``metrics.jsonl`` (the trainer's ``{"step", "eval_bpd", "images",
"cpu_hours"}`` and ``{"step", "loss", "bpd", "lr", "images", "cpu_hours", "images_per_s"}`` records)
and ``config.yaml`` (batch size and gradient accumulation), and draws one PNG with two panels: eval
bits/dim against images seen and against CPU hours.

CPU hours are what the trainer logs: user + system time of every thread of its processes, summed,
up to the eval (the eval's own cost excluded), carried across resumes from the checkpoint. Runs
written before the trainer logged them fall back to ``step x batch_size x grad_accum`` images and
to wall-clock hours summed from the logged windows (``steps x images per step / images_per_s``),
and their legend says "(wall clock)". A resumed run's later eval at a step replaces the earlier one.

Needs matplotlib (``pip install matplotlib``). Bad input prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from common import exit_code

from imagegen.config import load_config
from imagegen.errors import ConfigError, ImagegenError

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "curves.png"


@dataclass
class Curve:
    """One run's eval points: ``steps``, ``images`` seen, training ``hours`` and ``bpd``, by step;
    ``cpu``: whether the hours are CPU hours (else wall clock, for runs from earlier versions)."""

    label: str
    steps: list[int]
    images: list[int]
    hours: list[float]
    bpd: list[float]
    cpu: bool = True


def read_records(run_dir: Path) -> list[dict]:
    """The JSON records of ``run_dir/metrics.jsonl`` in file order."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ImagegenError(f"{path} not found: pass a run directory written by `imagegen train`")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ImagegenError(f"{path} line {n} is not JSON: is it a metrics.jsonl?") from None
    return records


def hours_at_steps(records: list[dict], images_per_step: int, log_every: int) -> dict[int, float]:
    """Cumulative training hours at each logged step, from the train records' ``images_per_s``.
    A window spans the steps since the previous record, or ``log_every`` steps after a resume (step
    not increasing); a step logged again after a resume gets its later, larger time."""
    seconds, prev, at = 0.0, 0, {}
    for r in records:
        if "images_per_s" not in r:
            continue
        step = r["step"]
        window = step - prev if step > prev else min(step, log_every)
        seconds += window * images_per_step / r["images_per_s"]
        at[step], prev = seconds / 3600, step
    return at


def read_curve(run_dir: str | Path, label: str | None = None) -> Curve:
    """The eval curve of one run directory (``metrics.jsonl`` + ``config.yaml``)."""
    run_dir = Path(run_dir)
    try:
        train = load_config(run_dir / "config.yaml").train
    except ConfigError as e:
        raise ImagegenError(f"{run_dir}: {e}") from None
    records = read_records(run_dir)
    evals = {r["step"]: r for r in records if "eval_bpd" in r}  # the later eval wins
    if not evals:
        raise ImagegenError(f"{run_dir}/metrics.jsonl has no eval_bpd records yet: wait for the first eval")
    steps = sorted(evals)
    label = label or run_dir.name
    if all("cpu_hours" in evals[s] and "images" in evals[s] for s in steps):
        column = lambda key: [evals[s][key] for s in steps]  # noqa: E731
        return Curve(label, steps, column("images"), column("cpu_hours"), column("eval_bpd"))
    images_per_step = train.batch_size * train.grad_accum
    hours = hours_at_steps(records, images_per_step, train.log_every)
    logged = sorted(hours)
    return Curve(f"{label} (wall clock)", steps, [s * images_per_step for s in steps],
                 [_interp(s, logged, hours) for s in steps], [evals[s]["eval_bpd"] for s in steps], cpu=False)


def _interp(step: int, logged: list[int], hours: dict[int, float]) -> float:
    """Hours at ``step``, linear between the logged steps around it (0 at step 0)."""
    i = bisect.bisect_right(logged, step)
    lo = logged[i - 1] if i else 0
    h_lo = hours.get(lo, 0.0)
    if lo == step or i == len(logged):
        return h_lo
    hi = logged[i]
    return h_lo + (hours[hi] - h_lo) * (step - lo) / (hi - lo)


def plot(curves: list[Curve], out: Path, title: str) -> Path:
    """Draw ``curves`` into a two-panel PNG at ``out``; returns ``out``."""
    try:
        import matplotlib
    except ImportError:
        raise ImagegenError("matplotlib is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_images, by_hours) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for c in curves:
        by_images.plot(c.images, c.bpd, marker=".", label=c.label)
        by_hours.plot(c.hours, c.bpd, marker=".", label=c.label)
    by_images.set_xlabel("training images seen")
    by_images.set_ylabel("val bits/dim")
    by_hours.set_xlabel("training CPU hours (all threads)")
    for ax in (by_images, by_hours):
        ax.grid(alpha=0.3)
    by_hours.legend()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.png")
        fig.savefig(tmp, dpi=100)
        tmp.replace(out)
    except OSError as e:
        raise ImagegenError(f"cannot write {out}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of `imagegen train`")
    p.add_argument("--label", action="append", default=[],
                   help="legend label of each run, in order (default: the directory name)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write (default: docs/images/curves.png)")
    p.add_argument("--title", default="Validation bits/dim during training", help="figure title")
    args = p.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        p.error(f"{len(args.label)} --label for {len(args.runs)} runs: give one per run or none")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: writes the PNG and prints its path; 0 on success, 2 for bad input."""
    args = parse_args(argv)

    def work() -> None:
        labels = args.label or [None] * len(args.runs)
        curves = [read_curve(r, label) for r, label in zip(args.runs, labels, strict=True)]
        print(plot(curves, Path(args.out), args.title))

    return exit_code(work)


if __name__ == "__main__":
    sys.exit(main())
