"""scripts/plot_curves.py: the curve arithmetic (images seen, training hours) and the PNG it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.config import load_config, save_config

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
sys.path.insert(0, str(SCRIPTS))
import plot_curves  # noqa: E402


def fake_run(directory: Path, records: list[dict], batch_size: int = 4, grad_accum: int = 1) -> Path:
    """A run directory with a config.yaml (batch, accumulation, log_every 10) and a metrics.jsonl."""
    directory.mkdir(parents=True)
    overrides = ["model.name=gated_pixelcnn", f"train.batch_size={batch_size}",
                 f"train.grad_accum={grad_accum}", "train.log_every=10"]
    save_config(load_config(None, overrides), directory / "config.yaml")
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


def run_plot(*args: str | Path) -> subprocess.CompletedProcess:
    """Run ``scripts/plot_curves.py`` as a user would."""
    return subprocess.run([sys.executable, str(SCRIPTS / "plot_curves.py"), *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=120)


def train(step: int, images_per_s: float) -> dict:
    return {"step": step, "loss": 1.0, "bpd": 1.4, "lr": 1e-3, "images_per_s": images_per_s}


def test_images_and_cpu_hours_come_from_the_eval_records(tmp_path):
    run = fake_run(tmp_path / "run", [
        {**train(10, 40.0), "images": 40, "cpu_hours": 0.1},
        {"step": 10, "eval_bpd": 3.0, "images": 40, "cpu_hours": 0.1},
        {"step": 20, "eval_bpd": 2.0, "images": 80, "cpu_hours": 0.25},
        {"step": 20, "eval_bpd": 1.5, "images": 80, "cpu_hours": 0.3}])  # resumed: evaluated again
    curve = plot_curves.read_curve(run)
    assert (curve.label, curve.cpu) == ("run", True)
    assert curve.images == [40, 80] and curve.hours == [0.1, 0.3] and curve.bpd == [3.0, 1.5]


def test_images_and_hours_of_a_resumed_run_of_an_earlier_version(tmp_path):
    # 8 images a step; windows of 10 steps: 80 images at 40/s = 2 s, at 20/s = 4 s.
    # Resumed from a checkpoint at step 20 after logging step 30: the repeated window counts again.
    run = fake_run(tmp_path / "run", [
        train(10, 40.0), train(20, 40.0), {"step": 20, "eval_bpd": 3.0}, train(30, 40.0),
        {"step": 30, "eval_bpd": 2.5},
        train(30, 20.0), {"step": 30, "eval_bpd": 2.0}, train(40, 40.0), train(45, 40.0),
        {"step": 45, "eval_bpd": 1.5},
    ], batch_size=4, grad_accum=2)

    curve = plot_curves.read_curve(run)

    assert (curve.label, curve.cpu) == ("run (wall clock)", False)
    assert curve.steps == [20, 30, 45]
    assert curve.images == [160, 240, 360]
    assert curve.bpd == [3.0, 2.0, 1.5]  # the later eval at step 30 replaces the earlier one
    seconds = [h * 3600 for h in curve.hours]
    assert seconds == pytest.approx([4.0, 10.0, 13.0])  # 2+2; +2 +4 (resumed); +2 +1 (5 steps)


def test_eval_between_logged_steps_is_interpolated(tmp_path):
    run = fake_run(tmp_path / "run", [train(10, 40.0), {"step": 15, "eval_bpd": 2.0}, train(20, 20.0)])
    assert [h * 3600 for h in plot_curves.read_curve(run).hours] == pytest.approx([1.0 + 0.5 * 2.0])


def test_writes_a_png_of_two_runs(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install matplotlib)")
    a = fake_run(tmp_path / "a", [train(10, 40.0), {"step": 10, "eval_bpd": 3.0},
                                  train(20, 40.0), {"step": 20, "eval_bpd": 2.0}])
    b = fake_run(tmp_path / "b", [train(10, 10.0), {"step": 10, "eval_bpd": 2.5}])
    out = tmp_path / "figs" / "curves.png"

    proc = run_plot(a, b, "--out", out)

    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert proc.stdout.strip() == str(out)


def test_a_run_without_evals_is_a_one_line_error(tmp_path):
    run = fake_run(tmp_path / "run", [train(10, 40.0)])
    proc = run_plot(run, tmp_path / "none", "--out", tmp_path / "c.png")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "no eval_bpd records" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c.png").exists()
