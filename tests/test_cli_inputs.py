"""The CLI on bad input: numeric options range-checked, output paths checked before any work,
one ``error:`` line whose hints name options the command has, the exit codes 0/1/2/130 and
``--debug``."""

from __future__ import annotations

import errno
import os
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from imagegen import checkpoint, imageio
from imagegen.cli import main
from imagegen.models import build_model
from tests.helpers import tiny_mnist


@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model("gated_pixelcnn", channels=1, image_size=8, hidden=4, num_layers=2, out_hidden=4)
    return checkpoint.save(model, tmp_path / "ckpt", dataset="mnist", val_size=8)


@pytest.fixture()
def digit(tmp_path):
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(tmp_path / "digit.png")
    return tmp_path / "digit.png"


def run(*args, **kwargs):
    result = CliRunner().invoke(main, [str(a) for a in args], **kwargs)
    return result.exit_code, result.stderr, result


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_one_error_line(command: str, stderr: str, says: str) -> None:
    """One ``error:`` line containing ``says``, whose every ``--option`` exists for ``command``."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], stderr
    options = {o for p in main.commands[command].params for o in p.opts}
    for hint in re.findall(r"(?<![\w-])--[a-z][a-z-]*", lines[0]):
        assert hint in options | {"--help", "--debug"}, f"{lines[0]!r} names {hint}, which {command} lacks"


NUMERIC = [
    ("sample", ["--num", "0"], "--num"),
    ("sample", ["--num", "10001"], "--num"),
    ("sample", ["--temperature", "nan"], "--temperature"),
    ("sample", ["--temperature", "inf"], "--temperature"),
    ("sample", ["--temperature", "-1"], "--temperature"),
    ("sample", ["--temperature", "1e-300"], "too small"),
    ("sample", ["--seed", str(2**64)], "--seed"),
    ("sample", ["--seed", "-1"], "--seed"),
    ("sample", ["--label", "3"], "--label"),
    ("complete", ["--keep-fraction", "nan"], "--keep-fraction"),
    ("complete", ["--keep-fraction", "1.5"], "--keep-fraction"),
    ("complete", ["--keep-rows", "-1"], "--keep-rows"),
    ("complete", ["--keep-rows", "9"], "--keep-rows 9 is more than"),
    ("eval", ["--batch-size", "0"], "--batch-size"),
    ("eval", ["--limit", "0"], "--limit"),
    ("eval", ["--seed", str(2**70)], "--seed"),
    ("upscale", ["--temperature", "nan"], "--temperature"),
]


@pytest.mark.parametrize("command, args, says", NUMERIC, ids=[f"{c} {' '.join(a)}" for c, a, _ in NUMERIC])
def test_numeric_options_are_range_checked(command, args, says, ckpt, digit, tmp_path):
    keep = [] if any(a.startswith("--keep") for a in args) else ["--keep-rows", "4"]
    base = {"sample": ["-c", ckpt, "--out", tmp_path / "o.png"],
            "complete": ["-c", ckpt, "-i", digit, *keep, "--out", tmp_path / "o.png"],
            "eval": ["-c", ckpt, "--data", tmp_path / "m.npz"],
            "upscale": ["-i", digit, "--out", tmp_path / "o.png"]}[command]
    before = files(tmp_path)
    code, stderr, _ = run(command, *base, *args)
    assert code == 2
    assert_one_error_line(command, stderr, says)
    assert files(tmp_path) == before


@pytest.mark.parametrize("args, says", [
    (["--out", "x.gif"], "name the image file .png, .jpg"),
    (["--out", "x"], "name the image file"),
    (["--out", "f/x.png"], "is a file, not a directory"),
    (["--out", "/proc/imagegen/x.png"], "cannot write in /proc"),
    (["--out-dir", "f"], "is a file"),
    (["--out-dir", "f/d"], "is a file, not a directory"),
    (["--out-dir", "o", "--out", "o/digit_0.png"], "also the name of a sample in --out-dir"),
    (["--out", "digit.png"], "--out digit.png is one of the input images"),  # would replace the input
    (["--out", "x" * 252 + ".png"], "256 bytes long, more than the 255"),  # found before, not after, work
    (["--mask", "big.png"], "or pass --resize"),
    (["--keep-fraction", "0.5"], "exactly one of"),
    (["--device", "cuda:7"], "--device cpu"),
])
def test_complete_output_paths_and_options(args, says, ckpt, digit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    Image.new("L", (16, 16)).save(tmp_path / "big.png")
    keep = [] if "--mask" in args else ["--keep-rows", "4"]
    before = files(tmp_path)
    code, stderr, _ = run("complete", "-c", ckpt, "-i", "digit.png", "-n", "1", *keep, *args)
    assert code == 2
    assert_one_error_line("complete", stderr, says)
    assert files(tmp_path) == before


def test_mask_of_another_size_is_resized_with_resize(ckpt, digit, tmp_path):
    Image.new("L", (16, 16), 255).save(tmp_path / "big.png")
    code, stderr, _ = run("complete", "-c", ckpt, "-i", digit, "-n", "1", "--mask", tmp_path / "big.png",
                          "--resize", "--out", tmp_path / "c.png")
    assert code == 0, stderr


def test_out_extension_picks_the_format(ckpt, tmp_path):
    code, stderr, _ = run("sample", "-c", ckpt, "-n", "2", "--out", tmp_path / "x.jpg")
    assert code == 0, stderr
    with Image.open(tmp_path / "x.jpg") as im:
        assert im.format == "JPEG"


def test_inputs_with_the_same_name_never_overwrite_each_other(ckpt, digit, tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("L", (8, 8), 200).save(tmp_path / "a" / "digit.png")
    code, stderr, _ = run("complete", "-c", ckpt, "-i", digit, "-i", tmp_path / "a" / "digit.png", "-n", "2",
                          "--keep-rows", "8", "--out-dir", tmp_path / "o", "--out", tmp_path / "c.png")
    assert code == 0, stderr
    assert files(tmp_path / "o") == ["digit-2_0.png", "digit-2_1.png", "digit_0.png", "digit_1.png"]
    # all 8 rows kept: each file is its own input, untouched by the other
    first, second = (np.asarray(Image.open(tmp_path / "o" / n)) for n in ("digit_0.png", "digit-2_0.png"))
    np.testing.assert_array_equal(first, np.asarray(Image.open(digit)))
    assert (second == 200).all()


def test_a_damaged_second_image_writes_nothing(ckpt, digit, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    old = tmp_path / "c.png"
    Image.new("L", (3, 3), 7).save(old)
    before = old.read_bytes()
    code, stderr, _ = run("complete", "-c", ckpt, "-i", digit, "-i", tmp_path / "bad.png", "--keep-rows", "4",
                          "--out", old, "--out-dir", tmp_path / "o")
    assert code == 2
    assert_one_error_line("complete", stderr, "bad.png: cannot read this image")
    assert old.read_bytes() == before and not (tmp_path / "o").exists()


def test_nan_weights_are_refused(ckpt, tmp_path):
    model = checkpoint.load(ckpt)
    with torch.no_grad():
        model.head.bias[0, 0] = float("nan")
    broken = checkpoint.save(model, tmp_path / "broken", dataset="mnist")
    tiny_mnist(tmp_path / "m.npz")
    for command, args in (("sample", ["-o", tmp_path / "s.png"]), ("eval", ["--data", tmp_path / "m.npz"])):
        code, stderr, _ = run(command, "-c", broken, *args)
        assert code == 2
        assert_one_error_line(command, stderr, "hold NaN or inf")
    assert not (tmp_path / "s.png").exists()


def test_eval_of_an_empty_split_is_an_error(tmp_path):
    model = build_model("gated_pixelcnn", channels=1, image_size=8, hidden=4, num_layers=2, out_hidden=4)
    ckpt = checkpoint.save(model, tmp_path / "ckpt", dataset="mnist", val_size=0)
    code, stderr, _ = run("eval", "-c", ckpt, "--data", tiny_mnist(tmp_path / "m.npz"), "--split", "val")
    assert code == 2
    assert_one_error_line("eval", stderr, "has no images: choose another --split")


@pytest.mark.parametrize("override, key", [("train.batch_size=3.5", "train.batch_size"),
                                           ("train.eval_every=0", "train.eval_every"),
                                           ("train.lr=-0.003", "train.lr"),
                                           ("model.kernel_size=4", "kernel_size must be odd"),
                                           ("model.channels=0", "channels must be")])
def test_train_config_errors_are_one_line_before_anything_is_written(override, key, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: gated_pixelcnn, hidden: 4, num_layers: 2}}\n"
                   f"data: {{name: mnist, path: {tiny_mnist(tmp_path / 'm.npz')}}}\n")
    code, stderr, _ = run("train", cfg, "--output-dir", tmp_path / "r", "--set", override)
    assert code == 2
    assert_one_error_line("train", stderr, key)
    assert not (tmp_path / "r").exists()


def test_train_output_dir_is_checked_first(tmp_path):
    (tmp_path / "f").write_text("x")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: gated_pixelcnn}\n")
    code, stderr, _ = run("train", cfg, "--output-dir", tmp_path / "f" / "run")
    assert code == 2
    assert_one_error_line("train", stderr, "--output-dir")


@pytest.mark.parametrize("error, code, says", [
    (OSError(errno.ENOSPC, "No space left on device"), 1, "the disk is full"),
    (RuntimeError("boom"), 1, "unexpected RuntimeError: boom -- a bug in imagegen; rerun with `imagegen"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (MemoryError(), 1, "out of memory (MemoryError): ask for less (a smaller --num)"),
])
def test_exit_codes(error, code, says, ckpt, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(imageio, "save_image", fail)
    got, stderr, _ = run("sample", "-c", ckpt, "-n", "1", "--out", tmp_path / "s.png")
    assert got == code
    assert_one_error_line("sample", stderr, says)


def test_debug_shows_the_traceback(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "save_image", lambda *a, **k: 1 / 0)
    code, stderr, result = run("--debug", "sample", "-c", ckpt, "-n", "1", "--out", tmp_path / "s.png")
    assert code == 1 and isinstance(result.exception, ZeroDivisionError)
    code, stderr, result = run("--debug", "sample", "-c", tmp_path / "nowhere")
    assert code == 1 and "no checkpoint at" in str(result.exception)


def test_usage_errors_are_one_line(ckpt):
    code, stderr, _ = run("sample", "--nmu", "3")
    assert code == 2
    assert stderr.strip().splitlines() == ["error: No such option '--nmu'. (Did you mean one of: '--num', "
                                           "'--out'?) (see `main sample --help`)"]


def test_out_dir_never_overwrites_an_input(ckpt, digit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("L", (8, 8), 9).save(tmp_path / "digit_0.png")  # the name of digit.png's first sample
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, stderr, _ = run("complete", "-c", ckpt, "-i", "digit.png", "-i", "digit_0.png", "--keep-rows", "4",
                          "-n", "1", "--out-dir", ".")
    assert code == 2
    assert_one_error_line("complete", stderr, "--out-dir . would overwrite the input digit_0.png")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_the_longest_names_the_file_system_takes_are_written(ckpt, digit, tmp_path):
    longest = tmp_path / ("x" * 251 + ".png")  # 255 bytes: its temporary must fit too
    code, stderr, _ = run("sample", "-c", ckpt, "-n", "1", "--out", longest)
    assert code == 0, stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    stem = tmp_path / ("y" * 250 + ".png")
    shutil.copy(digit, stem)
    code, stderr, _ = run("complete", "-c", ckpt, "-i", stem, "--keep-rows", "4", "-n", "1",
                          "--out", tmp_path / "c.png", "--out-dir", tmp_path / "o")
    assert code == 2  # y..y_0.png would be 256 bytes
    assert_one_error_line("complete", stderr, "--out-dir: the file name yyyy")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c.png").exists()


def test_data_is_a_path_not_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").mkdir()  # YAML reads 2024 as a number, null as None, true as True
    tiny_mnist(tmp_path / "2024" / "mnist.npz")
    (tmp_path / "c.yaml").write_text("model: {name: gated_pixelcnn, hidden: 4, num_layers: 1}\n"
                                     "data: {name: mnist, val_size: 8}\ntrain: {batch_size: 4}\n")
    code, stderr, _ = run("train", "c.yaml", "--data", "2024", "--max-steps", "1", "--output-dir", "r")
    assert code == 0, stderr
    assert "path: '2024'" in (tmp_path / "r" / "config.yaml").read_text()


def test_a_failed_write_exits_1_naming_the_file(ckpt, tmp_path):
    from tests.hazards import disk_full_after

    out = tmp_path / "s.png"
    with disk_full_after(2000):
        code, stderr, _ = run("sample", "-c", ckpt, "-n", "16", "--out", out)
    assert code == 1
    assert_one_error_line("sample", stderr, f"cannot write {out}: File too large (the disk is full")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


SIGTERM_DURING_WRITE = """
import os, signal, sys
from imagegen import durable
from imagegen.cli import main
durable.fsync = lambda path: os.kill(os.getpid(), signal.SIGTERM)  # the temporary is written, not renamed
main(sys.argv[1:])
"""


def test_sigterm_unwinds_like_ctrl_c(ckpt, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "s.png"
    Image.new("L", (3, 3), 7).save(out)
    before = out.read_bytes()
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", SIGTERM_DURING_WRITE, "sample", "-c", str(ckpt), "-n", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "s.png"]


@pytest.mark.parametrize("command, args", [
    ("complete", ["--keep-rows", "4", "--animate", "digit.png"]),
    ("complete", ["--keep-rows", "4", "--out-dir", "o", "--animate", "o/digit_0.png"]),
    ("explain", ["--out", "digit.png"]),
], ids=["--animate over --image", "--animate over an --out-dir sample", "explain nll --out over --image"])
def test_animations_and_pictures_never_replace_an_input_or_a_sample(command, args, ckpt, digit, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    head = ["explain", "nll"] if command == "explain" else [command, "-n", "1"]
    code, stderr, _ = run(*head, "-c", ckpt, "-i", "digit.png", *args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and ("is one of the input images" in lines[0] or "name of a sample" in lines[0])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not (tmp_path / "o").exists()
