"""Keep a long training run resumable across machines: copy what `--resume` needs into the repository.

    python scripts/snapshot_run.py RUN_DIR [--to training_state/NAME]

Copies the run's ``config.yaml``, ``segments.jsonl`` and ``metrics.jsonl`` and its newest checkpoint
that reads back whole (checked against its SHA-256 manifest) into ``--to`` (default
``training_state/<run directory name>``), replacing the previous snapshot there in one rename. No
samples, exports or older checkpoints: a snapshot is the smallest run directory that resumes exactly.
To continue on another machine::

    cp -r training_state/NAME RUN_DIR
    imagegen train configs/NAME.yaml --data PATH --output-dir RUN_DIR --resume

Bad input prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml
from common import exit_code

from imagegen import durable, rundir, runstate
from imagegen.errors import ImagegenError

ROOT = Path(__file__).resolve().parent.parent


def snapshot(run_dir: Path, to: Path) -> Path:
    """Copy ``run_dir``'s logs, config and newest usable checkpoint into ``to`` (replaced whole);
    returns the checkpoint directory copied."""
    if not (run_dir / rundir.CONFIG).is_file():
        raise ImagegenError(f"{run_dir} holds no run (no {rundir.CONFIG}): pass a run directory of "
                            "`imagegen train`")
    for directory in reversed(runstate.list_checkpoints(run_dir / "checkpoints")):
        try:
            runstate.read(directory)
        except runstate.CheckpointError:
            continue
        break
    else:
        raise ImagegenError(f"{run_dir} has no usable checkpoint yet: wait for the first one")
    with durable.atomic_directory(to) as tmp:
        for name in (rundir.SEGMENTS, rundir.METRICS):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        config = yaml.safe_load((run_dir / rundir.CONFIG).read_text())
        config["data"]["path"] = None  # this machine's path; a resume elsewhere passes --data
        (tmp / rundir.CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.copytree(directory, tmp / "checkpoints" / directory.name)
    return directory


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success (prints what was copied), 2 for bad input."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory of `imagegen train`")
    p.add_argument("--to", help="snapshot directory (default: training_state/<RUN_DIR name>)")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    to = Path(args.to) if args.to else ROOT / "training_state" / run_dir.resolve().name

    def work() -> None:
        directory = snapshot(run_dir, to)
        print(f"{to}: {directory.name} of {run_dir}")

    return exit_code(work)


if __name__ == "__main__":
    sys.exit(main())
