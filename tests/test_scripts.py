"""Smoke tests of scripts/eval_bpd.py, bench_train.py, benchmark.py and gpu_check.py, run as a user would
(subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from imagegen import checkpoint
from imagegen.data import load_dataset
from imagegen.metrics import bits_per_dim
from imagegen.models import build_model

from .helpers import tiny_mnist

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# One thread: the scripts' tiny models are far slower with threads fighting over busy cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` with ``args``; returns the finished process (text stdout/stderr)."""
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=ENV, timeout=120)


def table_rows(stdout: str) -> list[list[str]]:
    """Cells of every body row of the markdown table in ``stdout``."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_eval_bpd_matches_the_metric(tmp_path):
    data = tiny_mnist(tmp_path / "tiny.npz", n_train=4, n_test=12)
    big = tmp_path / "big.npz"  # 28x28 images: a shape the 8x8 checkpoints cannot take
    np.savez(big, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8))
    gray = build_model("gated_pixelcnn", channels=1, image_size=8, levels=256, hidden=4, num_layers=2)
    binary = build_model("gated_pixelcnn", channels=1, image_size=8, levels=2, hidden=4, num_layers=2)
    checkpoint.save(gray, tmp_path / "gray", dataset="mnist")
    checkpoint.save(binary, tmp_path / "binary", dataset="mnist", binarize="threshold")
    out_md = tmp_path / "table.md"

    proc = run_script("eval_bpd.py", "-c", str(tmp_path / "gray"), "-c", str(tmp_path / "binary"),
                      "--data", f"mnist={data}", "--data", f"mnist={big}", "--limit", "10", "--split", "test",
                      "--batch-size", "4", "--out", str(out_md))

    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert len(rows) == 4  # 2 checkpoints x 2 datasets
    assert out_md.read_text().strip() == proc.stdout.strip()
    for directory, mode in (("gray", None), ("binary", "threshold")):
        model = checkpoint.load(tmp_path / directory)
        expected = bits_per_dim(model, load_dataset("mnist", data, "test", binarize=mode).images[:10])
        ok, mismatch = [r for r in rows if r[0] == str(tmp_path / directory)]
        assert ok[1:3] == ["gated_pixelcnn", f"{sum(p.numel() for p in model.parameters()):,}"]
        assert ok[3:6] == [f"mnist ({data})", "test", "10"]
        assert ok[6] == f"{expected:.4f}"
        assert mismatch[6] == "shape mismatch"


def test_eval_bpd_missing_checkpoint_exits_2(tmp_path):
    data = tiny_mnist(tmp_path / "tiny.npz", n_train=2, n_test=2)
    proc = run_script("eval_bpd.py", "-c", str(tmp_path / "nowhere"), "--data", f"mnist={data}")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]


def test_bench_train_quick_prints_four_variants():
    proc = run_script("bench_train.py", "--quick", "--device", "cpu", "--batch-size", "4",
                      "--set", "model.hidden=4", "--set", "model.num_layers=2", "--set", "model.out_hidden=4",
                      "--shape", "1,8,8", "--sample-shape", "1,4,4", "--num-samples", "2")
    assert proc.returncode == 0, proc.stderr
    variants = {(r[2], r[3]) for r in table_rows(proc.stdout)}
    assert variants == {(p, m) for p in ("fp32", "bf16") for m in ("NCHW", "channels_last")}
    assert "machine: " in proc.stdout and f"torch {torch.__version__}" in proc.stdout
    assert "cached decoder" in proc.stdout and "reference decoder" in proc.stdout


def test_bench_train_feeds_an_upscaler_its_low_resolution_cond(tmp_path):
    cfg = tmp_path / "sr.yaml"
    cfg.write_text("model: {name: gated_pixelcnn_sr, upscale_factor: 2, hidden: 4, num_layers: 1,"
                   " out_hidden: 4, cond_features: 4, cond_layers: 1}\ndata: {name: mnist}\n")
    proc = run_script("bench_train.py", "--quick", "--config", str(cfg), "--batch-size", "2",
                      "--layouts", "NCHW", "--shape", "1,4,4", "--sample-shape", "1,4,4",
                      "--num-samples", "1")
    assert proc.returncode == 0, proc.stderr
    assert {r[0] for r in table_rows(proc.stdout)} == {"gated_pixelcnn_sr"}
    assert "sampling gated_pixelcnn_sr" in proc.stdout


def test_a_snapshot_of_a_run_resumes_like_the_run(tmp_path):
    """scripts/snapshot_run.py keeps the logs and the newest whole checkpoint (skipping a damaged one);
    a copy of the snapshot resumes to the same weights as the run itself."""
    from imagegen.training import Trainer

    from .helpers import tiny_config

    data = tiny_mnist(tmp_path / "m.npz")
    run = tmp_path / "run"
    config = lambda steps: tiny_config(data, max_steps=steps, checkpoint_every=2, keep_checkpoints=3)  # noqa: E731
    Trainer(config(6), run, show_progress=False).fit()
    (run / "checkpoints" / "step_00000006" / "ema.safetensors").write_bytes(b"cut short")
    proc = run_script("snapshot_run.py", str(run), "--to", str(tmp_path / "snap"))
    assert proc.returncode == 0, proc.stderr
    snap = tmp_path / "snap"
    assert sorted(p.name for p in snap.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl"]
    assert yaml.safe_load((snap / "config.yaml").read_text())["data"]["path"] is None  # not this machine's
    assert [p.name for p in (snap / "checkpoints").iterdir()] == ["step_00000004"]
    assert (snap / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    for directory in (run, snap):
        Trainer(config(8), directory, resume=True, show_progress=False).fit()
    ours, theirs = (checkpoint.load(d / "model").state_dict() for d in (snap, run))
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0, msg=k)
    missing = run_script("snapshot_run.py", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert "holds no run" in missing.stderr


def test_gpu_check_without_cuda_stops_with_one_line(tmp_path):
    out = tmp_path / "report.md"
    no_gpu = {**ENV, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), "--out", str(out)],
                          capture_output=True, text=True, env=no_gpu, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gpu_check needs a CUDA GPU"), proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_benchmark_sample_quick_times_every_decoder(tmp_path):
    """``benchmark.py sample --quick``: cached (fp32, bf16) against the reference decoder, and the
    throughput case against one forward pass, each cached row with its weight-streaming floor."""
    out = tmp_path / "sample.json"
    proc = run_script("benchmark.py", "sample", "--quick", "--cases", "gated", "throughput",
                      "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    kinds = sorted((r["case"], r["precision"], r["decoder"]) for r in rows)
    assert kinds == [("gated", "bf16", "cached"), ("gated", "fp32", "cached"), ("gated", "fp32", "reference"),
                     ("throughput", "bf16", "cached"), ("throughput", "bf16", "forward"),
                     ("throughput", "fp32", "cached"), ("throughput", "fp32", "forward")]
    for r in rows:
        assert r["seconds"] > 0
        if r["decoder"] == "cached":
            assert r["floor_per_step"] > 0 and r["weight_bytes_per_step"] > 0
            assert ("vs_reference" if r["case"] == "gated" else "vs_forward") in r
    assert len(table_rows(proc.stdout)) == len(rows)


def test_benchmark_rejects_bad_threads_in_one_line(tmp_path):
    out = tmp_path / "s.json"
    proc = run_script("benchmark.py", "sample", "--quick", "--threads", "0", "--json", str(out))
    said = "error: --threads takes 'auto' or positive numbers, not '0'"
    assert proc.returncode == 2 and proc.stderr.strip() == said, proc.stderr
    assert not out.exists()
