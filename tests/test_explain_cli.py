"""`imagegen explain nll|attention|receptive-field` and `--animate` from the command line."""

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageSequence

from imagegen import checkpoint
from imagegen.cli import main
from imagegen.imageio import read_image
from imagegen.metrics import bits_per_dim
from imagegen.models import build_model

needs_matplotlib = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("matplotlib"), reason='needs pip install "imagegen[viz]"')


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def save(tmp_path, name, **hparams):
    torch.manual_seed(0)
    model = build_model(name, channels=1, image_size=8, levels=256, **hparams)
    return checkpoint.save(model, tmp_path / name)


@pytest.fixture()
def pixelcnn(tmp_path):
    return save(tmp_path, "gated_pixelcnn", hidden=4, num_layers=2)


@pytest.fixture()
def transformer(tmp_path):
    return save(tmp_path, "transformer_2d", hidden=16, num_layers=2, query_shape=(2, 4), memory_flange=(1, 2))


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "digit.png"
    pixels = np.zeros((8, 8), np.uint8)
    pixels[2:6, 3:5] = 200
    Image.fromarray(pixels).save(path)
    return path


def frames(path):
    with Image.open(path) as im:
        return [np.array(frame.convert("L")) for frame in ImageSequence.Iterator(im)]


def test_nll_json_is_the_bits_of_every_sub_pixel(pixelcnn, image):
    code, output = run("explain", "nll", "--checkpoint", pixelcnn, "--image", image, "--json")
    assert code == 0, output
    record = json.loads(output)
    bits = torch.tensor(record["bits"])
    assert bits.shape == (1, 8, 8) and record["shape"] == [1, 8, 8]
    expected = bits_per_dim(checkpoint.load(pixelcnn), read_image(image, 1, (8, 8))[None])
    assert abs(record["bits_per_dim"] - expected) < 1e-9
    assert abs(float(bits.mean()) - expected) < 1e-5  # the per-sub-pixel numbers are rounded to 1e-6


@needs_matplotlib
def test_nll_picture(pixelcnn, image, tmp_path):
    out = tmp_path / "nll.png"
    code, output = run("explain", "nll", "-c", pixelcnn, "--image", image, "--out", out)
    assert code == 0, output
    assert "bits/dim" in output and Image.open(out).size[0] > 400


@needs_matplotlib
def test_attention_picture_and_its_mistakes(transformer, pixelcnn, image, tmp_path):
    out = tmp_path / "attention.png"
    query = ["explain", "attention", "-c", transformer, "--image", image, "--pixel", "5,3", "--out", out]
    code, output = run(*query)
    assert code == 0, output
    assert out.exists()
    code, output = run(*query, "--head", "all", "--layer", "1")
    assert code == 0, output
    for args, message in [(["-c", pixelcnn, "--pixel", "5,3"], "has no attention"),
                          (["--pixel", "8,0"], "--pixel: pixel row 8"),
                          (["--pixel", "5"], "is not ROW,COL"),
                          (["--pixel", "1,1", "--layer", "2"], "--layer 2: choose all or 0..1"),
                          (["--pixel", "1,1", "--head", "x"], "--head x")]:
        checkpoint_first = [] if "-c" in args else ["-c", transformer]
        code, output = run("explain", "attention", "--image", image, "--out", tmp_path / "bad.png",
                           *checkpoint_first, *args)
        assert code == 2 and message in output and output.count("\n") == 1, output
        assert not (tmp_path / "bad.png").exists()


@needs_matplotlib
@pytest.mark.parametrize("given", [True, False])
@pytest.mark.parametrize("model", ["pixelcnn", "transformer"])
def test_receptive_field_picture(model, image, tmp_path, given, request):
    out = tmp_path / "field.png"
    inputs = ["--image", image, "--image", image] if given else ["--num", 2]
    code, output = run("explain", "receptive-field", "-c", request.getfixturevalue(model), "--pixel", "4,4",
                       *inputs, "--out", out)
    assert code == 0, output
    assert ("2 image(s)" if given else "2 samples of the model") in output and out.exists()


def test_without_matplotlib_one_line_says_how_to_install_it(pixelcnn, image, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    for command in (["nll", "--image", image], ["receptive-field", "--pixel", "1,1"],
                    ["attention", "--image", image, "--pixel", "1,1"]):
        code, output = run("explain", *command, "-c", pixelcnn, "--out", tmp_path / "x.png")
        assert code == 2 and output.count("\n") == 1, output
        assert output.startswith("error: ") and 'pip install "imagegen[viz]"' in output
        assert not (tmp_path / "x.png").exists()
    code, output = run("explain", "nll", "--image", image, "-c", pixelcnn, "--json")  # numbers need no plots
    assert code == 0 and json.loads(output)["shape"] == [1, 8, 8]


def test_sample_animation_ends_with_the_png(pixelcnn, tmp_path):
    out, gif = tmp_path / "grid.png", tmp_path / "grid.gif"
    code, output = run("sample", "-c", pixelcnn, "--num", 4, "--seed", 3, "--out", out, "--animate", gif)
    assert code == 0, output
    shown = frames(gif)
    assert len(shown) > 2 and (shown[-1] == np.array(Image.open(out))).all()
    assert not (shown[0] == shown[-1]).all()
    code, output = run("sample", "-c", pixelcnn, "--num", 4, "--seed", 3, "--out", tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == out.read_bytes()  # animating changes no sample


def test_complete_and_upscale_animations_end_with_the_png(pixelcnn, image, tmp_path):
    out, gif = tmp_path / "done.png", tmp_path / "done.gif"
    code, output = run("complete", "-c", pixelcnn, "--image", image, "--image", image, "--keep-rows", 3,
                       "--num", 2, "--out", out, "--animate", gif, "--frame-every", 3)
    assert code == 0, output
    shown = frames(gif)
    assert len(shown) >= 2 * 64 // 3 and (shown[-1] == np.array(Image.open(out))).all()
    upscaler = save(tmp_path, "gated_pixelcnn_sr", hidden=4, num_layers=2, upscale_factor=2)
    small = tmp_path / "small.png"
    Image.open(image).resize((4, 4)).save(small)
    code, output = run("upscale", "-c", upscaler, "--image", small, "--num", 2, "--out", out,
                       "--animate", gif)
    assert code == 0, output
    assert (frames(gif)[-1] == np.array(Image.open(out))).all()


def test_animation_mistakes_are_caught_before_sampling(pixelcnn, tmp_path):
    out = tmp_path / "grid.png"
    for animate, message in [(tmp_path / "grid.mp4", "name the animation .gif"), (out, "is also --out")]:
        code, output = run("sample", "-c", pixelcnn, "--num", 1, "--out", out, "--animate", animate)
        assert code == 2 and message in output and output.count("\n") == 1, output
        assert not out.exists() and not animate.exists()
