"""Bits/dim of several checkpoints on several datasets, as one markdown table.

    python scripts/eval_bpd.py --checkpoint mnist_gated_pixelcnn --checkpoint runs/a/model \\
        --data mnist=../shared/data/mnist/mnist.npz [--split val] [--limit 1000] [--out table.md]

``--checkpoint`` takes a directory (``model.safetensors`` + ``config.json``) or a shipped name;
``--data NAME=PATH`` a dataset name of ``imagegen.data.load_dataset`` and its file or folder. Every
checkpoint is evaluated on every dataset of its image shape (channels and size; other cells read
"shape mismatch"), loaded with the binarize mode recorded in the checkpoint's ``config.json``.
Bits/dim is ``imagegen.metrics.bits_per_dim``. Bad input prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import exit_code, markdown_table

from imagegen import checkpoint
from imagegen.data import ImageData, load_dataset
from imagegen.errors import ImagegenError
from imagegen.metrics import bits_per_dim

HEADERS = ["checkpoint", "model", "parameters", "dataset", "split", "images", "bits/dim", "seconds"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", "-c", action="append", required=True,
                   help="checkpoint directory or shipped name; repeat for several")
    p.add_argument("--data", action="append", required=True, metavar="NAME=PATH",
                   help="dataset name and its file or folder, e.g. mnist=data/mnist.npz; repeat for several")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="dataset split (default: %(default)s; test: once per final model, for a table)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of each dataset")
    p.add_argument("--batch-size", type=int, default=100, help="images per forward (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    if (args.limit is not None and args.limit < 1) or args.batch_size < 1:
        p.error("--limit and --batch-size must be >= 1")
    return args


def parse_data(items: list[str]) -> list[tuple[str, str, str]]:
    """``NAME=PATH`` strings -> ``(label, name, path)``; the label adds the path when names repeat."""
    pairs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ImagegenError(f"bad --data {item!r}: write NAME=PATH, e.g. mnist=data/mnist.npz")
        pairs.append((name, path))
    names = [n for n, _ in pairs]
    return [(n if names.count(n) == 1 else f"{n} ({p})", n, p) for n, p in pairs]


def load_all(datasets: list[tuple[str, str, str]], modes: set[str | None], split: str,
             limit: int | None) -> dict[tuple[str, str | None], ImageData]:
    """Every dataset under every binarize mode in ``modes``, cut to its first ``limit`` images:
    ``(label, mode) -> ImageData``. Loaded up front, so that a missing file stops the script before
    any evaluation.
    """
    out = {}
    for label, name, path in datasets:
        for mode in modes:
            data = load_dataset(name, path, split, binarize=mode)
            if limit:
                labels = None if data.labels is None else data.labels[:limit]
                data = ImageData(data.images[:limit], labels, data.levels, data.num_classes)
            out[label, mode] = data
    return out


def evaluate(model: torch.nn.Module, data: ImageData, batch_size: int) -> tuple[str, str]:
    """``(bits/dim cell, seconds cell)`` of ``model`` on ``data``, or a reason it cannot be evaluated."""
    if data.shape != (model.channels, *model.image_size):
        return "shape mismatch", "-"
    if data.levels > model.levels:
        return f"levels mismatch ({data.levels} > {model.levels})", "-"
    if model.num_classes and data.labels is None:
        return "no labels (class-conditional model)", "-"
    cond = model.condition(data.images, data.labels)  # labels, the low-resolution image, or None
    start = time.perf_counter()
    bpd = bits_per_dim(model, data.images, cond, batch_size=batch_size)
    return f"{bpd:.4f}", f"{time.perf_counter() - start:.2f}"


def run(args: argparse.Namespace) -> str:
    """Evaluate every checkpoint on every dataset; returns the markdown table."""
    datasets = parse_data(args.data)
    infos = [checkpoint.read_info(c) for c in args.checkpoint]
    models = [checkpoint.load(c, device=args.device) for c in args.checkpoint]
    data = load_all(datasets, {info.get("binarize") for info in infos}, args.split, args.limit)
    rows = []
    for ckpt, info, model in zip(args.checkpoint, infos, models, strict=True):
        params = f"{sum(p.numel() for p in model.parameters()):,}"
        for label, _, _ in datasets:
            d = data[label, info.get("binarize")]
            bpd, seconds = evaluate(model, d, args.batch_size)
            images = str(len(d)) if seconds != "-" else "-"
            rows.append([ckpt, info["model"]["name"], params, label, args.split, images, bpd, seconds])
    return markdown_table(HEADERS, rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the table; 0 on success, 2 (one ``error:`` line on stderr) for bad input."""
    args = parse_args(argv)

    def work() -> None:
        table = run(args)
        if args.out:
            try:
                Path(args.out).write_text(table + "\n")
            except OSError as e:
                raise ImagegenError(f"cannot write {args.out}: {e.strerror}") from None
        print(table)

    return exit_code(work)

if __name__ == "__main__":
    sys.exit(main())
