"""The imagegen command: sample, eval, train, and one-line errors with exit code 2."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from imagegen import checkpoint
from imagegen.cli import main
from imagegen.data import load_dataset
from imagegen.metrics import bits_per_dim
from imagegen.models import build_model
from tests.helpers import tiny_mnist


@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model("gated_pixelcnn", channels=1, image_size=8, levels=256, num_classes=10,
                        hidden=4, num_layers=2)
    return checkpoint.save(model, tmp_path / "ckpt", dataset="mnist")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_sample_writes_a_png_grid(ckpt, tmp_path):
    out = tmp_path / "grid.png"
    code, output = run("sample", "--checkpoint", ckpt, "--num", 4, "--seed", 1, "--label", 3, "--out", out)
    assert code == 0, output
    with Image.open(out) as im:
        assert im.mode == "L" and im.size[0] == im.size[1] > 2 * 8
    again = tmp_path / "again.png"
    run("sample", "--checkpoint", ckpt, "--num", 4, "--seed", 1, "--label", 3, "--out", again)
    assert out.read_bytes() == again.read_bytes()


def test_sample_in_bf16(ckpt, tmp_path, monkeypatch):
    seen = []
    real = checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    out = tmp_path / "grid.png"
    code, output = run("sample", "--checkpoint", ckpt, "--num", 2, "--label", 3, "--precision", "bf16",
                       "--out", out)
    assert code == 0, output
    assert out.exists() and next(seen[0].parameters()).dtype == torch.bfloat16
    code, output = run("sample", "--checkpoint", ckpt, "--precision", "fp8", "--out", out)
    assert code == 2 and "fp8" in output


def test_eval_prints_the_library_bits_per_dim(ckpt, tmp_path):
    data = tiny_mnist(tmp_path / "m.npz")
    for split in ("val", "test"):
        code, output = run("eval", "--checkpoint", ckpt, "--data", data, "--split", split)
        assert code == 0, output
        assert output.startswith("class-conditional bits/dim ")  # the fixture is class-conditional
        printed = float(re.search(r"bits/dim ([0-9.]+)", output).group(1))
        d = load_dataset("mnist", data, split)
        assert f"mnist {split}, {len(d)} images" in output
        expected = bits_per_dim(checkpoint.load(ckpt), d.images, d.labels)
        assert abs(printed - expected) < 1e-4


def test_eval_says_conditional_only_for_conditional_models(tmp_path):
    torch.manual_seed(0)
    plain = checkpoint.save(build_model("gated_pixelcnn", channels=1, image_size=8, hidden=4, num_layers=2),
                            tmp_path / "plain", dataset="mnist")
    code, output = run("eval", "--checkpoint", plain, "--data", tiny_mnist(tmp_path / "m.npz"))
    assert code == 0 and output.startswith("bits/dim "), output


def test_train_then_resume_from_the_cli(tmp_path):
    data = tiny_mnist(tmp_path / "m.npz")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {name: pixelcnn, hidden: 4, num_layers: 1}\n"
                   "train: {batch_size: 4, eval_every: 2, eval_images: 4, sample_every: 0,"
                   " checkpoint_every: 2}\n")
    run_dir = tmp_path / "run"
    args = ["train", cfg, "--data", data, "--output-dir", run_dir, "--set", "data.name=mnist"]
    code, output = run(*args, "--max-steps", 2)
    assert code == 0 and "eval bits/dim" in output, output
    code, output = run(*args, "--max-steps", 4)
    assert code == 2 and "--resume" in output
    code, output = run(*args, "--max-steps", 4, "--resume")
    assert code == 0 and "resuming at step 2" in output, output
    assert checkpoint.read_info(run_dir / "model")["step"] == 4


def test_a_shipped_config_and_eval_find_the_data_in_the_data_root(ckpt, tmp_path, monkeypatch):
    (tmp_path / "root" / "mnist").mkdir(parents=True)
    tiny_mnist(tmp_path / "root" / "mnist" / "mnist.npz")
    monkeypatch.setenv("IMAGEGEN_DATA", str(tmp_path / "root"))
    code, output = run("eval", "--checkpoint", ckpt, "--split", "test")
    assert code == 0 and "mnist test, 16 images" in output, output
    config = Path(__file__).parent.parent / "configs" / "mnist_pixelcnn.yaml"  # as shipped, plus a length
    code, output = run("train", config, "--max-steps", 1, "--output-dir", tmp_path / "run")
    assert code == 0 and "done: step 1" in output, output
    monkeypatch.setenv("IMAGEGEN_DATA", str(tmp_path / "empty"))  # no data there: say where it belongs
    code, output = run("eval", "--checkpoint", ckpt)
    assert code == 2 and f"mnist not found in {tmp_path / 'empty' / 'mnist'}" in output, output
    assert "--data" in output and "--download" in output and len(output.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["sample", "--checkpoint", "/nonexistent/ckpt"], "no checkpoint at /nonexistent/ckpt"),
    (["sample", "--label", "12"], "out of range"),
    (["eval", "--data", "/nonexistent/mnist.npz"], "/nonexistent/mnist.npz"),
    (["train", "/nonexistent.yaml"], "config file not found"),
    (["train", "CFG", "--set", "train.lerning_rate=1"], "unknown key train.lerning_rate"),
    (["train", "CFG", "--set", "model.hiden=3"], "hiden"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, ckpt, tmp_path):
    cfg = tmp_path / "c.yaml"
    data = tiny_mnist(tmp_path / "m.npz")
    cfg.write_text(f"model: {{name: gated_pixelcnn}}\ndata: {{name: mnist, path: {data}}}\n")
    args = [str(cfg) if a == "CFG" else a for a in args]
    if args[0] in ("sample", "eval") and "--checkpoint" not in args:
        args += ["--checkpoint", str(ckpt)]
    result = subprocess.run([sys.executable, "-m", "imagegen.cli", *args, "--output-dir", str(tmp_path / "r")]
                            if args[0] == "train" else [sys.executable, "-m", "imagegen.cli", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
