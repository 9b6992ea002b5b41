"""`imagegen complete` and `imagegen upscale`: masks, exactness of kept pixels, outputs, bad input."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from imagegen import checkpoint, completion
from imagegen.cli import main
from imagegen.metrics import Consistency
from imagegen.models import build_model
from tests.helpers import tiny_mnist


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def write_png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("gated_pixelcnn", channels=1, image_size=8, hidden=4, num_layers=2)
    return checkpoint.save(model, tmp_path_factory.mktemp("c") / "plain", dataset="mnist")


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("gated_pixelcnn_sr", channels=1, image_size=8, upscale_factor=4, hidden=4,
                        num_layers=2, cond_features=4, cond_layers=1)
    return checkpoint.save(model, tmp_path_factory.mktemp("c") / "sr", dataset="mnist")


@pytest.fixture()
def digit(tmp_path):
    rng = np.random.default_rng(0)
    return write_png(tmp_path / "digit.png", rng.integers(0, 256, (8, 8)))


def test_keep_masks_and_which_kept_pixels_are_clamped():
    m = build_model("gated_pixelcnn", channels=3, image_size=4)
    rows = completion.keep_rows((3, 4, 4), 2)
    assert rows[:, :2].all() and not rows[:, 2:].any()
    assert torch.equal(completion.keep_fraction(m, (3, 4, 4), 0.5), rows)
    assert completion.clamped(m, rows) == 0
    hole = ~rows  # keep the bottom: every kept sub-pixel comes after generated ones
    assert completion.clamped(m, hole) == hole.sum()
    with pytest.raises(ValueError):
        completion.keep_rows((3, 4, 4), 5)


def test_complete_keeps_the_top_rows_exactly(plain, digit, tmp_path):
    out, out_dir = tmp_path / "grid.png", tmp_path / "each"
    code, output = run("complete", "--image", digit, "--keep-rows", 4, "--num", 3, "--seed", 0,
                       "--checkpoint", plain, "--out", out, "--out-dir", out_dir)
    assert code == 0, output
    original = np.asarray(Image.open(digit))
    files = sorted(out_dir.glob("digit_*.png"))
    assert [f.name for f in files] == ["digit_0.png", "digit_1.png", "digit_2.png"]
    completions = [np.asarray(Image.open(f)) for f in files]
    for c in completions:
        assert c.shape == (8, 8) and (c[:4] == original[:4]).all()
    assert any((c[4:] != original[4:]).any() for c in completions)
    with Image.open(out) as grid:  # original, masked input and 3 completions in one row
        assert grid.size[0] > 4 * grid.size[1]


def test_complete_with_a_mask_keeps_its_white_pixels(plain, digit, tmp_path):
    mask = np.zeros((8, 8))
    mask[:, :3] = 255  # left columns: kept pixels after generated ones, held by clamping
    mask_path = write_png(tmp_path / "mask.png", mask)
    result = subprocess.run([sys.executable, "-m", "imagegen.cli", "complete", "--image", str(digit),
                             "--mask", str(mask_path), "--num", "2", "--checkpoint", str(plain), "--out",
                             str(tmp_path / "g.png"), "--out-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"note: \d+ kept sub-pixels .* held fixed", result.stderr)
    original = np.asarray(Image.open(digit))
    for k in range(2):
        assert (np.asarray(Image.open(tmp_path / "d" / f"digit_{k}.png"))[:, :3] == original[:, :3]).all()


def test_complete_resizes_and_converts_colour_on_request(plain, tmp_path):
    rgb = write_png(tmp_path / "big.png", np.full((20, 30, 3), 200))
    code, output = run("complete", "--image", rgb, "--keep-rows", 2, "--checkpoint", plain,
                       "--out", tmp_path / "o.png")
    assert code == 2 and "30x20 pixels but the model takes 8x8" in output and "--resize" in output
    code, output = run("complete", "--image", rgb, "--keep-rows", 2, "--checkpoint", plain, "--resize",
                       "--out", tmp_path / "o.png", "--out-dir", tmp_path / "d", "--num", 1)
    assert code == 0, output
    assert (np.asarray(Image.open(tmp_path / "d" / "big_0.png"))[:2] == 200).all()


def test_upscale_writes_input_and_samples(upscaler, tmp_path):
    low = write_png(tmp_path / "small.png", np.arange(4).reshape(2, 2) * 80)
    code, output = run("upscale", "--image", low, "--num", 2, "--checkpoint", upscaler, "--seed", 1,
                       "--out", tmp_path / "up.png", "--out-dir", tmp_path / "d")
    assert code == 0, output
    for k in range(2):
        with Image.open(tmp_path / "d" / f"small_{k}.png") as im:
            assert im.size == (8, 8)
    with Image.open(tmp_path / "up.png") as grid:
        assert grid.size[0] > 2.5 * grid.size[1]  # input and 2 samples


def test_eval_of_an_upscaler_reports_superres_metrics(upscaler, tmp_path):
    data = tiny_mnist(tmp_path / "m.npz")
    code, output = run("eval", "--checkpoint", upscaler, "--data", data, "--sr-samples", 4)
    assert code == 0, output
    assert re.search(r"^conditional bits/dim [0-9.]+", output)
    assert re.search(r"PSNR [0-9.]+ dB  SSIM -?[0-9.]+  consistency [0-9.]+", output)


def test_consistency_is_mean_block_difference():
    metric = Consistency(2)
    samples = torch.tensor([[[[0, 2], [4, 6]]]])  # block mean 3
    metric.update(samples, torch.tensor([[[[5]]]]))
    assert float(metric.compute()) == pytest.approx(2.0)


@pytest.mark.parametrize("args, message", [
    (["complete", "--image", "MISSING", "--keep-rows", "2"], "no such image file"),
    (["complete", "--image", "CORRUPT", "--keep-rows", "2"], "cannot read this image"),
    (["complete", "--image", "DIGIT", "--keep-rows", "2", "--mask", "MASK"], "exactly one of"),
    (["complete", "--image", "DIGIT", "--mask", "MASK"], "mask"),
    (["complete", "--image", "DIGIT", "--keep-rows", "9"], "more than the model's 8 rows"),
    (["complete", "--image", "DIGIT", "--keep-rows", "2", "--checkpoint", "SR"], "super-resolution"),
    (["upscale", "--image", "DIGIT", "--checkpoint", "SR"], "8x8 pixels but the model takes 2x2"),
    (["upscale", "--image", "DIGIT", "--checkpoint", "PLAIN"], "not a super-resolution model"),
    (["sample", "--checkpoint", "SR"], "super-resolution checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, plain, upscaler, digit, tmp_path):
    files = {"MISSING": tmp_path / "nope.png", "CORRUPT": tmp_path / "bad.png", "DIGIT": digit,
             "MASK": write_png(tmp_path / "mask.png", np.zeros((5, 5))), "SR": upscaler, "PLAIN": plain}
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = [str(files.get(a, a)) for a in args]
    if "--checkpoint" not in args:
        args += ["--checkpoint", str(plain)]
    result = subprocess.run([sys.executable, "-m", "imagegen.cli", *args, "--out", str(tmp_path / "o.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name, hparams", [
    ("transformer_2d", dict(query_shape=(2, 4), memory_flange=(1, 2), hidden=8, num_heads=2)),
    ("row_lstm", dict(hidden=4, num_layers=1)),
    ("diagonal_bilstm", dict(hidden=4, num_layers=1)),
])
def test_completion_follows_each_family_generation_order(name, hparams):
    torch.manual_seed(0)
    m = build_model(name, channels=1, image_size=(4, 8), levels=8, **hparams)
    keep = completion.keep_fraction(m, (1, 4, 8), 0.5)
    assert completion.clamped(m, keep) == 0 and keep.sum() == 16  # the first half in generation order
    image = torch.randint(0, 8, (1, 4, 8))
    out = completion.complete(m, image, keep, 2, seed=0)
    assert torch.equal(out[:, keep], image[keep].expand(2, -1).to(torch.uint8))
    if name == "transformer_2d":  # blocks of 2 rows x 4 columns: the first quarter is the top-left block
        first_block = torch.zeros(1, 4, 8, dtype=torch.bool)
        first_block[:, :2, :4] = True
        assert torch.equal(completion.keep_fraction(m, (1, 4, 8), 0.25), first_block)
        assert completion.clamped(m, completion.keep_rows((1, 4, 8), 1)) > 0  # row 0 right half comes late
