"""Run by tests/test_faults.py: `imagegen train` in forked children of one process that has already paid
for the imports, so that many trainer processes cost little. Prints one JSON line of results.

    trainer_worker.py kill CONFIG RUN REFERENCE SEED KILLS
        REFERENCE: one uninterrupted run. RUN: KILLS runs, each resuming the last (fresh if RUN holds
        no run yet), killed with SIGKILL at a seeded random moment (see ``kill``), then one to the end.
        A durable step is a durable.fsync or os.replace: mid-checkpoint, mid-export, mid-log rewrite.
    trainer_worker.py race CONFIG RUN
        Two fresh runs into RUN started at the same moment.
"""

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch._dynamo  # noqa: E402, F401  (imported lazily by the first optimizer; paid once, before forking)

from imagegen import cli, durable, rundir  # noqa: E402


def _count_durable_steps(die_at: int | None, log: Path | None, only: str = "") -> list[int]:
    """Count this process's durable steps (``durable.fsync`` and ``os.replace`` calls; with ``only``,
    those on a path containing it); with ``die_at``, SIGKILL it just before step ``die_at``, noting the
    step in ``log``. Returns the live counter."""
    count = [0]

    def wrap(fn):
        def wrapper(*args, **kwargs):
            count[0] += only in " ".join(map(str, args))
            if count[0] == die_at:
                with open(log, "a") as f:
                    f.write(f"{fn.__name__} {' '.join(map(str, args))}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapper

    durable.fsync, os.replace = wrap(durable.fsync), wrap(os.replace)
    return count


def start(config: str, run: Path, die_at: int | None = None, log: Path | None = None, only: str = "",
          count_into: Path | None = None) -> int:
    """Fork a child that runs `imagegen train` into ``run`` (resuming if it holds a run); its pid.
    ``die_at``/``log``/``only``: see ``_count_durable_steps``; ``count_into``: write the count there."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        count = _count_durable_steps(die_at, log, only)
        args = ["train", config, "--output-dir", str(run)] + (["--resume"] if rundir.holds_run(run) else [])
        cli.main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        if count_into is not None:
            count_into.write_text(str(count[0]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def status(pid: int) -> str:
    _, raw = os.waitpid(pid, 0)
    return f"signal {os.WTERMSIG(raw)}" if os.WIFSIGNALED(raw) else f"exit {os.WEXITSTATUS(raw)}"


def kill(config: str, run: Path, reference: Path, seed: int, kills: int) -> dict:
    """Kills cycle through three kinds: at a random durable step among the first quarter of a whole
    run's, at one of the first durable steps on a checkpoint path (mid-save, every time), after a
    random time (anywhere, including imports and startup)."""
    ops = reference.with_name("ops")
    begin = time.perf_counter()
    ref = status(start(config, reference, count_into=ops))
    duration, total = time.perf_counter() - begin, int(ops.read_text())
    rng, log, attempts = random.Random(seed), run.with_name("kills.log"), []
    for k in range(kills):
        kind = k % 3
        if kind == 0:
            n = rng.randint(1, max(1, total // 4))
            attempts.append([f"at durable step {n}", status(start(config, run, die_at=n, log=log))])
        elif kind == 1:
            n = rng.randint(1, 8)
            attempts.append([f"at checkpoint step {n}", status(start(config, run, n, log, "checkpoints"))])
        else:
            delay = rng.uniform(0.0, duration)
            pid = start(config, run)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            attempts.append([f"after {delay:.2f} s", status(pid)])
    final = status(start(config, run))
    return {"reference": ref, "durable_steps": total, "attempts": attempts, "final": final,
            "killed_at": log.read_text().splitlines() if log.exists() else []}


def race(config: str, run: Path) -> dict:
    pids = [start(config, run), start(config, run)]
    return {"pids": pids, "status": [status(p) for p in pids]}


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "kill":
        result = kill(rest[0], Path(rest[1]), Path(rest[2]), int(rest[3]), int(rest[4]))
    else:
        result = race(rest[0], Path(rest[1]))
    print(json.dumps(result), flush=True)
