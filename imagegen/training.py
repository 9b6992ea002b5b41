"""The trainer: one loop for every model, on HuggingFace accelerate (CPU, one GPU, or many
processes with ``accelerate launch``), unaware of the device it runs on.

The run directory it writes (config, config history, metrics, samples, checkpoints, the exported
``model``) is described in ``imagegen.rundir``; checkpoints in ``imagegen.runstate``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import checkpoint, durable, rngstate, rundir, runstate
from .config import Config, save_config, short
from .data import ImageData, binarize, load_dataset
from .errors import ConfigError, ImagegenError, NonFiniteError
from .imageio import nearest_upsample, save_grid
from .lock import RunLock, busy, describe
from .metrics import bits_per_dim
from .models import AutoregressiveModel, build_model
from .models.head import loss as nll_loss
from .sampling import sample


@dataclass
class Datasets:
    train: ImageData
    eval: ImageData


def load_data(config: Config) -> Datasets:
    """The train and eval splits named by ``config.data``."""
    d = config.data
    if d.train_split == d.eval_split:
        raise ConfigError(f"data.eval_split is {d.eval_split!r}, the split it trains on: evaluate on val")
    kwargs = dict(image_size=d.image_size, download=d.download, val_size=d.val_size)
    # Stochastic binarization is re-drawn for every training batch; eval uses one fixed draw.
    train_binarize = None if d.binarize == "stochastic" else d.binarize
    train = load_dataset(d.name, d.path, d.train_split, binarize=train_binarize, **kwargs)
    if d.train_limit:  # views: a memory-mapped split stays mapped
        train = ImageData(train.images[: d.train_limit],
                          None if train.labels is None else train.labels[: d.train_limit],
                          train.levels, train.num_classes)
    evaluation = load_dataset(d.name, d.path, d.eval_split, binarize=d.binarize, **kwargs)
    if len(evaluation) == 0:
        raise ConfigError(f"the {d.eval_split} split of {d.path or d.name} is empty: set data.val_size "
                          "(images carved out of train for val)")
    return Datasets(train, evaluation)


def make_model(config: Config, data: ImageData) -> AutoregressiveModel:
    """``build_model`` from the config's model section, shapes and levels filled in from the data."""
    kwargs = dict(config.model)
    name = kwargs.pop("name")
    kwargs.setdefault("channels", data.images.shape[1])
    kwargs.setdefault("image_size", list(data.images.shape[2:]))
    kwargs.setdefault("levels", 2 if config.data.binarize else data.levels)
    if config.data.class_conditional:
        if data.labels is None:
            raise ConfigError("data.class_conditional needs a dataset with labels")
        kwargs.setdefault("num_classes", data.num_classes)
    if isinstance(kwargs["image_size"], list):
        kwargs["image_size"] = tuple(kwargs["image_size"])
    try:
        model = build_model(name, **kwargs)
    except ValueError as e:
        raise ConfigError(f"model section: {e}") from None
    check_fits(model, data, config.data.binarize)
    return model


def check_fits(model: AutoregressiveModel, data: ImageData, binarize: str | None) -> None:
    """``ConfigError`` unless ``model`` takes ``data``'s images (shape, levels) and labels (classes), so
    that a mismatch is reported before a run starts, not as an index error at its first step."""
    shape, data_shape = model.shape, tuple(data.images.shape[1:])
    if shape != data_shape:
        raise ConfigError(f"model section: channels and image_size give {shape} images but the data's are "
                          f"{data_shape}: leave them out (they default to the data's)")
    levels = 2 if binarize else data.levels
    if model.levels < levels:
        raise ConfigError(f"model.levels is {model.levels} but the data has {levels} levels: leave "
                          "model.levels out (it defaults to the data's), or set data.binarize")
    if model.num_classes:
        if data.labels is None:
            raise ConfigError(f"model.num_classes is {model.num_classes} but the data has no labels: "
                              "leave it out")
        top = int(data.labels.max()) if len(data.labels) else -1
        if top >= model.num_classes:
            raise ConfigError(f"model.num_classes is {model.num_classes} but the data's labels go up to "
                              f"{top}: leave it out (data.class_conditional: true sets it from the data)")


def lr_factor(step: int, config: Config) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warmup, then the schedule."""
    t = config.train
    warm = max(1, t.warmup_steps)
    if step < warm:
        return (step + 1) / warm
    if t.schedule == "constant":
        return 1.0
    if t.schedule == "rsqrt":
        return math.sqrt(warm / (step + 1))
    if t.schedule == "cosine":
        progress = min(1.0, (step - warm) / max(1, t.max_steps - warm))
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown train.schedule {t.schedule!r}: use cosine, rsqrt or constant")


def batch_indices(n: int, batch: int, world: int, rank: int, micro_step: int, seed: int) -> torch.Tensor:
    """Indices of this process's micro-batch number ``micro_step``: each epoch is a fresh seeded
    permutation cut into global batches of ``batch * world``; a function of the step alone, so a
    resumed run sees exactly the batches the uninterrupted one would."""
    per_epoch = n // (batch * world)
    if per_epoch == 0:
        raise ConfigError(f"the dataset has {n} images, fewer than one global batch ({batch * world}): "
                          "lower train.batch_size")
    epoch, k = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    start = (k * world + rank) * batch
    return perm[start : start + batch]


class Trainer:
    """Trains ``config`` into ``run_dir``; ``fit()`` runs until ``train.max_steps``.

    The trainer holds the run directory's lock (``imagegen.lock``) from construction until ``fit()``
    returns or ``close()`` is called; only the main process writes. Construction checks everything
    first (config, data, model, and on ``resume`` the run's config history and checkpoints) and writes
    nothing to the run before that has passed. A resume continues from the newest usable checkpoint
    (falling back past unusable ones, and saying so), refuses a config that changes what is trained and
    records a changed schedule or length in ``segments.jsonl`` (see ``imagegen.rundir``). Notes go to
    stderr and to ``notes``.
    """

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, show_progress: bool = True):
        self.config, self.run_dir = config, Path(run_dir)
        t = config.train
        if t.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision must be no, bf16 or fp16, not {t.mixed_precision!r}")
        lr_factor(0, config)  # validates the schedule name
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(t.optimizer)
        if opt_cls is None:
            raise ConfigError(f"unknown train.optimizer {t.optimizer!r}: use adamw or adam")
        holder = RunLock.holder(self.run_dir)  # fail early, before loading data, if another trainer is there
        if holder is not None:
            raise busy(self.run_dir, holder)
        self._check_run_exists(resume)
        trackers = "tensorboard" if _has_tensorboard() else None
        # cpu=True on a machine without an accelerator lets accelerate run several CPU processes
        # (gloo) when started by torchrun; a single process is unaffected.
        no_accelerator = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision,
                                       gradient_accumulation_steps=t.grad_accum, log_with=trackers,
                                       project_dir=str(self.run_dir), cpu=no_accelerator)
        acc = self.accelerator
        self.show_progress = show_progress and acc.is_main_process
        set_seed(t.seed)
        self.data = load_data(config)
        batch_indices(len(self.data.train.images), t.batch_size, acc.num_processes, 0, 0, t.seed)  # fits?
        model = make_model(config, self.data.train)
        check_fits(model, self.data.eval, config.data.binarize)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.raw_model = model
        optimizer = opt_cls(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.ema = None
        if t.ema_decay:
            self.ema = AveragedModel(self.raw_model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay),
                                     use_buffers=True)
        self.step, self.resumed, self.notes = 0, resume, []
        self.window = {"loss": 0.0, "steps": 0}  # training loss summed since the last log record
        self.cpu_base, self.cpu_start = 0.0, time.process_time()  # CPU s of earlier processes; our start
        self.last_eval: dict = {}
        self.best: dict = {}  # the eval with the lowest bits/dim so far: {"step", "eval_bpd"}
        self._lock, self._made_dir = None, False
        self._lock_run()
        try:
            plan = self._check_run(resume)
            acc.wait_for_everyone()  # every process has read the run before the main one changes it
            if acc.is_main_process:
                self._prepare_run(plan)
            acc.wait_for_everyone()
        except BaseException:
            self.close()
            raise
        if trackers:
            acc.init_trackers("imagegen")

    # --- the run directory -----------------------------------------------------------------
    def _check_run_exists(self, resume: bool) -> None:
        """Fail when ``resume`` does not fit what ``run_dir`` holds."""
        held = rundir.holds_run(self.run_dir)
        if resume and not held:
            raise ImagegenError(f"nothing to resume in {self.run_dir}: it holds no run; leave out --resume "
                                "to start one there")
        if not resume and held:
            holder = RunLock.holder(self.run_dir) if getattr(self, "_lock", None) is None else None
            if holder is not None:  # a trainer that started a moment before us
                raise busy(self.run_dir, holder)
            raise ImagegenError(f"{self.run_dir} already holds a run: pass --resume to continue it, "
                                "or choose another --output-dir")

    def _lock_run(self) -> None:
        """Take the run directory's lock on the main process (making the directory for a new run);
        every process raises if it could not be taken."""
        acc, error = self.accelerator, None
        if acc.is_main_process:
            try:
                self._made_dir = not self.run_dir.exists()
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._lock = RunLock.acquire(self.run_dir)
            except OSError as e:
                error = ImagegenError(f"cannot create {self.run_dir}: {durable.reason(e)}")
            except ImagegenError as e:
                error = e
            if error is not None:
                self._remove_made_dir()
        if acc.num_processes > 1:
            locked = broadcast(torch.tensor([int(error is None)], device=acc.device), from_process=0)
            if not bool(locked.item()) and error is None:
                error = ImagegenError(f"the main process could not lock {self.run_dir}")
        if error is not None:
            raise error
        if self._lock is not None and self._lock.stale:
            self._note(f"took over the lock of {describe(self._lock.stale)}, which is no longer running")

    def _check_run(self, resume: bool) -> _Plan | None:
        """Under the lock, read and check what the run holds and load the newest usable checkpoint;
        writes nothing. Returns what ``_prepare_run`` must do (None: a new run)."""
        self._check_run_exists(resume)  # again: another trainer may have come and gone meanwhile
        if not resume:
            return None
        original = rundir.read_config(self.run_dir)
        segments = rundir.read_segments(self.run_dir)
        rundir.read_log(self.run_dir / rundir.METRICS)  # cut back by _prepare_run: readable?
        state, unusable = self._newest_usable()
        step = state.step if state is not None else 0
        saved = rundir.config_at(original, segments, step)
        changes = rundir.changes(saved, rundir.flat(self.config), self.run_dir)
        if step and step >= self.config.train.max_steps:
            exported = self._exported_step()
            if exported == step:
                raise ImagegenError(f"the run in {self.run_dir} is at step {step} already: pass a "
                                    f"--max-steps above {step} to train it further")
        if state is None:
            self._note(f"{self.run_dir} has no checkpoint yet: training from step 0")
        else:
            self._restore(state)
        if step and step >= self.config.train.max_steps:
            self._note(f"the run ended at step {step} but its export was cut short ({self.run_dir / 'model'} "
                       f"is {'missing' if exported is None else f'of step {exported}'}): exporting it again")
        return _Plan(step, unusable, changes)

    def _exported_step(self) -> int | None:
        """The step of the run's exported model, None if it has none that reads."""
        try:
            return checkpoint.read_info(self.run_dir / "model").get("step")
        except ImagegenError:
            return None

    def _newest_usable(self) -> tuple[runstate.TrainingState | None, list[tuple[Path, str]]]:
        """The newest checkpoint that reads back whole, and the newer ones that did not (with why)."""
        unusable = []
        for directory in reversed(self.checkpoints()):
            try:
                state = runstate.read(directory)
            except runstate.CheckpointError as e:
                unusable.append((directory, str(e)))
                continue
            for bad, why in unusable:
                self._note(f"checkpoint {bad.name} is unusable ({why}): resuming from {directory.name}")
            return state, unusable
        if unusable:
            why = "; ".join(f"{d.name}: {r}" for d, r in unusable)
            raise ImagegenError(f"no usable checkpoint in {self.run_dir / 'checkpoints'} ({why})")
        return None, []

    def _prepare_run(self, plan: _Plan | None) -> None:
        """Make the run directory ready to write (main process): clear what killed writers left; a new
        run writes its config; a resumed one sets aside unusable checkpoints, cuts the logs back to the
        resumed step and records changed settings."""
        removed = rundir.remove_temporaries(self.run_dir)
        if removed:
            self._note(f"removed {len(removed)} temporary file(s) left by a killed writer: "
                       f"{', '.join(removed[:3])}")
        if plan is None:
            with durable.atomic_file(self.run_dir / rundir.CONFIG) as tmp:
                save_config(self.config, tmp)
            return
        for directory, _ in plan.unusable:
            aside = directory.with_name(f"unusable-{directory.name}")
            durable.remove(aside)
            os.replace(directory, aside)
            self._note(f"moved {directory.name} to {aside.name}")
        for note in rundir.truncate_metrics(self.run_dir, plan.step) + rundir.truncate_segments(self.run_dir,
                                                                                              plan.step):
            self._note(note)
        rundir.remove_samples_after(self.run_dir, plan.step)
        if plan.changes:
            rundir.append_log(self.run_dir / rundir.SEGMENTS, {"step": plan.step, "changes": plan.changes})
            shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in plan.changes.items())
            self._note(f"from step {plan.step}: {shown} (recorded in {rundir.SEGMENTS})")

    def close(self) -> None:
        """Give up the run directory's lock (idempotent); a new run's directory that is still empty
        (construction failed) is removed."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
            self._remove_made_dir()

    def _remove_made_dir(self) -> None:
        if self._made_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only if empty

    def _note(self, message: str) -> None:
        self.notes.append(message)
        if self.accelerator.is_main_process:
            tqdm.write(f"note: {message}", file=sys.stderr)

    # --- state -----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Training checkpoints of this run, oldest first."""
        return runstate.list_checkpoints(self.run_dir / "checkpoints")

    def save(self) -> Path:
        """Write the full training state to ``checkpoints/step_N`` atomically (main process; every
        process's generator states are gathered to it); keep the newest ``train.keep_checkpoints``."""
        acc = self.accelerator
        rng = {k: acc.gather(v.to(acc.device)[None]).cpu() for k, v in rngstate.capture().items()}
        root, cpu_s = self.run_dir / "checkpoints", self.cpu_seconds()
        if acc.is_main_process:
            metrics = self.run_dir / rundir.METRICS
            if metrics.exists():
                durable.fsync(metrics)  # the log up to this step outlives a power cut, as the state does
            state = runstate.TrainingState(
                step=self.step, model=self.raw_model.state_dict(), optimizer=self.optimizer.state_dict(),
                ema=None if self.ema is None else self.ema.state_dict(), rng=rng,
                scaler=None if acc.scaler is None else acc.scaler.state_dict(),
                loop={"window": self.window, "last_eval": self.last_eval, "best": self.best, "cpu_s": cpu_s,
                      "model": _json(self.raw_model.config), "data": self.fingerprint()})
            runstate.write(root, state)
            keep = self.config.train.keep_checkpoints
            for old in self.checkpoints()[:-keep] if keep > 0 else []:
                durable.remove_tree(old)
        acc.wait_for_everyone()
        return runstate.directory_for(root, self.step)

    def fingerprint(self) -> dict[str, list]:
        """``{"train"|"eval": [images, sha256 of their shape and of up to 256 evenly spaced ones]}``: what a
        resume checks to see that ``data.path`` still holds the images the run trained on."""
        out = {}
        for split, data in (("train", self.data.train), ("eval", self.data.eval)):
            images = data.images
            picked = images[torch.linspace(0, len(images) - 1, min(256, len(images))).long()]
            h = hashlib.sha256(json.dumps(list(images.shape)).encode())
            h.update(picked.contiguous().numpy().tobytes())
            out[split] = [len(images), h.hexdigest()]
        return out

    def _check_same_kind(self, state: runstate.TrainingState, where: str) -> None:
        """``ImagegenError`` if the config and data now build another model than the checkpoint trained
        (data.path changed to images of another shape), or the data are other images. Checkpoints of
        earlier versions record neither: the run's exported model gives the model."""
        trained = state.loop.get("model")
        if not isinstance(trained, dict):
            try:
                trained = checkpoint.read_info(self.run_dir / "model")["model"]
            except ImagegenError:
                trained = None
        now = _json(self.raw_model.config)
        if isinstance(trained, dict) and trained != now:
            shown = "; ".join(f"{k} {trained.get(k)!r} then, {now.get(k)!r} now"
                              for k in sorted(trained.keys() | now.keys()) if trained.get(k) != now.get(k))
            raise ImagegenError(f"{where} trained another model than the config and data give now "
                                f"({shown[:200]}): resume with the data the run trained on")
        data = state.loop.get("data")
        if isinstance(data, dict) and data != self.fingerprint():
            d = self.config.data
            raise ImagegenError(f"{d.path or d.name} does not hold the images the run trained on (their "
                                "number or content differ): resume with the data the run trained on, or "
                                "start a new run")

    def _restore(self, state: runstate.TrainingState) -> None:
        """Load a checkpoint's state into the model, optimizer, EMA, generators and loop counters."""
        acc, where = self.accelerator, f"checkpoint step_{state.step:08d}"
        self._check_same_kind(state, where)
        problem = checkpoint.mismatch(self.raw_model.state_dict(), state.model)
        if problem is None and self.ema is not None:
            if state.ema is None:
                raise ImagegenError(f"{where} holds no EMA weights, but train.ema_decay is set")
            problem = checkpoint.mismatch(self.ema.state_dict(), state.ema)
        problem = problem or _optimizer_mismatch(self.optimizer, state.optimizer)
        if problem:
            raise ImagegenError(f"{where} does not fit this model: {problem}")
        rank, rows = acc.process_index, state.rng
        processes = min((len(v) for v in rows.values()), default=0)
        try:  # what the checks above cannot see (a generator state of the wrong size, a bad scaler state)
            self.raw_model.load_state_dict(state.model)
            if self.ema is not None:
                self.ema.load_state_dict(state.ema)
            self.optimizer.load_state_dict(state.optimizer)
            if acc.scaler is not None and state.scaler is not None:
                acc.scaler.load_state_dict(state.scaler)
            unused = rngstate.restore({k: v[rank] for k, v in rows.items()}) if rank < processes else []
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
            raise ImagegenError(f"{where} does not fit this run: {durable.reason(e)[:200]}") from None
        if processes != acc.num_processes:
            self._note(f"{where} was written by {processes} process(es), resumed on {acc.num_processes}: "
                       "batches and random draws differ from an uninterrupted run")
        if unused:
            self._note(f"{where} holds {', '.join(unused)} generator states this machine has no use for")
        loop = state.loop
        window = loop.get("window")
        if isinstance(window, dict) and isinstance(window.get("loss"), float) and \
                isinstance(window.get("steps"), int):
            self.window = {"loss": window["loss"], "steps": window["steps"]}
        cpu = loop.get("cpu_s")
        if isinstance(cpu, float) and math.isfinite(cpu) and cpu >= 0:
            self.cpu_base, self.cpu_start = cpu, time.process_time()
        best = loop.get("best")
        if isinstance(best, dict) and isinstance(best.get("step"), int) and \
                isinstance(best.get("eval_bpd"), float):
            self.best = {"step": best["step"], "eval_bpd": best["eval_bpd"]}
        last = loop.get("last_eval")
        if not isinstance(last, dict):
            last = self._last_eval_logged(state.step)
        whole = isinstance(last.get("step"), int) and isinstance(last.get("eval_bpd"), float)
        self.last_eval = {"step": last["step"], "eval_bpd": last["eval_bpd"]} if whole else {}
        self.step = state.step
        if state.legacy:
            self._note(f"{where} is in the accelerate layout of earlier versions: read without unpickling "
                       "code; checkpoints from now on are in the new layout")

    def _last_eval_logged(self, step: int) -> dict:
        """The last eval record in ``metrics.jsonl`` up to ``step`` (checkpoints of earlier versions
        do not record it)."""
        records, _ = rundir.read_log(self.run_dir / rundir.METRICS)
        evals = [r for r in records if r["step"] <= step and "eval_bpd" in r]
        return {"step": evals[-1]["step"], "eval_bpd": evals[-1]["eval_bpd"]} if evals else {}

    @property
    def eval_model(self) -> AutoregressiveModel:
        """The weights used for eval, samples and export: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.raw_model

    def eval_copy(self) -> AutoregressiveModel:
        """A float32 copy of the eval weights built afresh from the model's config, so it carries none
        of accelerate's mixed-precision patching of ``forward``; in eval mode, on the device."""
        source = self.eval_model
        config = dict(source.config)
        model = build_model(config.pop("name"), **config)
        model.load_state_dict(source.state_dict())
        return model.to(self.accelerator.device, torch.float32).eval()

    def export(self, name: str = "model") -> Path:
        """Publish the eval weights as ``run_dir/<name>`` (safetensors + config.json, swapped in whole;
        see ``checkpoint.publish``) with the step and the last eval: ``model`` after every checkpoint,
        ``best`` at each new best eval."""
        d = self.config.data
        return checkpoint.publish(self.eval_model, self.run_dir / name, step=self.step, dataset=d.name,
                                  binarize=d.binarize, eval_bpd=self.last_eval.get("eval_bpd"),
                                  eval_split=d.eval_split, val_size=d.val_size)

    def _record_eval(self) -> bool:
        """After an eval: keep a new best (exported as ``RUN/best`` with ``train.keep_best``); returns
        whether ``train.patience`` evals have passed since the best, so training should stop."""
        t = self.config.train
        if not self.best or self.last_eval["eval_bpd"] < self.best["eval_bpd"]:
            self.best = dict(self.last_eval)
            if t.keep_best and self.accelerator.is_main_process:
                self.export("best")
        return self._patience_spent()

    def _patience_spent(self) -> bool:
        """Whether ``train.patience`` evals have passed since the best one."""
        t = self.config.train
        return bool(t.patience and self.best) and self.step - self.best["step"] >= t.patience * t.eval_every
    # --- one step ---------------------------------------------------------------------------
    def batch(self, micro_step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's micro-batch ``(x (B, C, H, W) long, cond)`` on the device."""
        t, acc, data = self.config.train, self.accelerator, self.data.train
        idx = batch_indices(len(data.images), t.batch_size, acc.num_processes, acc.process_index,
                            micro_step, t.seed)
        x = data.images[idx]
        if self.config.data.binarize == "stochastic":
            seed = t.seed * 7919 + micro_step * acc.num_processes + acc.process_index
            g = torch.Generator().manual_seed(seed)
            x = binarize(x, "stochastic", generator=g)
        x = x.to(acc.device, non_blocking=True).long()
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = None if data.labels is None else data.labels[idx].to(acc.device)
        return x, self.raw_model.condition(x, labels)

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, every thread) the run has used up to its last checkpoint and in
        this process since, summed over processes when there are several (a collective call)."""
        own = torch.tensor([time.process_time() - self.cpu_start], dtype=torch.float64,
                           device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            own = self.accelerator.reduce(own, "sum")
        return self.cpu_base + float(own.item())

    def lr(self, step: int) -> float:
        """The learning rate of optimiser step ``step``: a function of the step and the config alone,
        so a resume (even with a changed lr or max_steps) needs no scheduler state."""
        return self.config.train.lr * lr_factor(step, self.config)

    def train_step(self) -> float:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss (nats)."""
        t, acc = self.config.train, self.accelerator
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        total = 0.0
        for k in range(t.grad_accum):
            x, cond = self.batch(self.step * t.grad_accum + k)
            with acc.accumulate(self.model), acc.autocast():
                loss = nll_loss(self.model(x, cond), x)
                acc.backward(loss)
                if acc.sync_gradients and t.grad_clip:
                    acc.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += loss.item()
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)
        self.step += 1
        return total / t.grad_accum

    # --- eval and samples -------------------------------------------------------------------
    def evaluate(self) -> float:
        """Bits/dim of the eval weights on ``data.eval_split`` in float32 (sharded over processes)."""
        t, acc, data = self.config.train, self.accelerator, self.data.eval
        n = len(data.images) if t.eval_images is None else min(t.eval_images, len(data.images))
        model = self.eval_copy()
        images = data.images[:n]
        cond = model.condition(images, None if data.labels is None else data.labels[:n])
        return bits_per_dim(model, images, cond, batch_size=t.eval_batch_size,
                            shard=(acc.process_index, acc.num_processes))

    def write_samples(self) -> Path | None:
        """Sample a grid from the eval weights into ``samples/step_N.png`` (main process)."""
        if not self.accelerator.is_main_process:
            return None
        t, model, device = self.config.train, self.eval_copy(), self.accelerator.device
        path = self.run_dir / "samples" / f"step_{self.step:08d}.png"
        if model.upscale_factor:  # rows: low-resolution inputs, samples, ground truth
            truth = self.data.eval.images[: t.num_samples].to(device).long()
            low = model.condition(truth)
            images = sample(model, len(truth), seed=self.step, cond=low)
            shown = torch.cat([nearest_upsample(low, model.upscale_factor), images.long(), truth])
            nrow = len(truth)
        else:
            cond = None
            if model.num_classes:
                cond = torch.arange(t.num_samples, device=device) % model.num_classes
            shown, nrow = sample(model, t.num_samples, seed=self.step, cond=cond), None
        try:
            return save_grid(shown.cpu(), path, levels=model.levels, nrow=nrow)
        except OSError as e:
            raise durable.write_error(path, e) from None

    def log(self, record: dict) -> None:
        """Append a record to ``metrics.jsonl`` and the trackers (main process)."""
        acc = self.accelerator
        if acc.is_main_process:
            rundir.append_log(self.run_dir / rundir.METRICS, record)
        acc.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    # --- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``max_steps``, with eval, samples and checkpoints on schedule; export at the end.
        Returns the last eval record. Gives up the run directory's lock when it returns or raises."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict:
        t, acc = self.config.train, self.accelerator
        if self.resumed and self.step > 0:
            # The export of the resumed checkpoint may have been cut short; publishing it again is exact.
            if acc.is_main_process:
                self.export()
            acc.wait_for_everyone()
        if self._patience_spent():
            self._note(f"no better eval in {t.patience} evals since step {self.best['step']}: the run stopped"
                       " early; resume with a larger train.patience to train on")
            return self.last_eval
        self.model.train()
        bar = tqdm(total=t.max_steps, initial=self.step, disable=not self.show_progress, dynamic_ncols=True,
                   desc="train")
        images_per_step = t.batch_size * t.grad_accum * acc.num_processes
        window_start = time.perf_counter()
        while self.step < t.max_steps:
            loss = self.train_step()
            if not math.isfinite(loss):  # stop before the broken weights reach a checkpoint or the model
                raise NonFiniteError(f"the training loss is {loss} at step {self.step}: the run diverged; "
                                     "resume from its last checkpoint with a lower train.lr")
            self.window["loss"] += loss
            self.window["steps"] += 1
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                loss = self.window["loss"] / self.window["steps"]
                rec = {"step": self.step, "loss": loss, "bpd": loss / math.log(2), "lr": self.lr(self.step),
                       "images": self.step * images_per_step, "cpu_hours": self.cpu_seconds() / 3600,
                       "images_per_s": images_per_step * self.window["steps"] /
                       (time.perf_counter() - window_start)}
                self.log(rec)
                bar.set_postfix(loss=f"{loss:.4f}", bpd=f"{rec['bpd']:.4f}",
                                img_s=f"{rec['images_per_s']:.0f}")
                self.window, window_start = {"loss": 0.0, "steps": 0}, time.perf_counter()
            done = self.step == t.max_steps
            if self.step % t.eval_every == 0 or done:
                hours = self.cpu_seconds() / 3600  # the training's, not the eval's
                self.last_eval = {"step": self.step, "eval_bpd": self.evaluate()}
                self.log({**self.last_eval, "images": self.step * images_per_step, "cpu_hours": hours})
                bar.write(f"step {self.step}: eval bits/dim {self.last_eval['eval_bpd']:.4f}")
                if self._record_eval():
                    bar.write(f"step {self.step}: no better eval in {t.patience} evals since step "
                              f"{self.best['step']} ({self.best['eval_bpd']:.4f}): stopping early")
                    done = True
            if t.sample_every and (self.step % t.sample_every == 0 or done):
                self.write_samples()
            if self.step % t.checkpoint_every == 0 or done:
                self.save()
                if acc.is_main_process:
                    self.export()
                acc.wait_for_everyone()
            if done:
                break
        bar.close()
        acc.end_training()
        return self.last_eval


@dataclass
class _Plan:
    """What a resume must change in the run directory once every check has passed."""

    step: int
    unusable: list[tuple[Path, str]]  # newer checkpoints that could not be read, with why
    changes: dict[str, list]  # resumable settings that differ from the run's: {key: [old, new]}


def _optimizer_mismatch(optimizer: torch.optim.Optimizer, state: dict) -> str | None:
    """What keeps an optimizer ``state_dict`` from fitting ``optimizer`` (groups, parameter count,
    per-parameter tensor shapes), in a few words; None if it fits."""
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        return "the optimizer state has another number of parameter groups"
    for saved, fresh in zip(groups, optimizer.param_groups, strict=True):
        # Settings the config fixes for the whole run (lr is set every step): the state must agree.
        for key in fresh.keys() & saved.keys() & {"betas", "eps", "weight_decay", "amsgrad", "maximize"}:
            if _json(saved[key]) != _json(fresh[key]):
                return f"the optimizer state has {key} {short(saved[key])}, the config {short(fresh[key])}"
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if sum(len(g.get("params", ())) for g in groups if isinstance(g, dict)) != len(params):
        return "the optimizer state is for another number of parameters"
    per_param = state.get("state")
    if not isinstance(per_param, dict):
        return "the optimizer state has no per-parameter state"
    for index, values in per_param.items():
        if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(values, dict)):
            return f"the optimizer state names a parameter {index!r} that does not exist"
        for name, v in values.items():
            if isinstance(v, torch.Tensor) and v.ndim and v.shape != params[index].shape:
                expected = tuple(params[index].shape)
                return f"optimizer {name} of parameter {index} is {tuple(v.shape)}, not {expected}"
            if isinstance(v, torch.Tensor) and not (v.is_floating_point() and v.numel()):
                return f"optimizer {name} of parameter {index} holds {v.numel()} {v.dtype} values, not floats"
    return None


def _json(value):
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a record."""
    return json.loads(json.dumps(value))


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
