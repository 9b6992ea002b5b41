"""The ``imagegen`` command: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click

from .errors import ImagegenError


def _friendly(fn):
    """Turn user-facing errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImagegenError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imagegen")
def main():
    """Autoregressive image models: train, sample, evaluate bits/dim."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set train.lr=3e-4 (repeatable).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --output-dir from its last checkpoint.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Train to this many optimiser steps.")
@click.option("--data", "data_path", help="Dataset file or folder (overrides data.path).")
@_friendly
def train(config, overrides, output_dir, resume, max_steps, data_path):
    """Train the model described by CONFIG (YAML). Runs on CPU or one GPU as it is, on many GPUs or
    nodes under `accelerate launch -m imagegen.cli train ...`."""
    from .config import load_config
    from .training import Trainer

    overrides = list(overrides)
    if max_steps:
        overrides.append(f"train.max_steps={max_steps}")
    if data_path:
        overrides.append(f"data.path={data_path}")
    cfg = load_config(config, overrides)
    run_dir = output_dir or Path("runs") / config.stem
    trainer = Trainer(cfg, run_dir, resume=resume)
    if trainer.accelerator.is_main_process:
        n = sum(p.numel() for p in trainer.raw_model.parameters())
        click.echo(f"{cfg.model['name']}: {n / 1e6:.2f}M parameters; run directory {run_dir}"
                   + (f"; resuming at step {trainer.step}" if trainer.step else ""))
    result = trainer.fit()
    if trainer.accelerator.is_main_process and result:
        click.echo(f"done: step {result['step']}, eval bits/dim {result['eval_bpd']:.4f}; "
                   f"model exported to {run_dir / 'model'}")


@main.command()
@click.option("--checkpoint", "-c", help="Checkpoint directory or shipped name (default: the shipped one).")
@click.option("--num", "-n", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--temperature", "-t", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", "-s", type=int, help="Seed for reproducible samples.")
@click.option("--label", "-l", type=int, help="Class label (class-conditional models; default: cycle 0..).")
@click.option("--out", "-o", default="samples.png", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--decoder", type=click.Choice(["cached", "reference"]), default="cached", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda.")
@_friendly
def sample(checkpoint, num, temperature, seed, label, out, decoder, device):
    """Sample NUM images into a PNG grid."""
    import torch
    from tqdm.auto import tqdm

    from . import checkpoint as ckpt
    from .imageio import save_grid
    from .sampling import sample as draw

    start = time.perf_counter()
    model = ckpt.load(checkpoint, device=device)
    cond = None
    if label is not None and not model.num_classes:
        raise ImagegenError("--label needs a class-conditional checkpoint; this one is unconditional")
    if model.num_classes:
        if label is not None and not 0 <= label < model.num_classes:
            raise ImagegenError(f"--label {label} is out of range: this model has classes "
                                f"0..{model.num_classes - 1}")
        cond = torch.full((num,), label) if label is not None else torch.arange(num) % model.num_classes
        cond = cond.to(device)
    with tqdm(total=num * model.channels * model.image_size[0] * model.image_size[1], unit="sub-px",
              desc="sample", disable=None, leave=False) as bar:
        images = draw(model, num, temperature=temperature, seed=seed, cond=cond, decoder=decoder,
                      progress=lambda t, total: bar.update(1))
    save_grid(images.cpu(), out, levels=model.levels)
    click.echo(f"wrote {out}: {num} samples in {time.perf_counter() - start:.1f} s")


@main.command("eval")
@click.option("--checkpoint", "-c", help="Checkpoint directory or shipped name (default: the shipped one).")
@click.option("--data", "data_path", required=True, help="Dataset file or folder.")
@click.option("--dataset", help="Dataset name (default: the one the checkpoint was trained on).")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True)
@_friendly
def evaluate(checkpoint, data_path, dataset, split, limit, batch_size, device):
    """Print the exact bits/dim of a checkpoint on a dataset split."""
    from tqdm.auto import tqdm

    from . import checkpoint as ckpt
    from .data import load_dataset
    from .metrics import bits_per_dim

    info = ckpt.read_info(checkpoint)
    model = ckpt.load(checkpoint, device=device)
    name = dataset or info.get("dataset")
    if not name:
        raise ImagegenError("the checkpoint does not record its dataset: pass --dataset")
    data = load_dataset(name, data_path, split, binarize=info.get("binarize"))
    if data.images.shape[1:] != (model.channels, *model.image_size):
        raise ImagegenError(f"{data_path} holds {tuple(data.images.shape[1:])} images but the model "
                            f"expects {(model.channels, *model.image_size)}")
    images = data.images[:limit] if limit else data.images
    cond = None
    if model.num_classes:
        if data.labels is None:
            raise ImagegenError(f"this model is class-conditional but {data_path} has no labels")
        cond = data.labels[: len(images)]
    bpd = bits_per_dim(model, images, cond, batch_size=batch_size,
                       progress=lambda r: tqdm(r, desc="eval", unit="batch", disable=None, leave=False))
    click.echo(f"bits/dim {bpd:.4f}  ({name} {split}, {len(images)} images)")


@main.command("models")
def list_models():
    """List model names and shipped checkpoints."""
    from . import checkpoint as ckpt
    from .models import available_models

    click.echo("models: " + ", ".join(available_models()))
    click.echo("shipped checkpoints: " + (", ".join(ckpt.shipped()) or "none"))


if __name__ == "__main__":
    main()
