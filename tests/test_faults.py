"""Trainer processes killed with SIGKILL at random moments, and two trainers racing for one run directory
(real processes: forked `imagegen train` children of tests/trainer_worker.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import tiny_mnist, without_timings

WORKER = Path(__file__).parent / "trainer_worker.py"


def _config(tmp_path, data, **train):
    """A YAML config: a tiny Image Transformer with dropout (so resuming exactly needs the generators
    restored), logs that straddle checkpoints (so it needs the loss window restored), evals and samples."""
    t = dict(batch_size=4, max_steps=12, lr=3e-3, warmup_steps=2, log_every=3, eval_every=4, eval_images=8,
             sample_every=4, num_samples=2, checkpoint_every=2, keep_checkpoints=2)
    t.update(train)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({
        "model": {"name": "transformer_1d", "hidden": 8, "num_layers": 1, "num_heads": 2, "ffn_hidden": 8,
                  "block_length": 16, "memory_length": 16, "dropout": 0.2},
        "data": {"name": "mnist", "path": str(data)}, "train": t}))
    return path


def _worker(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run by relative path, the exported models' (``model``, ``best``) by their links."""
    out = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
           if p.is_file() and not p.relative_to(run).parts[0].startswith((".model.v-", ".best.v-"))}
    for link in ("model", "best"):
        out.update({f"{link}/{p.name}": p.read_bytes() for p in (run / link).iterdir()})
    return out


def test_killed_at_random_moments_then_resumed_ends_bit_identical(tmp_path):
    data = tiny_mnist(tmp_path / "m.npz")
    config = _config(tmp_path, data)
    run, reference = tmp_path / "run", tmp_path / "reference"
    result, log = _worker("kill", config, run, reference, 7, 6)
    # A kill after a random time may land after the end (on a loaded machine); the last start then finds
    # the run finished and says so (exit 2).
    finished = result["attempts"][-1][1] == "exit 0"
    assert result["reference"] == "exit 0" and result["final"] == ("exit 2" if finished else "exit 0"), \
        (result, log[-3000:])
    # The kills at durable steps each cut their run short (the time ones may land after the end).
    assert [a[1] for a in result["attempts"] if "step" in a[0]] == ["signal 9"] * 4, result
    assert sum("checkpoints" in k for k in result["killed_at"]) >= 2, result
    a, b = _files(reference), _files(run)
    assert sorted(a) == sorted(b), set(a) ^ set(b)  # no temporaries, no lock, nothing stale
    for name in a:  # weights, optimizer, EMA, generators, samples, export, config, logs
        assert without_timings(name, a[name]) == without_timings(name, b[name]), name
    assert (run / "model").is_symlink() and len(list(run.glob(".model.v-*"))) <= 2


def test_two_trainers_into_one_directory_one_wins_the_other_gets_one_line(tmp_path):
    data = tiny_mnist(tmp_path / "m.npz")
    config = _config(tmp_path, data, max_steps=300, log_every=10, eval_every=300, sample_every=0,
                     checkpoint_every=100)
    run = tmp_path / "run"
    result, log = _worker("race", config, run)
    winner = result["status"].index("exit 0")
    loser = 1 - winner
    assert result["status"][loser] == "exit 2", result
    errors = re.findall(r"error: [^\r\n]*\n", log)  # (amid the winner's progress bar)
    assert len(errors) == 1 and f"in use by pid {result['pids'][winner]}" in errors[0], log[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) + 1  # one log and one eval at 300
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000200", "step_00000300"]
    assert not (run / "run.lock").exists()
