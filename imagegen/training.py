"""The trainer: one loop for every model, on HuggingFace accelerate (CPU, one GPU, or many
processes with ``accelerate launch``), unaware of the device it runs on.

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``samples/step_N.png``,
``checkpoints/step_N/`` (full training state, written atomically) and ``model/`` (the EMA
weights exported with ``imagegen.checkpoint.save``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import checkpoint
from .config import Config, save_config
from .data import ImageData, binarize, load_dataset
from .errors import ConfigError, ImagegenError
from .imageio import nearest_upsample, save_grid
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
    if d.binarize not in (None, "threshold", "stochastic"):
        raise ConfigError(f"data.binarize must be null, threshold or stochastic, not {d.binarize!r}")
    if d.train_split == d.eval_split:
        raise ConfigError(f"data.eval_split is {d.eval_split!r}, the split it trains on: evaluate on val")
    kwargs = dict(image_size=d.image_size, download=d.download, val_size=d.val_size)
    # Stochastic binarization is re-drawn for every training batch; eval uses one fixed draw.
    train_binarize = None if d.binarize == "stochastic" else d.binarize
    train = load_dataset(d.name, d.path, d.train_split, binarize=train_binarize, **kwargs)
    if d.train_limit:
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
    shape, data_shape = (model.channels, *model.image_size), tuple(data.images.shape[1:])
    if shape != data_shape:
        raise ConfigError(f"model section: channels and image_size give {shape} images but the data's are "
                          f"{data_shape}: leave them out (they default to the data's)")
    return model


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
    """Trains ``config`` into ``run_dir``; ``fit()`` runs until ``train.max_steps``."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, show_progress: bool = True):
        self.config, self.run_dir = config, Path(run_dir)
        t = config.train
        if t.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision must be no, bf16 or fp16, not {t.mixed_precision!r}")
        lr_factor(0, config)  # validates the schedule name
        trackers = "tensorboard" if _has_tensorboard() else None
        # cpu=True on a machine without an accelerator lets accelerate run several CPU processes
        # (gloo) when started by torchrun; a single process is unaffected.
        no_accelerator = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision,
                                       gradient_accumulation_steps=t.grad_accum, log_with=trackers,
                                       project_dir=str(self.run_dir), cpu=no_accelerator)
        acc = self.accelerator
        existing = self.checkpoints()
        if existing and not resume:
            raise ImagegenError(f"{self.run_dir} already holds a run: pass --resume to continue it, "
                                "or choose another --output-dir")
        set_seed(t.seed)
        self.data = load_data(config)
        batch_indices(len(self.data.train.images), t.batch_size, acc.num_processes, 0, 0, t.seed)  # fits?
        model = make_model(config, self.data.train)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.raw_model = model
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}.get(t.optimizer)
        if opt_cls is None:
            raise ConfigError(f"unknown train.optimizer {t.optimizer!r}: use adamw or adam")
        optimizer = opt_cls(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
        # The scheduler is stepped here once per optimiser step (accelerate's wrapper would step it
        # once per process), so max_steps and warmup count optimiser steps at any process count.
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = scheduler
        acc.register_for_checkpointing(self.scheduler)
        self.ema = None
        if t.ema_decay:
            self.ema = AveragedModel(self.raw_model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay),
                                     use_buffers=True)
            acc.register_for_checkpointing(self.ema)
        self.step = 0
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / "config.yaml")
        if existing:
            self.step = self.load(existing[-1])
        if trackers:
            acc.init_trackers("imagegen")
        self.show_progress = show_progress and acc.is_main_process

    # --- state -----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete training checkpoints of this run, oldest first."""
        root = self.run_dir / "checkpoints"
        return sorted(root.glob("step_*")) if root.is_dir() else []

    def save(self) -> Path:
        """Write the full training state to ``checkpoints/step_N`` atomically; keep the newest few."""
        acc = self.accelerator
        target = self.run_dir / "checkpoints" / f"step_{self.step:08d}"
        tmp = target.with_name(f".{target.name}.tmp")
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "trainer.json").write_text(json.dumps({"step": self.step}))
            tmp.replace(target)
            for old in self.checkpoints()[: -self.config.train.keep_checkpoints]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return target

    def load(self, directory: Path) -> int:
        """Restore the training state from a checkpoint; returns its step."""
        self.accelerator.load_state(str(directory))
        return json.loads((directory / "trainer.json").read_text())["step"]

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

    def export(self, **metadata) -> Path:
        """Write the eval weights as ``run_dir/model`` (safetensors + config.json)."""
        c = self.config
        return checkpoint.save(self.eval_model, self.run_dir / "model", step=self.step,
                               dataset=c.data.name, binarize=c.data.binarize, **metadata)

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

    def train_step(self) -> float:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss (nats)."""
        t, acc = self.config.train, self.accelerator
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
        self.scheduler.step()
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
            return save_grid(shown.cpu(), path, levels=model.levels, nrow=len(truth))
        cond = None
        if model.num_classes:
            cond = torch.arange(t.num_samples, device=device) % model.num_classes
        images = sample(model, t.num_samples, seed=self.step, cond=cond)
        return save_grid(images, path, levels=model.levels)

    def log(self, record: dict) -> None:
        """Append a record to ``metrics.jsonl`` and the trackers (main process)."""
        acc = self.accelerator
        if acc.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        acc.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    # --- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``max_steps``, with eval, samples and checkpoints on schedule; export at the end.
        Returns the last logged eval record."""
        t, acc = self.config.train, self.accelerator
        self.model.train()
        bar = tqdm(total=t.max_steps, initial=self.step, disable=not self.show_progress, dynamic_ncols=True,
                   desc="train")
        images_per_step = t.batch_size * t.grad_accum * acc.num_processes
        last_eval: dict = {}
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        while self.step < t.max_steps:
            window_loss += self.train_step()
            window_steps += 1
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                elapsed = time.perf_counter() - window_start
                loss = window_loss / window_steps
                rec = {"step": self.step, "loss": loss, "bpd": loss / math.log(2),
                       "lr": self.scheduler.get_last_lr()[0],
                       "images_per_s": images_per_step * window_steps / elapsed}
                self.log(rec)
                bar.set_postfix(loss=f"{loss:.4f}", bpd=f"{rec['bpd']:.4f}",
                                img_s=f"{rec['images_per_s']:.0f}")
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            done = self.step == t.max_steps
            if self.step % t.eval_every == 0 or done:
                last_eval = {"step": self.step, "eval_bpd": self.evaluate()}
                self.log(last_eval)
                bar.write(f"step {self.step}: eval bits/dim {last_eval['eval_bpd']:.4f}")
            if t.sample_every and (self.step % t.sample_every == 0 or done):
                self.write_samples()
            if self.step % t.checkpoint_every == 0 or done:
                self.save()
                if acc.is_main_process:
                    d = self.config.data
                    self.export(eval_bpd=last_eval.get("eval_bpd"), eval_split=d.eval_split,
                                val_size=d.val_size)
                acc.wait_for_everyone()
        bar.close()
        acc.end_training()
        return last_eval


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
