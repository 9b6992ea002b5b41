"""The run directory a trainer owns while it holds its lock.

```
RUN/
  run.lock           the writer's lock (imagegen.lock); absent when no trainer runs
  config.yaml        the resolved config the run started with; never rewritten
  segments.jsonl     one line per resume that changed a setting: {"step": N, "changes": {key: [old, new]}}
  metrics.jsonl      one JSON record per log or eval, exactly one per (step, kind), steps ascending
  samples/step_N.png
  checkpoints/step_N/  training state (imagegen.runstate)
  model              the exported EMA weights: a symlink to the current version (checkpoint.publish)
```

A resume may change only the settings in ``RESUMABLE`` (how long and how fast to train, how often to
log, where the data lies, precision); anything that changes what is trained (model, data, batch,
optimizer, seed) is refused. The config in force at step N is ``config.yaml`` plus the changes of the
segments up to N.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from . import durable
from .config import Config, from_dict
from .errors import ConfigError, ImagegenError

CONFIG, SEGMENTS, METRICS = "config.yaml", "segments.jsonl", "metrics.jsonl"
RESUMABLE = frozenset({
    "train.max_steps", "train.lr", "train.warmup_steps", "train.schedule", "train.min_lr_ratio",
    "train.grad_clip", "train.log_every", "train.eval_every", "train.eval_images", "train.eval_batch_size",
    "train.sample_every", "train.num_samples", "train.checkpoint_every", "train.keep_checkpoints",
    "train.keep_best", "train.patience",
    "train.mixed_precision", "train.channels_last", "data.path", "data.download",
})
_SAMPLE = re.compile(r"step_(\d+)\.png")


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds (part of) a run: its config, metrics, checkpoints or model."""
    return any((run_dir / name).exists() or (run_dir / name).is_symlink()
               for name in (CONFIG, METRICS, "checkpoints", "model"))


def flat(config: Config) -> dict[str, Any]:
    """``{"section.key": value}`` of a config (YAML-normal values: lists, not tuples)."""
    return {f"{section}.{k}": v for section, values in config.to_dict().items() for k, v in values.items()}


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as ``flat`` gives it; one-line ``ImagegenError`` if unreadable."""
    path = run_dir / CONFIG
    try:
        d = yaml.safe_load(path.read_text())
        if not isinstance(d, dict):
            raise ConfigError("it does not hold a mapping")
        return flat(from_dict(d))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError, RecursionError) as e:
        raise ImagegenError(f"cannot read the run's config {path}: {durable.reason(e)}") from None


def config_at(original: dict[str, Any], segments: list[dict], step: int) -> dict[str, Any]:
    """The flat config in force at ``step``: the original plus the changes of segments up to it."""
    config = dict(original)
    for segment in segments:
        if segment["step"] <= step:
            config.update({k: new for k, (_, new) in segment["changes"].items()})
    return config


def changes(saved: dict[str, Any], new: dict[str, Any], run_dir: Path) -> dict[str, list]:
    """``{key: [old, new]}`` of the resumable settings that differ; ``ConfigError`` (one line) if any
    other setting differs."""
    differ = {k: [saved.get(k), new.get(k)] for k in sorted(saved.keys() | new.keys())
              if saved.get(k) != new.get(k)}
    refused = [k for k in differ if k not in RESUMABLE]
    if refused:
        shown = "; ".join(f"{k} is {differ[k][1]!r} here but {differ[k][0]!r} in the run"
                          for k in refused[:3])
        raise ConfigError(f"cannot resume {run_dir} with a different config: {shown}. On resume only "
                          f"train.max_steps, train.lr, schedule, eval/log/sample/checkpoint intervals, "
                          f"precision and data.path may change")
    return differ


def read_log(path: Path) -> tuple[list[dict], bool]:
    """The records of a JSON-lines log (``{"step": int, ...}`` each) and whether its last line was cut
    short (a writer stopped mid-line; that line is left out). Any other bad line: ``ImagegenError``."""
    if not (path.exists() or path.is_symlink()):
        raw = b""
    else:
        _plain(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ImagegenError(f"cannot read {path}: {durable.reason(e)}") from None
    *lines, last = raw.split(b"\n")
    cut = last != b""
    if cut and not last.startswith(b'{"step": '):  # our writers start every record so
        lines.append(last)
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
            raise ImagegenError(f"{path} line {number} is not a log record: repair or remove the file")
        records.append(record)
    return records, cut


def append_log(path: Path, record: dict) -> None:
    """Append a ``{"step": ...}`` record as one line."""
    if path.is_symlink():
        _plain(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise durable.write_error(path, e) from None


def _plain(path: Path) -> None:
    """``ImagegenError`` unless ``path`` is a plain file (not a symlink, whose target we would read or
    append to, nor a FIFO, which would block)."""
    if path.is_symlink() or not path.is_file():
        raise ImagegenError(f"{path} is not a plain file (a link, a folder or a pipe): a run's logs must be "
                            "plain files; move it away")


def exact_log(records: list[dict], step: int) -> list[dict]:
    """The metrics records up to ``step``, one per (step, kind): a record logged again after a resume
    (by earlier versions) replaces the first."""
    kept = [r for r in records if r["step"] <= step]
    last = {(r["step"], tuple(sorted(r))): i for i, r in enumerate(kept)}
    return [r for i, r in enumerate(kept) if last[(r["step"], tuple(sorted(r)))] == i]


def truncate_metrics(run_dir: Path, step: int) -> list[str]:
    """Make ``metrics.jsonl`` exact up to ``step`` (``exact_log``); returns notes on what was dropped."""
    return _rewrite(run_dir / METRICS, lambda records: exact_log(records, step))


def read_segments(run_dir: Path) -> list[dict]:
    """The records of ``segments.jsonl``, checked; one-line ``ImagegenError`` if malformed."""
    path = run_dir / SEGMENTS
    records, _ = read_log(path)
    for number, r in enumerate(records, 1):
        c = r.get("changes")
        if not (isinstance(c, dict) and all(isinstance(v, list) and len(v) == 2 for v in c.values())):
            raise ImagegenError(f"{path} line {number} is not a segment record: repair or remove the file")
    return records


def truncate_segments(run_dir: Path, step: int) -> list[str]:
    """Drop the segments that began after ``step`` (the run resumes before them)."""
    return _rewrite(run_dir / SEGMENTS, lambda records: [r for r in records if r["step"] <= step])


def _rewrite(path: Path, keep) -> list[str]:
    """Rewrite a log atomically with ``keep(records)`` if that or a cut-short last line changes it."""
    records, cut = read_log(path)
    kept = keep(records)
    if len(kept) == len(records) and not cut:
        return []
    durable.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    dropped = len(records) - len(kept)
    notes = [f"{path.name}: dropped {dropped} record(s) past the resumed step or logged twice"]
    return notes * (dropped > 0) + [f"{path.name}: dropped its last line, cut short"] * cut


def remove_samples_after(run_dir: Path, step: int) -> None:
    """Delete sample grids of steps after ``step`` (they will be drawn again, identically)."""
    folder = run_dir / "samples"
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SAMPLE.fullmatch(p.name)
            if m and int(m.group(1)) > step:
                p.unlink()


def remove_temporaries(run_dir: Path) -> list[str]:
    """Clear what killed writers left in the run directory; returns the names removed."""
    removed = [name for sub in ("", "checkpoints", "samples")
               for name in durable.remove_temporaries(run_dir / sub)]
    # the grids' temporaries of earlier versions (tempfile.mkstemp names)
    for pattern in ("tmp*.png.tmp", ".step_*.png.*.tmp"):
        for p in (run_dir / "samples").glob(pattern):
            p.unlink()
            removed.append(p.name)
    return removed
