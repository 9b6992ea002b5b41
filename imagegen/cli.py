"""The ``imagegen`` command: thin wrappers that parse, call the library and print.

Every failure prints one ``error:`` line and exits non-zero (``imagegen.reporting``: 2 for bad
input, 1 otherwise, 130 when interrupted, 143 when terminated); outputs are checked before any work
is done, and never overwrite an input.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click

from .errors import ImagegenError
from .options import SEED, TEMPERATURE, Number, check_device
from .reporting import OneLineGroup
from .reporting import friendly as _friendly


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imagegen")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
def main(debug):
    """Autoregressive image models: train, sample, complete, upscale, evaluate bits/dim.

    Mistakes print one `error:` line: exit code 2 for bad input, 1 for other failures, 130 when
    interrupted (Ctrl-C), 143 when terminated (SIGTERM).
    """


NUM = click.IntRange(1, 10_000)
PRECISION = click.option(
    "--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
    help="Weights' precision while sampling. bf16 speeds up matrix-heavy models (the Image Transformer; "
         "timings in docs/benchmarks.md) and draws from a very slightly different distribution; small "
         "convolutional models gain nothing on CPU.")


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def _load(checkpoint: str | None, device: str, precision: str = "fp32"):
    """The checkpoint's model on ``device`` (checked first); a checkpoint whose weights hold NaN or
    inf is refused: everything it would sample or score is garbage."""
    import torch

    from . import checkpoint as ckpt

    device = check_device(device)
    model = ckpt.load(checkpoint, device=device, dtype=_dtype(precision))
    broken = [name for name, t in model.state_dict().items()
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise ImagegenError(f"checkpoint {checkpoint or ckpt.DEFAULT}: {len(broken)} weight tensor(s) hold "
                            f"NaN or inf ({broken[0]}...): the run that wrote it diverged; use another "
                            "--checkpoint")
    return model


# --- generation as it happens (--animate) and `imagegen explain` (imagegen.explain) ------------------

ANIMATE = [
    click.option("--animate", type=click.Path(dir_okay=False, path_type=Path),
                 help="Also write the generation as it happens, an animated .gif (or .png, .webp): a frame "
                      "every --frame-every sub-pixels; the last frame equals --out."),
    click.option("--frame-every", type=click.IntRange(min=1),
                 help="Sub-pixels generated per frame of --animate (default: one image row)."),
]


def _animated(fn):
    for option in reversed(ANIMATE):
        fn = option(fn)
    return fn


def _check_animate(animate: Path | None, out: Path, inputs: list[Path] = (), files: list[list[Path]] = ()
                   ) -> None:
    """Check the ``--animate`` file before any work: an animation format, writable, a name the file system
    takes, not ``--out``, an input or one of the ``--out-dir`` ``files``."""
    from .explain.animate import check_animation_file
    from .outputs import check_name

    if animate is not None:
        check_name(animate, "--animate")
        check_animation_file(animate, "--animate")
        if animate.resolve() == out.resolve():
            raise ImagegenError(f"--animate {animate} is also --out: give the animation another name")
        _not_an_input(animate, "--animate", inputs)
        if any(animate.resolve() == f.resolve() for row in files for f in row):
            raise ImagegenError(f"--animate {animate} is also the name of a sample in --out-dir: give the "
                                "animation another name")


def _not_an_input(out: Path, option: str, inputs: list[Path]) -> None:
    """``ImagegenError`` if writing ``out`` would replace one of the ``inputs``."""
    if any(out.resolve() == p.resolve() for p in inputs if p is not None):
        raise ImagegenError(f"{option} {out} is one of the input images: choose another {option}")


def _film(animate: Path | None, model, rows: int, cols: int, nrow: int | None = None):
    """The ``Animation`` of a ``rows x cols`` grid (``nrow`` images a line) when animating, else None."""
    from .explain import Animation

    return Animation(rows, cols, model.shape, model.levels, nrow) if animate else None


def _painting(film, model, row: int, every: int | None, before=None):
    """While sampling for grid row ``row`` (after the images ``before (n, C, H, W)``), add frames."""
    import contextlib

    if film is None:
        return contextlib.nullcontext()
    if before is not None:
        film.set(row, before)
    return film.painting(model, row, 0 if before is None else len(before), every)


def _save_film(film, animate: Path | None) -> None:
    if film is not None:
        film.save(animate)
        click.echo(f"wrote {animate}: {len(film.frames)} frames")


class Pixel(click.ParamType):
    """``ROW,COL[,CHANNEL]`` -> ``(channel, row, col)`` (channel 0 when not given)."""

    name = "ROW,COL[,CHANNEL]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        if len(parts) not in (2, 3) or not all(p.strip().lstrip("-").isdigit() for p in parts):
            self.fail(f"{value!r} is not ROW,COL or ROW,COL,CHANNEL (whole numbers, e.g. 14,10)", param, ctx)
        row, col, channel = (int(p) for p in parts + ["0"] * (3 - len(parts)))
        return channel, row, col


def _explain_inputs(model, paths, resize: bool, label: int | None, device: str):
    """The images ``(N, C, H, W)`` of ``paths`` at the model's size and their ``cond``."""
    import torch

    if model.num_classes and label is None:
        raise ImagegenError("this model is class-conditional: pass the --label of the image")
    images = torch.stack([_model_sized(model, path, resize) for path in paths])
    return images, model.condition(images.to(device), _labels(model, label, len(images), device))


def _pixel_in(model, pixel) -> None:
    from .explain.common import flat_index

    try:
        flat_index(model.shape, pixel)
    except ValueError as e:
        raise ImagegenError(f"--pixel: {e}") from None


def _start_picture(out: Path, inputs: list[Path]) -> None:
    """Check ``--out`` (writable, not one of the ``inputs``) and that matplotlib is there, before any
    work."""
    from .explain import plotting
    from .outputs import check_output_file

    check_output_file(out, "--out")
    _not_an_input(out, "--out", inputs)
    plotting.pyplot()


def _title(checkpoint: str | None, model) -> str:
    from . import checkpoint as ckpt

    return f"{Path(checkpoint or ckpt.DEFAULT).name} ({model.config.get('name', type(model).__name__)})"


IMAGE_FILE = click.Path(dir_okay=False, path_type=Path)
PICTURE_HELP = "Its extension picks the format: .png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp."
CHECKPOINT = click.option("--checkpoint", "-c",
                          help="Checkpoint directory or shipped name (default: the shipped one).")
LABEL = click.option("--label", "-l", type=int, help="Class label (class-conditional models).")
RESIZE = click.option("--resize", is_flag=True, help="Resize the image(s) to the model's size.")
DEVICE = click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda.")


@main.group()
def explain():
    """See inside a model: which pixels surprise it (nll), where a transformer looks (attention), and
    what each sub-pixel depends on (receptive-field). Pictures need `pip install "imagegen[viz]"`."""


@explain.command("nll")
@click.option("--image", "-i", required=True, type=IMAGE_FILE, help="Image to score (PNG, JPEG, ...).")
@CHECKPOINT
@LABEL
@RESIZE
@click.option("--out", "-o", type=IMAGE_FILE, help="Picture to write (default nll.png; with --json only if "
              "given). " + PICTURE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the bits of every sub-pixel as JSON on stdout.")
@DEVICE
@_friendly
def explain_nll(image, checkpoint, label, resize, out, as_json, device):
    """The bits (-log2 p given everything before it) of every sub-pixel of an image: a heat map beside
    the image, its bits/dim in the title."""
    import json

    from .explain.nll import nll_map, plot_nll

    out = out or (None if as_json else Path("nll.png"))
    if out:
        _start_picture(out, [image])
    model = _load(checkpoint, device)
    images, cond = _explain_inputs(model, [image], resize, label, device)
    bits = nll_map(model, images[0], cond)
    summary = f"{float(bits.mean()):.4f} bits/dim, {float(bits.sum()):.1f} bits in all"
    if as_json:
        click.echo(json.dumps({"image": str(image), "checkpoint": _title(checkpoint, model),
                               "shape": list(bits.shape), "bits_per_dim": float(bits.mean()),
                               "total_bits": float(bits.sum()),
                               "bits": bits.round(decimals=6).tolist()}))  # [channel][row][col]
    if out:
        plot_nll(images[0], bits, model.levels, out, f"{_title(checkpoint, model)} on {image.name}")
        click.echo(f"wrote {out}: {summary}", err=as_json)


@explain.command("attention")
@click.option("--image", "-i", required=True, type=IMAGE_FILE, help="Image the model reads.")
@click.option("--pixel", "-p", required=True, type=Pixel(), help="The query sub-pixel: ROW,COL[,CHANNEL].")
@CHECKPOINT
@click.option("--layer", default="all", show_default=True, help="Layer number (from 0), or all.")
@click.option("--head", default="mean", show_default=True,
              help="Head number (from 0), mean (of the heads), or all (one row of panels per head).")
@LABEL
@RESIZE
@click.option("--out", "-o", default="attention.png", show_default=True, type=IMAGE_FILE, help=PICTURE_HELP)
@DEVICE
@_friendly
def explain_attention(image, pixel, checkpoint, layer, head, label, resize, out, device):
    """The self-attention weights of one sub-pixel over its memory, one panel per layer, drawn over the
    image; the query block and its memory outlined (Image Transformer checkpoints)."""
    from . import checkpoint as ckpt
    from .explain.attention import attention_map, is_local_transformer, plot_attention

    _start_picture(out, [image])
    model = _load(checkpoint, device)
    if not is_local_transformer(model):
        names = [n for n in ckpt.shipped() if ckpt.read_info(n)["model"]["name"].startswith("transformer")]
        raise ImagegenError(f"{_title(checkpoint, model)} has no attention: pass the --checkpoint of an "
                            f"Image Transformer (shipped: {', '.join(names) or 'none'}), or use `imagegen "
                            "explain receptive-field`")
    _pixel_in(model, pixel)
    layers, heads = len(model.blocks), model.blocks[0].attn.heads
    choices = {"layer": (layer, layers, ["all"]), "head": (head, heads, ["mean", "all"])}
    for option, (value, count, words) in choices.items():
        if value not in words and not (value.isdigit() and int(value) < count):
            raise ImagegenError(f"--{option} {value}: choose {', '.join(words)} or 0..{count - 1}")
    images, cond = _explain_inputs(model, [image], resize, label, device)
    amap = attention_map(model, images[0], pixel, cond)
    shown = list(range(layers)) if layer == "all" else [int(layer)]
    plot_attention(amap, images[0], model.levels, out, f"{_title(checkpoint, model)} on {image.name}", shown,
                   head)
    click.echo(f"wrote {out}: attention of row {pixel[1]}, column {pixel[2]}, channel {pixel[0]} in "
               f"{len(shown)} layer(s)")


@explain.command("receptive-field")
@click.option("--pixel", "-p", required=True, type=Pixel(), help="The sub-pixel: ROW,COL[,CHANNEL].")
@click.option("--image", "-i", "images", multiple=True, type=IMAGE_FILE,
              help="Image to average over (repeatable; default: --num samples of the model).")
@CHECKPOINT
@click.option("--num", "-n", default=4, show_default=True, type=click.IntRange(1, 1000),
              help="Samples to average over when no --image is given.")
@click.option("--seed", "-s", default=0, show_default=True, type=SEED, help="Seed of those samples.")
@LABEL
@RESIZE
@click.option("--out", "-o", default="receptive_field.png", show_default=True, type=IMAGE_FILE,
              help=PICTURE_HELP)
@DEVICE
@_friendly
def explain_receptive_field(pixel, images, checkpoint, num, seed, label, resize, out, device):
    """How strongly one sub-pixel's log-likelihood depends on every input sub-pixel (gradient
    magnitude, averaged over images); the sub-pixel and its future in generation order hatched."""
    import copy

    from .explain.receptive_field import future, plot_receptive_field, receptive_field
    from .sampling import sample as draw

    _start_picture(out, list(images))
    model = _load(checkpoint, device)
    _pixel_in(model, pixel)
    if images:
        x, cond = _explain_inputs(model, list(images), resize, label, device)
    elif model.upscale_factor:
        raise ImagegenError("a super-resolution model needs the images to average over: pass --image")
    else:
        cond = _labels(model, label, num, device)
        # A copy samples: sample() runs in inference mode, and caches a model fills there (the
        # transformer's layout) cannot take part in the gradients taken next.
        x = draw(copy.deepcopy(model), num, seed=seed, cond=cond)
    field = receptive_field(model, x, pixel, cond)
    later = future(model, tuple(x.shape[1:]), pixel)
    source = f"{len(images)} image(s)" if images else f"{num} samples of the model (seed {seed})"
    c, i, j = pixel
    plot_receptive_field(field, later, pixel, out, f"{_title(checkpoint, model)}: row {i}, column {j}"
                         + (f", channel {c}" if model.channels > 1 else ""), source)
    click.echo(f"wrote {out}: receptive field of row {i}, column {j}, channel {c}, mean over {source}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set train.lr=3e-4 (repeatable).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --output-dir from its last checkpoint.")
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Train to this many optimiser steps (with train.segments: the last segment's length).")
@click.option("--data", "data_path", help="Dataset file or folder (overrides data.path; without either: "
              "$IMAGEGEN_DATA/<dataset>, by default ~/.cache/imagegen/<dataset>).")
@click.option("--download", is_flag=True, help="Download the dataset if it is missing (MNIST, CIFAR-10).")
@_friendly
def train(config, overrides, output_dir, resume, max_steps, data_path, download):
    """Train the model described by CONFIG (YAML). Runs on CPU or one GPU as it is, on many GPUs or
    nodes under `accelerate launch -m imagegen.cli train ...`."""
    from .config import load_config
    from .outputs import check_output_dir

    overrides = list(overrides)
    if data_path:  # a path, not YAML: a folder named 2024, null or true stays a string
        overrides.append(f"data.path={json.dumps(data_path)}")
    if download:
        overrides.append("data.download=true")
    cfg = load_config(config, overrides)
    if max_steps:
        cfg.train = cfg.train.with_last_step(max_steps)
    run_dir = output_dir or Path("runs") / config.stem
    check_output_dir(run_dir, "--output-dir")

    from .training import Trainer

    trainer = Trainer(cfg, run_dir, resume=resume)
    if trainer.accelerator.is_main_process:
        n = sum(p.numel() for p in trainer.raw_model.parameters())
        click.echo(f"{cfg.model['name']}: {n / 1e6:.2f}M parameters; run directory {run_dir}"
                   + (f"; resuming at step {trainer.step}" if trainer.step else ""))
    result = trainer.fit()
    if trainer.accelerator.is_main_process and result:
        click.echo(f"done: step {result['step']}, eval bits/dim {result['eval_bpd']:.4f}; "
                   f"model exported to {run_dir / 'model'}")


OUT_HELP = "Output image; its extension picks the format: .png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp."


@main.command()
@click.option("--checkpoint", "-c", help="Checkpoint directory or shipped name (default: the shipped one).")
@click.option("--num", "-n", default=16, show_default=True, type=NUM)
@click.option("--temperature", "-t", default=1.0, show_default=True, type=TEMPERATURE,
              help="Divides the logits; 0 takes the most likely value.")
@click.option("--seed", "-s", type=SEED, help="Seed for reproducible samples.")
@click.option("--label", "-l", type=int, help="Class label (class-conditional models; default: cycle 0..).")
@click.option("--out", "-o", default="samples.png", show_default=True, help=OUT_HELP,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--decoder", type=click.Choice(["cached", "reference"]), default="cached", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda.")
@PRECISION
@_animated
@_friendly
def sample(checkpoint, num, temperature, seed, label, out, decoder, device, precision, animate, frame_every):
    """Sample NUM images into an image grid."""
    from tqdm.auto import tqdm

    from .imageio import save_grid
    from .outputs import check_output_file
    from .sampling import sample as draw

    check_output_file(out, "--out")
    _check_animate(animate, out)
    start = time.perf_counter()
    model = _load(checkpoint, device, precision)
    if model.upscale_factor:
        raise ImagegenError("this is a super-resolution checkpoint: use `imagegen upscale --image SMALL.png`")
    cond = _labels(model, label, num, device)
    film = _film(animate, model, 1, num)
    with tqdm(total=num * math.prod(model.shape), unit="sub-px", desc="sample", disable=None,
              leave=False) as bar, _painting(film, model, 0, frame_every):
        images = draw(model, num, temperature=temperature, seed=seed, cond=cond, decoder=decoder,
                      progress=lambda t, total: bar.update(1))
    save_grid(images.cpu(), out, levels=model.levels)
    click.echo(f"wrote {out}: {num} samples in {time.perf_counter() - start:.1f} s")
    _save_film(film, animate)


def _labels(model, label: int | None, num: int, device: str):
    """The class labels ``(num,)`` for a class-conditional model (``label`` or 0, 1, ...), else None."""
    import torch

    if label is not None and not model.num_classes:
        raise ImagegenError("--label needs a class-conditional checkpoint; this one is unconditional")
    if model.num_classes:
        if label is not None and not 0 <= label < model.num_classes:
            raise ImagegenError(f"--label {label} is out of range: this model has classes "
                                f"0..{model.num_classes - 1}")
        cond = torch.full((num,), label) if label is not None else torch.arange(num) % model.num_classes
        return cond.to(device)
    return None


@main.command("eval")
@click.option("--checkpoint", "-c", help="Checkpoint directory or shipped name (default: the shipped one).")
@click.option("--data", "data_path", help="Dataset file or folder (default: $IMAGEGEN_DATA/<dataset>, by "
              "default ~/.cache/imagegen/<dataset>).")
@click.option("--dataset", help="Dataset name (default: the one the checkpoint was trained on).")
@click.option("--download", is_flag=True, help="Download the dataset if it is missing (MNIST, CIFAR-10).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True,
              help="val to compare and choose models; test once per final model, for a results table.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--device", default="cpu", show_default=True)
@click.option("--sr-samples", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Super-resolution checkpoints: upscale this many images for PSNR/SSIM/consistency.")
@click.option("--temperature", "-t", default=1.0, show_default=True, type=TEMPERATURE,
              help="Sampling temperature for the super-resolution metrics.")
@click.option("--seed", "-s", default=0, show_default=True, type=SEED)
@_friendly
def evaluate(checkpoint, data_path, dataset, download, split, limit, batch_size, device, sr_samples,
             temperature, seed):
    """Print the exact bits/dim of a checkpoint on a dataset split; for a super-resolution
    checkpoint, the conditional bits/dim and the PSNR, SSIM and consistency of its upscalings."""
    from tqdm.auto import tqdm

    from . import checkpoint as ckpt
    from .data import dataset as dataset_entry
    from .data import default_root, load_dataset
    from .metrics import bits_per_dim, superres_metrics

    info = ckpt.read_info(checkpoint)
    model = _load(checkpoint, device)
    name = dataset or info.get("dataset")
    if not name:
        raise ImagegenError("the checkpoint does not record its dataset: pass --dataset")
    entry = dataset_entry(name, data_path)
    # Image files (a folder, CelebA) are cropped and resized to the model's size and channels.
    sized = dict(image_size=model.image_size[0], channels=model.channels) if entry.any_size else {}
    data = load_dataset(name, data_path, split, binarize=info.get("binarize"), val_size=info.get("val_size"),
                        download=download, **sized)
    data_path = data_path or default_root(entry.name)
    if data.images.shape[1:] != model.shape:
        raise ImagegenError(f"{data_path} holds {tuple(data.images.shape[1:])} images but the model "
                            f"expects {model.shape}")
    images = data.images[:limit] if limit else data.images
    if len(images) == 0:
        raise ImagegenError(f"the {split} split of {data_path} has no images: choose another --split")
    if int(images.max()) >= model.levels:
        raise ImagegenError(f"{data_path} has values up to {int(images.max())} but the model has "
                            f"{model.levels} levels: pass the --dataset it was trained on")
    labels = None if data.labels is None else data.labels[: len(images)]
    if model.num_classes:
        if labels is None:
            raise ImagegenError(f"this model is class-conditional but {data_path} has no labels")
        if int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
            raise ImagegenError(f"{data_path} has labels {int(labels.min())}..{int(labels.max())} but the "
                                f"model knows classes 0..{model.num_classes - 1}: pass the --dataset it was "
                                "trained on")
    cond = model.condition(images, labels)
    bar = lambda desc: lambda r: tqdm(r, desc=desc, unit="batch", disable=None, leave=False)  # noqa: E731
    bpd = bits_per_dim(model, images, cond, batch_size=batch_size, progress=bar("eval"))
    what = ("conditional bits/dim" if model.upscale_factor
            else "class-conditional bits/dim" if model.num_classes else "bits/dim")
    click.echo(f"{what} {bpd:.4f}  ({name} {split}, {len(images)} images)")
    if model.upscale_factor and sr_samples:
        scores = superres_metrics(model, images[:sr_samples], temperature=temperature, seed=seed,
                                  batch_size=batch_size, progress=bar("upscale"))
        click.echo(f"PSNR {scores['psnr']:.2f} dB  SSIM {scores['ssim']:.4f}  consistency "
                   f"{scores['consistency']:.2f} grey levels  (one sample per image at T={temperature:g}, "
                   f"first {min(sr_samples, len(images))} images)")


def _model_sized(model, path, resize: bool, what: str = "image", low: bool = False):
    """A user's image file as the model's values ``(C, H, W)`` (its input size, or with ``low`` the
    low-resolution size of a super-resolution model)."""
    from .imageio import from_uint8, read_image

    size = model.lowres_size if low else model.image_size
    return from_uint8(read_image(path, model.channels, size, resize, what), model.levels)


def _outputs(out: Path, out_dir: Path | None, images: list[Path], num: int,
             mask: Path | None = None) -> list[list[Path]]:
    """Check ``--out`` and ``--out-dir`` before any work (neither may overwrite an input); returns the
    per-input sample files ``out_dir/<stem>_<k>.png`` (stems made unique: ``x``, ``x-2``, ...), or
    empty lists."""
    from .outputs import check_name, check_output_dir, check_output_file, unique_stems

    inputs = {p.resolve(): p for p in [*images, *([mask] if mask else [])]}
    check_output_file(out, "--out")
    _not_an_input(out, "--out", list(inputs.values()))
    if out_dir is None:
        return [[] for _ in images]
    check_output_dir(out_dir, "--out-dir")
    files = [[out_dir / f"{stem}_{k}.png" for k in range(num)] for stem in unique_stems(images)]
    for row in files:
        check_name(row[-1], "--out-dir")  # the longest name of the row
        for f in row:
            if f.resolve() == out.resolve():
                raise ImagegenError(f"--out {out} is also the name of a sample in --out-dir {out_dir}: "
                                    "choose another --out")
            if f.resolve() in inputs:
                raise ImagegenError(f"--out-dir {out_dir} would overwrite the input {inputs[f.resolve()]} "
                                    f"with the sample {f.name}: choose another --out-dir")
    return files


def _write_rows(rows: list, out: Path, files: list[list[Path]], levels: int, first: int):
    """One grid row per input (``rows[k]`` is ``(N, C, H, W)``) into ``out``; also each generated
    image (row entries from ``first`` on) into its file of ``files[k]``, if any."""
    import torch

    from .imageio import save_grid, save_image, to_uint8

    for row, names in zip(rows, files, strict=True):
        for image, name in zip(row[first:], names, strict=False):
            save_image(to_uint8(image, levels), name)
    save_grid(torch.cat(rows).cpu(), out, levels=levels, nrow=len(rows[0]))


_COMMON = [
    click.option("--checkpoint", "-c", help="Checkpoint directory or shipped name."),
    click.option("--num", "-n", default=4, show_default=True, type=NUM, help="Samples per input image."),
    click.option("--temperature", "-t", default=1.0, show_default=True, type=TEMPERATURE,
                 help="Divides the logits; 0 takes the most likely value."),
    click.option("--seed", "-s", type=SEED, help="Seed for reproducible samples."),
    click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Also write every sample as its own PNG, DIR/<image stem>_<k>.png (inputs with the "
                      "same stem get <stem>-2, <stem>-3, ...)."),
    click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda."),
    PRECISION,
]


def _common(fn):
    for option in reversed(_COMMON):
        fn = option(fn)
    return fn


def _seed(seed: int | None, k: int) -> int | None:
    """The seed of input number ``k``: ``seed + k``, wrapped to 64 bits."""
    return None if seed is None else (seed + k) % 2**64


@main.command()
@click.option("--image", "-i", "images", multiple=True, required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Image to complete (repeatable).")
@click.option("--keep-rows", type=click.IntRange(min=0), help="Keep the top N rows.")
@click.option("--keep-fraction", type=Number(0, 1),
              help="Keep the first fraction F of the image in the model's generation order.")
@click.option("--mask", type=click.Path(dir_okay=False, path_type=Path),
              help="Image of the model's size: white (>127) pixels are kept, black ones generated.")
@click.option("--label", "-l", type=int, help="Class label (class-conditional models).")
@click.option("--resize", is_flag=True, help="Resize input images and the mask to the model's size.")
@click.option("--out", "-o", default="completions.png", show_default=True, help=OUT_HELP,
              type=click.Path(dir_okay=False, path_type=Path))
@_common
@_animated
@_friendly
def complete(images, keep_rows, keep_fraction, mask, label, resize, out, checkpoint, num, temperature, seed,
             out_dir, device, precision, animate, frame_every):
    """Complete partial images: keep part of each --image and sample the rest NUM times.

    Writes one row per image: the original, the kept part (the rest grey) and NUM completions.
    Kept pixels that come before every generated one in the model's order (--keep-rows and
    --keep-fraction) are conditioned on exactly; other kept pixels of a --mask are held fixed
    (clamped) but the pixels generated before them did not see them.
    """
    if sum(x is not None for x in (keep_rows, keep_fraction, mask)) != 1:
        raise ImagegenError("say what to keep with exactly one of --keep-rows N, --keep-fraction F, "
                            "--mask FILE")
    files = _outputs(out, out_dir, list(images), num, mask)
    _check_animate(animate, out, [*images, mask], files)

    import torch
    from tqdm.auto import tqdm

    from . import completion
    from .imageio import from_uint8, read_image

    start = time.perf_counter()
    model = _load(checkpoint, device, precision)
    if model.upscale_factor:
        raise ImagegenError("this is a super-resolution checkpoint: use `imagegen upscale`, or pass a "
                            "--checkpoint of an unconditional model to complete")
    shape = model.shape
    if keep_rows is not None:
        if keep_rows > shape[1]:
            raise ImagegenError(f"--keep-rows {keep_rows} is more than the model's {shape[1]} rows")
        keep = completion.keep_rows(shape, keep_rows)
    elif keep_fraction is not None:
        keep = completion.keep_fraction(model, shape, keep_fraction)
    else:
        grey = read_image(mask, 1, model.image_size, resize, what="mask")
        keep = (grey[0] > 127).expand(shape).clone()
    inputs = [_model_sized(model, path, resize) for path in images]  # read all before sampling
    cond = _labels(model, label, num, device)
    clamped = completion.clamped(model, keep)
    if clamped:
        click.echo(f"note: {clamped} kept sub-pixels come after generated ones in the model's order; "
                   "they are held fixed, not conditioned on", err=True)
    rows = []
    total = len(inputs) * num * keep.numel()
    film = _film(animate, model, len(inputs), num + 2, nrow=num + 2)
    with tqdm(total=total, unit="sub-px", desc="complete", disable=None, leave=False) as bar:
        for k, image in enumerate(inputs):
            shown = torch.where(keep, image, from_uint8(torch.tensor(128), model.levels))
            with _painting(film, model, k, frame_every, before=torch.stack([image, shown])):
                drawn = completion.complete(model, image, keep, num, temperature=temperature,
                                            seed=_seed(seed, k), cond=cond,
                                            progress=lambda t, n: bar.update(1))
            rows.append(torch.cat([image[None], shown[None], drawn.long().cpu()]))
    _write_rows(rows, out, files, model.levels, first=2)
    click.echo(f"wrote {out}: {num} completions of {len(inputs)} image(s) in "
               f"{time.perf_counter() - start:.1f} s")
    _save_film(film, animate)


@main.command()
@click.option("--image", "-i", "images", multiple=True, required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Small image to upscale (repeatable).")
@click.option("--resize", is_flag=True, help="Resize input images to the model's low-resolution size.")
@click.option("--out", "-o", default="upscaled.png", show_default=True, help=OUT_HELP,
              type=click.Path(dir_okay=False, path_type=Path))
@_common
@_animated
@_friendly
def upscale(images, resize, out, checkpoint, num, temperature, seed, out_dir, device, precision, animate,
            frame_every):
    """Upscale small images with a super-resolution checkpoint (default: the shipped MNIST
    7x7 -> 28x28 upscaler).

    Writes one row per image: the input (enlarged with nearest neighbours) and NUM samples.
    """
    files = _outputs(out, out_dir, list(images), num)
    _check_animate(animate, out, list(images), files)

    import torch
    from tqdm.auto import tqdm

    from . import checkpoint as ckpt
    from .imageio import nearest_upsample
    from .sampling import sample as draw

    start = time.perf_counter()
    model = _load(checkpoint or ckpt.DEFAULT_UPSCALER, device, precision)
    if not model.upscale_factor:
        raise ImagegenError("this checkpoint is not a super-resolution model: pass --checkpoint of one "
                            f"(shipped: {ckpt.DEFAULT_UPSCALER})")
    inputs = [_model_sized(model, path, resize, low=True) for path in images]
    rows = []
    film = _film(animate, model, len(inputs), num + 1, nrow=num + 1)
    total = len(inputs) * num * math.prod(model.shape)
    with tqdm(total=total, unit="sub-px", desc="upscale", disable=None, leave=False) as bar:
        for k, low in enumerate(inputs):
            cond = low[None].expand(num, -1, -1, -1).to(device)
            big = nearest_upsample(low[None], model.upscale_factor)
            with _painting(film, model, k, frame_every, before=big):
                drawn = draw(model, num, temperature=temperature, seed=_seed(seed, k), cond=cond,
                             progress=lambda t, n: bar.update(1))
            rows.append(torch.cat([big, drawn.long().cpu()]))
    _write_rows(rows, out, files, model.levels, first=1)
    click.echo(f"wrote {out}: {num} upscalings of {len(inputs)} image(s) in "
               f"{time.perf_counter() - start:.1f} s")
    _save_film(film, animate)


@main.command("models")
@_friendly
def list_models():
    """List model names and shipped checkpoints."""
    from . import checkpoint as ckpt
    from .models import available_models

    click.echo("models: " + ", ".join(available_models()))
    click.echo("shipped checkpoints: " + (", ".join(ckpt.shipped()) or "none"))


# --- imagegen serve: the web page (imagegen.serve; needs the web extra) ----------------------------------

@main.command()
@click.option("--checkpoint", "-c", "checkpoints", multiple=True,
              help="Checkpoint directory or shipped name to offer (repeatable; default: every shipped one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any other than 127.0.0.1/localhost lets everyone who can reach it "
                   "use the page (and your CPU).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free one).")
@click.option("--max-images", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="Images one request may sample, complete or upscale.")
@click.option("--max-upload-mb", default=2.0, show_default=True, type=Number(0.001, 1024),
              help="Largest image file an upload may be.")
@click.option("--queue", "queue_length", default=8, show_default=True, type=click.IntRange(0, 10_000),
              help="Requests that may wait for a worker; more are refused (503, try again).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Requests worked on at once (requests on one checkpoint still take turns).")
@DEVICE
@_friendly
def serve(checkpoints, host, port, max_images, max_upload_mb, queue_length, workers, device):
    """A local web page to sample, complete, upscale and explain, each image shown as it is written,
    with a Stop button. Needs `pip install "imagegen[web]"`."""
    from . import serve as web

    web.require()
    from .serve.app import create_app
    from .serve.limits import Limits

    limits = Limits(max_images=max_images, max_upload_bytes=int(max_upload_mb * 2**20),
                    queue_length=queue_length, workers=workers)
    sock = web.listen(host, port)
    app = create_app(list(checkpoints) or None, device=device, limits=limits, host=host)
    served = ", ".join(app.state.server.catalog.served)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {served} on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"note: listening on {host}: anyone who can reach it can use the page", err=True)
    web.run(app, sock)


if __name__ == "__main__":
    main()
